"""`lipsyncctl sync` through the CLI: a short cut of the demo clip, and bad input -> exit codes, no output."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from lipsyncctl.cli.main import main
from lipsyncctl.media.probe import probe
from tests.conftest import shared_path
from tests.sync_media import audio_info, decode_rgb, sample_frames, video_rate, write_clip, write_wav


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_demo1_short_cut_json(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A 0.32 s cut (8 frames, 1080x1920 HEVC) of the official demo with its audio, policy cut."""
    video = shared_path("fixtures", "demo1_video.mp4")
    audio = shared_path("fixtures", "demo1_audio.wav")
    out = tmp_path / "demo1_sync.mkv"
    rc, stdout, err = _run(capsys, "--json", "sync", "--video", os.path.relpath(video), "--audio", str(audio), "-o", str(out),
                           "--preset", "tiny", "--set", "inference.guidance=1.0", "--length-policy", "cut",
                           "--codec", "ffv1", "--start", "2.0", "--end", "2.32")
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["frames"] == 8 and result["fps"] == "25/1"
    assert result["width"] == 1080 and result["height"] == 1920
    assert result["faces_found"] == 8 and result["no_face_frames"] == 0
    assert err.count("NOT lip-synced") == 1  # said loudly on stderr, once (at the start, not again in the summary)
    assert len(decode_rgb(out)) == 8 and video_rate(out) == Fraction(25)
    rate, channels, samples = audio_info(out)  # the dub at its own rate/channels, as long as the picture
    assert (rate, channels) == (probe(audio).audio[0].sample_rate, probe(audio).audio[0].channels)
    assert abs(samples / rate - 8 / 25) < 1024 / rate + 1e-3  # AAC frame padding
    made = yaml.safe_load((tmp_path / "demo1_sync.run.yaml").read_text(encoding="utf-8"))
    assert made["inputs"]["video"] == os.path.abspath(video)  # given relative: recorded as from any folder
    assert set(result["stage_seconds"]) >= {"faces", "denoise", "encode"}


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    frames = sample_frames(3, scale=0.75)
    return {
        "video": write_clip(tmp_path / "v.mkv", frames, Fraction(25)),
        "audio": write_wav(tmp_path / "a.wav", 0.2),
        "grey": write_clip(tmp_path / "grey.mkv", [np.full((96, 64, 3), 80, np.uint8)] * 3, Fraction(25)),
        "corrupt": _corrupt(tmp_path / "corrupt.mp4"),
    }


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing video", 5),
        ("missing audio", 5),
        ("audio-only as video", 5),
        ("video-only as audio", 5),
        ("corrupt video", 5),
        ("corrupt audio", 5),
        ("no face anywhere", 5),
        ("unknown preset key", 3),
        ("unknown preset", 3),
        ("output is the input", 2),  # a usage error, like every command (not bad media)
        ("cuda graphs on the cpu", 4),  # a missing device, said before any render
    ],
)
def test_bad_input_exit_codes(case, code, media, models_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "out" / "o.mkv"
    video, audio, preset, extra = str(media["video"]), str(media["audio"]), "tiny", []
    if case == "missing video":
        video = str(tmp_path / "nope.mp4")
    elif case == "missing audio":
        audio = str(tmp_path / "nope.wav")
    elif case == "audio-only as video":
        video = str(media["audio"])
    elif case == "video-only as audio":
        audio = str(media["video"])
    elif case == "corrupt video":
        video = str(media["corrupt"])
    elif case == "corrupt audio":
        audio = str(media["corrupt"])
    elif case == "no face anywhere":
        video = str(media["grey"])
    elif case == "unknown preset key":
        extra = ["--set", "inference.stepz=3"]
    elif case == "unknown preset":
        preset = "no-such-preset"
    elif case == "output is the input":
        out = media["video"]
    elif case == "cuda graphs on the cpu":
        extra = ["--set", "inference.cuda_graphs=true"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, stdout, err = _run(capsys, "sync", "--video", video, "--audio", audio, "-o", str(out),
                           "--preset", preset, *extra)
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    after = sorted(p.name for p in tmp_path.rglob("*") if "models" not in p.parts)
    assert [n for n in after if n not in before and n != "models"] in ([], ["out"]), after
    if out.parent.exists() and out != media["video"]:
        assert list(out.parent.iterdir()) == []


def test_end_past_the_clip_warns(media, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """--end beyond the clip is clamped to its duration and says so (in --json warnings and on stderr)."""
    out = tmp_path / "o.mkv"
    rc, stdout, err = _run(capsys, "--json", "sync", "--video", str(media["video"]), "--audio",
                           str(media["audio"]), "-o", str(out), "--preset", "tiny", "--set",
                           "inference.guidance=1.0", "--length-policy", "cut", "--codec", "ffv1", "--end", "7.5")
    assert rc == 0, err
    result = json.loads(stdout)
    clamped = [w for w in result["warnings"] if "--end 7.5" in w]
    assert len(clamped) == 1 and "clamped to the clip's duration" in clamped[0] and "0.120 s" in clamped[0]
    assert result["frames"] == 3 and "clamped to the clip's duration" in err


def test_end_overridden_by_the_audio_warns(media, models_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]):
    """--end selects 2 frames, the audio lasts 5: the default policy (pingpong) makes the output as long as the
    audio, overriding --end; that is said, on stderr and in --json warnings (agreement within a frame says
    nothing: tests/unit/test_sync_plan.py)."""
    rc, stdout, err = _run(capsys, "--json", "sync", "--video", str(media["video"]), "--audio",
                           str(media["audio"]), "-o", str(tmp_path / "o.mkv"), "--preset", "tiny", "--set",
                           "inference.guidance=1.0", "--codec", "ffv1", "--end", "0.08")
    assert rc == 0, err
    result = json.loads(stdout)
    (w,) = [w for w in result["warnings"] if "the audio" in w]
    assert w == ("the audio (0.200 s) is longer than the picture selected by --end (0.080 s, 2 frames): the picture "
                 "plays forward then backward to fill it (length policy pingpong); the output has 5 frames (0.200 s)")
    assert result["frames"] == 5 and "selected by --end" in err
    # the record counts the faces of the output's frames, as --json does (it counted those the pass read too)
    import yaml

    record = yaml.safe_load((tmp_path / "o.run.yaml").read_text())
    assert record["faces"]["found"] == result["faces_found"] <= result["frames"]


class _FullDisk:
    """A PyAV output container whose file system fills up after ``room`` packets: ``mux`` then raises what
    PyAV raises on a full disk (``av.error.OSError``, errno ENOSPC)."""

    def __init__(self, container, room: int) -> None:  # type: ignore[no-untyped-def]
        self._container, self._room = container, room

    def mux(self, packet) -> None:  # type: ignore[no-untyped-def]
        import errno

        import av

        if self._room <= 0:
            raise av.error.OSError(errno.ENOSPC, "No space left on device", self._container.name)
        self._room -= 1
        self._container.mux(packet)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._container, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()


@pytest.mark.parametrize("where", ["encode", "mux"])
def test_disk_full_is_exit_1_naming_the_output(where: str, media, models_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Issue 14.4: out of space while encoding the picture or muxing the audio is exit 1 (not 5, bad media),
    names OUT (not a hidden temporary file), says how much is free and about how much the render needs, and
    leaves nothing behind."""
    import av

    from lipsyncctl.media import mux as mux_module
    from lipsyncctl.media.writer import VideoWriter

    if where == "encode":
        opened = VideoWriter._open

        def _open(self, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
            opened(self, width, height)
            self._container = _FullDisk(self._container, 1)

        monkeypatch.setattr(VideoWriter, "_open", _open)
    else:  # the picture is written; the muxed copy (the hidden folder's final.*) runs out of space
        real_open = av.open

        def _av_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
            container = real_open(file, mode, *args, **kwargs)
            return _FullDisk(container, 2) if mode == "w" and ".final." in str(file) else container

        monkeypatch.setattr(av, "open", _av_open)
        monkeypatch.setattr(mux_module, "mux_audio", _counted(mux_module.mux_audio, calls := []))
    out = tmp_path / "out" / "o.mp4"
    rc, _, err = _run(capsys, "sync", "--video", str(media["video"]), "--audio", str(media["audio"]), "-o", str(out),
                      "--preset", "tiny", "--length-policy", "cut")
    assert rc == 1, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {out}: cannot write it: No space left on device (") and "free there" in line
    assert "it needs about" in line and ".part" not in err and "/.o." not in err
    assert "re-export" not in err and "free some space" in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no output, no hidden folder
    if where == "mux":
        assert calls  # it did fail in the mux


def _counted(fn, calls: list):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        return fn(*args, **kwargs)

    return wrapper


def test_disk_full_on_a_small_tmpfs(media, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The same on a real full file system: a 16 KiB tmpfs (only where this user may mount one, e.g. root)."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no permission)")
    try:
        out = small / "o.mp4"
        rc, _, err = _run(capsys, "sync", "--video", str(media["video"]), "--audio", str(media["audio"]),
                          "-o", str(out), "--preset", "tiny", "--length-policy", "cut")
        assert rc == 1, err
        assert f"error: {out}: cannot write it: No space left on device (" in err and "it needs about" in err
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
