"""Temporaries carry their writer's host and pid, and a rerun removes those a killed run left (issue 14.6):
the naming, the sweep's rules (dead pids of this host; other hosts only for a run holding its folder alone;
never a live process's, never another name), and real ``kill -9`` runs of ``sync`` and ``sync --timeline``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.media.atomic import TEMP_NAME, host_tag, sweep_temps, temp_path, temp_prefix
from tests.conftest import REPO


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_names_say_whose_they_are(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    prefix = temp_prefix(out)
    assert prefix == f".o.~{host_tag()}-{os.getpid()}-" and temp_prefix(out, "prep").startswith(".o.prep.~")
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path, prefix=prefix))
    for name in (folder.name, temp_path(out).name, temp_path(tmp_path / "k.json", keep_suffix=False).name):
        match = TEMP_NAME.match(name)
        assert match is not None and int(match["pid"]) == os.getpid(), name
    assert temp_path(out).suffix == ".mp4" and temp_path(tmp_path / "k.json", keep_suffix=False).suffix == ".part"
    for name in (".o.mp4", ".hidden", ".o.1234.part", "o.~abcd-12-abcdefgh", ".o.~abcd-12-abc", ".o.~abcdef-12-abcdefgh"):
        assert TEMP_NAME.match(name) is None, name
    assert TEMP_NAME.match(".o.~abcd-12-abcdefgh")["host"] == "abcd"  # (an earlier version's: another host's)


def test_the_host_tag_tells_apart_hosts_whose_names_hashed_alike_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporaries name their host by 4 hex digits of its name: node052 and node112 of a farm were alike, so each
    swept the other's live temporaries on shared storage as its own dead ones. Now 8, of its name and pid space."""
    import socket

    from lipsyncctl.media import atomic

    tags = {}
    for name in ("node052", "node112"):
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        atomic.host_tag.cache_clear()
        tags[name] = atomic.host_tag()
    atomic.host_tag.cache_clear()
    monkeypatch.undo()
    assert tags["node052"] != tags["node112"] and all(len(t) == 8 for t in tags.values())
    import hashlib  # (the old tag: 4 digits of the name alone, alike for these two)

    assert hashlib.sha1(b"node052").hexdigest()[:4] == hashlib.sha1(b"node112").hexdigest()[:4]


def test_sweep_removes_only_what_no_live_process_owns(tmp_path: Path) -> None:
    dead, me, host = _dead_pid(), os.getpid(), host_tag()
    other = "0000" if host != "0000" else "ffff"
    shots = tmp_path / "de" / "shots"
    shots.mkdir(parents=True)
    made = {
        "dead_dir": tmp_path / f".o.~{host}-{dead}-abcd_123",
        "dead_file": shots / f".001_A1.~{host}-{dead}-0f0f0f0f.part.mp4",
        "live_dir": shots / f".002_B1.~{host}-{me}-abcdefgh",
        "other_host": shots / f".003_C1.~{other}-{dead}-abcdefgh",
        "other_stem": tmp_path / f".p.~{host}-{dead}-abcdefgh",
    }
    for key, path in made.items():
        if key.endswith("file"):
            path.write_bytes(b"half")
        else:
            (path / "inner").mkdir(parents=True)
    keep = [tmp_path / ".o.notes", shots / "001_A1.mp4", tmp_path / "o.mp4"]
    for path in keep:
        path.write_bytes(b"mine")

    # another output whose name starts alike (o.v2.mp4) is not o.mp4's; o's record's (o.run.yaml) is
    made["o_v2"] = tmp_path / f".o.v2.~{host}-{dead}-abcdefgh"
    made["o_record"] = tmp_path / f".o.run.~{host}-{dead}-0f0f0f0f.part.yaml"
    made["o_v2"].mkdir()
    made["o_record"].write_bytes(b"half")
    assert set(sweep_temps(tmp_path, stem="o")) == {made["dead_dir"], made["o_record"]}  # one output's, here only
    assert sweep_temps(tmp_path, stem="o.v2") == [made["o_v2"]]
    removed = set(sweep_temps(tmp_path, depth=2))  # a shard: dead pids of this host, in the subfolders too
    assert removed == {made["dead_file"], made["other_stem"]}
    assert set(sweep_temps(tmp_path, depth=2, other_hosts=True)) == {made["other_host"]}  # a run alone
    assert made["live_dir"].is_dir() and all(p.is_file() for p in keep)  # a live run's, and other names: kept


@pytest.fixture
def clip_media(tmp_path: Path) -> dict[str, Path]:
    from tests.sync_media import sample_frames, write_clip, write_wav

    return {"video": write_clip(tmp_path / "v.mkv", sample_frames(25, scale=0.5), Fraction(25)),
            "audio": write_wav(tmp_path / "a.wav", 1.0)}


def _kill_when(proc: subprocess.Popen[bytes], ready, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL ``proc`` as soon as ``ready()`` is true (fail if it ends or times out first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run never reached the point to kill it"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # opt-in (-m slow): 35-65 s; keeps the default suite under 10 min
def test_rerun_after_kill_9_removes_the_dead_runs_temporaries(clip_media, models_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``sync`` killed while its hidden folder is beside OUT: the rerun succeeds and leaves only its outputs."""
    from lipsyncctl.cli.main import main

    out = tmp_path / "out" / "o.mp4"
    args = ["sync", "--video", str(clip_media["video"]), "--audio", str(clip_media["audio"]), "-o", str(out),
            "--preset", "tiny", "--length-policy", "cut"]
    proc = subprocess.Popen([sys.executable, "-m", "lipsyncctl", "-q", *args], cwd=REPO,
                            env={**os.environ, "LIPSYNCCTL_MODELS": str(models_dir)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _kill_when(proc, lambda: out.parent.is_dir() and any(p.name.startswith(".o.") for p in out.parent.iterdir()))
    left = [p.name for p in out.parent.iterdir()]
    assert left and all(TEMP_NAME.match(n) and f"-{proc.pid}-" in n for n in left), left  # the dead run's
    assert main(["-q", *args]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.mp4", "o.run.yaml"]


@pytest.mark.slow  # opt-in (-m slow): keeps the default suite under 10 min
def test_timeline_rerun_removes_temporaries_in_shots_and_beside(models_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``sync --timeline`` killed while rendering a shot: the rerun removes the dead run's hidden folder in
    OUT/.lipsyncctl/renders/ (and any other it left under OUT, such as a version being delivered) and says so."""
    from lipsyncctl.cli.main import main
    from tests.conftest import shared_path
    from tests.unit.test_timeline_backends import edit

    out = tmp_path / "out"
    args = ["sync", "--timeline", str(edit(tmp_path)), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
            "-o", str(out), "--preset", "tiny", "--steps", "1", "--handles", "1", "--set", "faces.detect_every=3"]
    proc = subprocess.Popen([sys.executable, "-m", "lipsyncctl", "-q", *args], cwd=REPO,
                            env={**os.environ, "LIPSYNCCTL_MODELS": str(models_dir)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shots = out / ".lipsyncctl" / "renders"
    _kill_when(proc, lambda: shots.is_dir() and any(p.name.startswith(".") for p in shots.iterdir()))
    assert any(f"-{proc.pid}-" in p.name for p in shots.iterdir())
    stray = out / "de" / f".v001.~{host_tag()}-{proc.pid}-abcdefgh"  # as a killed delivery would leave one
    stray.mkdir(parents=True)
    capsys.readouterr()
    assert main(["--json", *args]) == 0
    err = capsys.readouterr().err
    assert "temporary file(s)/folder(s) left in" in err
    assert not [p for p in out.rglob(".*") if TEMP_NAME.match(p.name)]
    assert not list(shots.glob(".*")) and not stray.exists()
