"""`lipsyncctl prune OUT` (:mod:`lipsyncctl.timeline.prune`) on a real `sync --timeline` output folder: three runs
of a two-shot edit (tiny preset), the second and third with another seed than the first, so ``v001``'s renders
are used by no later version. Pruning keeps the newest versions and current's, leaves a version alone when it
holds a file its report does not list, frees exactly the bytes whose last link goes (measured on the disk),
removes unused renders and their job records only with ``--renders`` (a rerun then reuses what stayed), refuses
``--renders`` where a version holds copies, refuses a folder a run holds (exit 6), and a dry run removes
nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lipsyncctl import api
from lipsyncctl.cli.main import main
from lipsyncctl.errors import UsageError
from lipsyncctl.media.atomic import TEMP_NAME
from tests.conftest import shared_path
from tests.timeline_media import clip, write_edit, write_sources

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "0", "--set", "faces.detect_every=3"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """The output folder of three runs (seed 1, then seed 2 twice), copied by :func:`out` for each test."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("prune")
    write_sources(root, shared_path("fixtures", "demo1_video.mp4"))
    edit = write_edit(root / "edit.otio", [clip("A1", "cam_a.mkv", 4, 6, available=(0, 40)),
                                           clip("A2", "cam_a.mkv", 20, 6, available=(0, 40))], name="pr")
    args = ["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
            "-o", str(root / "out"), *BASE]
    counts = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        for seed in ("1", "2", "2"):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert main(["--json", "-q", "sync", *args, "--seed", seed]) == 0
            counts.append(json.loads(buf.getvalue())["counts"]["rendered"])
    assert counts == [2, 2, 0]  # seed 2 renders both shots again; the third run reuses them
    return {"root": root, "args": args}


@pytest.fixture
def out(made: dict, tmp_path: Path) -> Path:  # type: ignore[type-arg]
    """A fresh copy of the three-run folder (hard links and the current symlink kept, as cp -a does; the job
    records name the copy's renders)."""
    dest = tmp_path / "out"
    assert os.system(f"cp -a '{made['root'] / 'out'}' '{dest}'") == 0
    for record in (dest / ".lipsyncctl" / "jobs").glob("*.json"):  # as if the runs had written here
        record.write_text(record.read_text().replace(str(made["root"] / "out"), str(dest)))
    return dest


def _disk(folder: Path) -> int:
    """Bytes of the distinct files under ``folder`` (each inode once)."""
    seen: dict[tuple[int, int], int] = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            seen[st.st_dev, st.st_ino] = st.st_size
    return sum(seen.values())


def _tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.lstat().st_ino) for p in folder.rglob("*"))


def test_the_newest_version_stays_and_exactly_the_freed_bytes_go(out: Path) -> None:
    before, tree = _disk(out), _tree(out)
    dry = api.prune(out, dry_run=True)
    assert _tree(out) == tree  # nothing removed
    real = api.prune(out)
    assert [(lang.language, lang.kept, lang.removed, lang.left) for lang in real.languages] == \
        [("de", ["v003"], ["v001", "v002"], {})]
    assert real.to_dict() == {**dry.to_dict(), "dry_run": False}
    assert sorted(p.name for p in (out / "de").iterdir()) == ["current", "v003"]
    assert os.readlink(out / "de" / "current") == "v003"
    # without --renders the cache keeps seed 1's renders: only the versions' own files (reports, timelines) go
    assert real.renders == [] and len(list((out / ".lipsyncctl" / "renders").iterdir())) == 8  # 4 keys: .mp4, .run.yaml
    assert 0 < real.freed_bytes == before - _disk(out)


def test_renders_no_kept_version_links_go_with_their_records_and_a_rerun_reuses_the_rest(
        out: Path, made: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    records = out / ".lipsyncctl" / "jobs"
    keys = sorted(p.stem for p in records.glob("*.json"))
    before = _disk(out)
    res = api.prune(out, keep=1, renders=True)
    assert len(res.renders) == 4 and len(res.records) == 2  # seed 1's two renders with their run.yaml
    assert sorted(res.records) == sorted({r.split(".")[0] for r in res.renders})
    assert sorted(p.stem for p in records.glob("*.json")) == sorted(set(keys) - set(res.records))
    cache = sorted((out / ".lipsyncctl" / "renders").glob("*.mp4"))
    assert len(cache) == len(list((out / "de" / "v003" / "shots").iterdir())) == 2
    for path in cache:  # what stays is what v003 links, with its sidecar
        assert path.stat().st_nlink == 2 and path.with_suffix(".run.yaml").is_file()
    assert res.freed_bytes == before - _disk(out)
    # the same command again: both shots reused from the cache, a new version beside v003
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(made["root"] / "models"))
    args = [a if a != str(made["root"] / "out") else str(out) for a in made["args"]]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["--json", "-q", "sync", *args, "--seed", "2"]) == 0
    assert json.loads(buf.getvalue())["counts"]["rendered"] == 0
    assert sorted(p.name for p in (out / "de").iterdir()) == ["current", "v003", "v004"]


def test_current_and_a_version_with_a_foreign_file_stay(out: Path) -> None:
    os.remove(out / "de" / "current")
    os.symlink("v001", out / "de" / "current")  # a user pointed current back at v001
    (out / "de" / "v002" / "notes.txt").write_text("client feedback")
    res = api.prune(out, keep=1, renders=True)
    (lang,) = res.languages
    assert lang.kept == ["v001", "v003"] and lang.removed == []
    assert list(lang.left) == ["v002"] and "notes.txt" in lang.left["v002"]
    assert (out / "de" / "v002" / "notes.txt").read_text() == "client feedback"
    assert res.renders == []  # every render is linked by a version that stays


def test_renders_are_refused_where_a_kept_version_holds_copies(out: Path) -> None:
    shot = next((out / "de" / "v003" / "shots").iterdir())
    copy = shot.with_name("copy.tmp")
    shutil.copy2(shot, copy)
    os.replace(copy, shot)  # as a file system without hard links leaves it
    tree = _tree(out)
    with pytest.raises(UsageError, match="copies, not links"):
        api.prune(out, renders=True)
    assert _tree(out) == tree
    assert api.prune(out).languages[0].removed == ["v001", "v002"]  # the versions alone still can


def test_an_interrupted_removal_leaves_a_hidden_temporary_not_a_half_version(out: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.timeline import prune

    real, calls = prune.shutil.rmtree, []

    def interrupted(path: str | Path) -> None:  # the second version's removal is interrupted
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(path)

    monkeypatch.setattr(prune.shutil, "rmtree", interrupted)
    from lipsyncctl.errors import Interrupted

    with pytest.raises(Interrupted) as err:  # (exit 130) saying what went: --json's `partial`
        api.prune(out)
    assert err.value.exit_code == 130 and err.value.message == "prune interrupted: 1 of 2 version(s) removed (de/v001)"
    assert err.value.partial == {"removed": [str(out / "de" / "v001")]}
    names = sorted(p.name for p in (out / "de").iterdir())
    assert "v001" not in names and "v002" not in names and "v003" in names
    (hidden,) = [n for n in names if n.startswith(".")]
    assert TEMP_NAME.match(hidden)  # swept by the next run once this process is gone


def test_cli_codes_table_and_json(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl.runner.lock import FolderLock

    assert main(["prune", str(tmp_path / "nowhere")]) == 5
    (tmp_path / "empty").mkdir()
    assert main(["prune", str(tmp_path / "empty")]) == 2
    assert "not an output folder of `sync --timeline`" in capsys.readouterr().err
    assert main(["prune", str(out), "--keep", "0"]) == 2
    with FolderLock(out, command="a run"):
        assert main(["prune", str(out)]) == 6
    capsys.readouterr()
    first = tmp_path / "first"  # a first run still writing: only its lock is there yet, busy (it was exit 2)
    first.mkdir()
    with FolderLock(first, command="a run"):
        assert main(["prune", str(first)]) == 6
    assert main(["prune", str(first), "--wait"]) == 2  # it ended without a version: said once it is free
    assert "not an output folder" in capsys.readouterr().err
    # a dry run writes nothing: a killed run's lock file and temporary stay as they were (the next run's to sweep);
    # beside a run (a shard's shared hold too) it is busy, as a run
    stale = out / ".lipsyncctl" / "run.lock"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text('{"pid": 999999, "host": "gone", "started": "2026-12-01T00:00:00", "command": "killed"}\n')
    from lipsyncctl.media.atomic import TEMP_NAME, host_tag

    left = out / "de" / f".v009.~{host_tag()}-999999-abcdef01"  # a temporary of a process that is gone
    assert TEMP_NAME.match(left.name)
    left.mkdir()
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*")), stale.read_bytes()
    assert main(["prune", str(out), "--dry-run", "--keep", "2"]) == 0
    text = capsys.readouterr().out
    assert "would remove" in text and "v001" in text and "would free" in text
    assert (sorted(str(p.relative_to(out)) for p in out.rglob("*")), stale.read_bytes()) == before
    left.rmdir()
    with FolderLock(out, shard=(0, 2), command="a shard"):
        assert main(["prune", str(out), "--dry-run"]) == 6
    assert "a shard" in capsys.readouterr().err
    assert main(["--json", "prune", str(out), "--renders"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["languages"][0]["removed"] == ["v001", "v002"] and len(doc["renders"]) == 4
