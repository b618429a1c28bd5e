"""The dub is decoded once before the mux (issue 12): its 16 kHz copy and its length at its own rate come from one
pass, equal to what the separate reads give (AAC with an edit list, MP4 with a stream starting late, WAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.media import audio as audio_mod
from lipsyncctl.media.audio import audio_length, read_audio, read_audio_and_length
from tests import mediagen as mg
from tests.sync_media import sample_frames, tiny_models, write_clip, write_wav
from tests.unit.test_media_io import _m4a


@pytest.mark.parametrize("kind", ["wav48-stereo", "m4a44", "mp4-aac", "wav16"])
def test_one_decode_gives_the_copy_and_the_length(tmp_path: Path, kind: str) -> None:
    if kind == "wav48-stereo":
        path = write_wav(tmp_path / "a.wav", 0.77, rate=48000, channels=2)
    elif kind == "m4a44":
        path = _m4a(tmp_path / "a.m4a", 1.3, 44100)
    elif kind == "mp4-aac":
        path = mg.make_clip(tmp_path / "v.mp4", frames=30, audio_rate=48000)
    else:
        path = write_wav(tmp_path / "a.wav", 0.5, rate=16000)
    mono, samples, rate = read_audio_and_length(path, 16000, 1)
    assert (samples, rate) == audio_length(path)
    np.testing.assert_array_equal(mono, read_audio(path, 16000, 1))


def test_sync_decodes_the_dub_once_before_the_mux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.media import mux
    from lipsyncctl.pipeline.clip import sync_clip

    dub = write_wav(tmp_path / "dub.wav", 0.24, rate=48000, channels=2)
    video = write_clip(tmp_path / "v.mkv", sample_frames(6, scale=0.75), Fraction(25))
    decodes: list[str] = []
    real_iter = audio_mod.iter_audio_frames

    def counted(container, *args, **kwargs):  # type: ignore[no-untyped-def]
        decodes.append(Path(container.name).name)
        return real_iter(container, *args, **kwargs)

    def no_length(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the dub was decoded again to count its samples")

    monkeypatch.setattr(audio_mod, "iter_audio_frames", counted)
    monkeypatch.setattr(mux, "iter_audio_frames", counted)
    monkeypatch.setattr(audio_mod, "audio_length", no_length)
    with tiny_models(tmp_path / "models") as (config, models):
        res = sync_clip(video, dub, tmp_path / "o.mp4", config, networks=models)
    assert res.frames == 6
    assert decodes.count("dub.wav") == 2  # the 16 kHz copy with its length, then the mux (streamed)


def test_a_long_dub_is_kept_on_disk_beside_the_output_and_gives_the_same_sync(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SPILL_SAMPLES the dub's 16 kHz copy goes to an unnamed file in the output's folder (a film's dub is not
    held in memory, nor its log-mel: audio.mel.LogMel): the output is the same, byte for byte, as with the copy in
    memory, and nothing is left in the folder."""
    from lipsyncctl.pipeline.clip import sync_clip

    dub = write_wav(tmp_path / "dub.wav", 0.5, rate=48000, channels=2)  # longer than the picture: cut at 0.24 s
    video = write_clip(tmp_path / "v.mkv", sample_frames(6, scale=0.75), Fraction(25))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    folders: list[object] = []
    real_read = audio_mod.read_audio

    def recorded(*args, **kwargs):  # type: ignore[no-untyped-def]
        folders.append(kwargs.get("folder"))
        return real_read(*args, **kwargs)

    with tiny_models(tmp_path / "models") as (config, models):
        memory = sync_clip(video, dub, tmp_path / "memory.mp4", config, networks=models)
        monkeypatch.setattr(audio_mod, "SPILL_SAMPLES", 1000)
        monkeypatch.setattr(audio_mod, "read_audio", recorded)
        disk = sync_clip(video, dub, out_dir / "disk.mp4", config, networks=models)
    assert folders == [out_dir] and sorted(p.name for p in out_dir.iterdir()) == ["disk.mp4", "disk.run.yaml"]
    assert disk.output.read_bytes() == memory.output.read_bytes()
