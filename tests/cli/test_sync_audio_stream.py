"""`sync.audio_stream`: the dub among the audio streams of a multi-stream --audio file (an editor's MOV with M&E on
its first stream and the dialogue on its second). The chosen stream is synced to and carried into the output; a
file with several streams says which one is the dub; a timeline refuses the key (its dub is a file or a track)."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from tests.sync_media import sample_frames, write_clip, write_wav


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    """A 6-frame clip of a real face, and a Matroska file of two sound streams: 0.24 s stereo (stream 0, an M&E)
    and 0.16 s mono tagged German "DX" (stream 1, the dialogue)."""
    import imageio_ffmpeg

    clip = write_clip(tmp_path / "clip.mkv", sample_frames(6, scale=0.75), Fraction(25))
    me = write_wav(tmp_path / "me.wav", 0.24, channels=2, freq=440.0)
    dx = write_wav(tmp_path / "dx.wav", 0.16)
    both = tmp_path / "stems.mkv"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(me), "-i", str(dx), "-map", "0:a",
                    "-map", "1:a", "-c:a", "pcm_s16le", "-metadata:s:a:1", "language=deu", "-metadata:s:a:1",
                    "title=DX", str(both)], check=True)
    return {"clip": clip, "stems": both, "dx": dx}


def _sync(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    rc = main(["--json", "sync", "--preset", "tiny", "--steps", "1", "--codec", "ffv1", "--length-policy", "cut",
               "--set", "output.audio_codec=pcm",  # exact lengths (AAC pads its last frame)
               *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


def _audio(path: Path) -> tuple[int, float]:
    """(channels, seconds) of the output's sound."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(s))
        return s.codec_context.layout.nb_channels, samples / s.codec_context.sample_rate


def test_the_chosen_stream_is_synced_and_carried(media: dict[str, Path], tmp_path: Path, models_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--video", str(media["clip"]), "--audio", str(media["stems"])]
    rc, res, err = _sync(capsys, *base, "-o", str(tmp_path / "first.mkv"))
    assert rc == 0, err
    said = [w for w in res["warnings"] if "audio streams" in w]  # which stream is the dub is said, not guessed
    assert said == [f"{media['stems']} has 2 audio streams (0: 2 ch 16000 Hz pcm_s16le; 1: 1 ch 16000 Hz pcm_s16le, "
                    'deu, "DX"): stream 0 is used (--set sync.audio_stream=N picks another)']
    assert res["frames"] == 6 and _audio(tmp_path / "first.mkv") == (2, 0.24)  # stream 0's length and channels

    rc, res, err = _sync(capsys, *base, "-o", str(tmp_path / "dx.mkv"), "--set", "sync.audio_stream=1")
    assert rc == 0, err
    assert res["frames"] == 4 and _audio(tmp_path / "dx.mkv") == (1, 0.16)  # the plan and the mux: stream 1
    # the same frames as with the dialogue as a file of its own
    rc, alone, err = _sync(capsys, "--video", str(media["clip"]), "--audio", str(media["dx"]), "-o",
                           str(tmp_path / "alone.mkv"))
    assert rc == 0 and not [w for w in alone["warnings"] if "audio streams" in w], err
    from tests.sync_media import decode_rgb

    assert all((a == b).all() for a, b in zip(decode_rgb(tmp_path / "dx.mkv"), decode_rgb(tmp_path / "alone.mkv"),
                                               strict=True))

    rc, res, _ = _sync(capsys, *base, "-o", str(tmp_path / "none.mkv"), "--set", "sync.audio_stream=2")
    assert rc == 5 and "sync.audio_stream 2: the file has 2 audio stream(s)" in res["error"]["message"]
    assert not (tmp_path / "none.mkv").exists()


def test_a_timeline_refuses_the_key(tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """For the run (before anything is read) and in a shot's options (its render would look for the stream in its
    own cut of the dub): exit 3 naming where."""
    from tests.conftest import shared_path
    from tests.timeline_media import clip, write_edit, write_sources

    rc = main(["--json", "sync", "--timeline", str(tmp_path / "edit.otio"), "--audio", str(tmp_path / "de.wav"),
               "-o", str(tmp_path / "out"), "--preset", "tiny", "--set", "sync.audio_stream=1"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 3 and "sync.audio_stream" in doc["error"]["message"] and "--audio-track" in doc["error"]["hint"]
    write_sources(tmp_path, shared_path("fixtures", "demo1_video.mp4"))
    edit = write_edit(tmp_path / "shot.otio", [clip("A1", "cam_a.mkv", 0, 8, available=(0, 40),
                                                    lipsync={"set": ["sync.audio_stream=1"]})])
    rc = main(["--json", "sync", "--timeline", str(edit), "--audio", str(shared_path("fixtures", "demo1_audio.wav")),
               "-o", str(tmp_path / "out"), "--preset", "tiny", "--dry-run"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 3 and doc["error"]["message"].startswith("shot ") and "sync.audio_stream" in doc["error"]["message"]


def test_prep_keeps_the_chosen_stream(media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """prep's sound is the first stream (said when there are several) or ``prep.audio_stream``'s; an output made
    with the first stays up to date (the key at its default is not in the outputs' settings)."""
    import numpy as np

    from lipsyncctl.media.audio import read_audio

    clip = tmp_path / "in.mkv"
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(media["clip"]), "-i", str(media["stems"]),
                    "-map", "0:v", "-map", "1:a", "-c", "copy", str(clip)], check=True)  # picture + both streams

    def pitch(wav: Path) -> float:
        sound = read_audio(wav, 16000, 1)
        return float(np.argmax(np.abs(np.fft.rfft(sound))) * 16000 / len(sound))

    args = ["--json", "prep", str(clip), "--codec", "ffv1"]
    assert main([*args, "-o", str(tmp_path / "first")]) == 0
    (item,) = json.loads(capsys.readouterr().out)["items"]
    assert any("has 2 audio streams" in w and "stream 0 is used" in w for w in item["warnings"])
    assert abs(pitch(tmp_path / "first" / "in.wav") - 440) < 10  # stream 0: the 440 Hz one
    assert main([*args, "-o", str(tmp_path / "first")]) == 0  # a rerun: up to date
    assert json.loads(capsys.readouterr().out)["items"][0]["status"] == "skipped"
    assert main([*args, "-o", str(tmp_path / "dx"), "--set", "prep.audio_stream=1"]) == 0
    capsys.readouterr()
    assert abs(pitch(tmp_path / "dx" / "in.wav") - 220) < 10  # stream 1: the 220 Hz dialogue
