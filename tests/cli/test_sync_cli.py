"""`lipsyncctl sync` through the CLI: a short cut of the demo clip, and bad input -> exit codes, no output."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

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
    rc, stdout, err = _run(capsys, "--json", "sync", "--video", str(video), "--audio", str(audio), "-o", str(out),
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
    assert (tmp_path / "demo1_sync.run.yaml").is_file()
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
