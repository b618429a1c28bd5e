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
from tests.sync_media import (
    SOUND_BURST,
    SOUND_RATE,
    burst_at,
    burst_sound,
    sample_frames,
    tiny_models,
    write_clip,
    write_sound,
    write_wav,
)
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

    monkeypatch.setattr(audio_mod, "iter_audio_frames", counted)  # the mux's iter_audio reads through it too
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


def test_a_dub_that_starts_late_or_on_another_clock_is_heard_and_muxed_on_one_timeline(tmp_path: Path) -> None:
    """A clip's own sound starting 0.2 s after its picture (a .mov as recorded or conformed) keeps that lead in the
    output, and the model hears the same timeline; an MPEG-TS dub, whose timestamps start at 1.4 s, starts at its
    first sample (not after 1.4 s of silence). Before: the model heard the file's time 0 (1.4 s of silence before
    a TS dub's speech) while the mux wrote the sound from its first sample (a late start lost): out of step."""
    from lipsyncctl.pipeline.clip import probe_inputs, sync_clip

    frames = sample_frames(10, scale=0.75)
    own = write_sound(tmp_path / "own.mov", "mov", "pcm_s16le", burst_sound(0.2), audio_at=0.2, frames=frames)
    ts = write_sound(tmp_path / "dub.ts", "mpegts", "mp2", burst_sound(0.4), audio_at=1.4)  # as FFmpeg writes a TS
    video = write_clip(tmp_path / "v.mkv", frames, Fraction(25))
    with tiny_models(tmp_path / "models") as (config, models):
        for picture, dub, expected, slack in ((own, own, 0.2 + SOUND_BURST[0], 0.001), (video, ts, SOUND_BURST[0], 0.05)):
            origin = probe_inputs(picture, dub).origin
            heard, _, _ = read_audio_and_length(dub, SOUND_RATE, 1, start=origin)  # what sync_clip gives the model
            out = tmp_path / f"out-{dub.stem}.mov"
            sync_clip(picture, dub, out, config, networks=models, overwrite=True)
            written = read_audio(out, SOUND_RATE, 1)
            # (MP2 in a TS delays its sound by its codec's 30 ms, which the file does not state; not 1.4 s)
            assert burst_at(heard) == pytest.approx(expected, abs=slack), (dub.name, burst_at(heard))
            assert burst_at(written) == burst_at(heard), dub.name  # the mux and the model agree to the sample
        # from frame 3 on (--start 0.12), the clip's own sound from there: what plays with those frames
        out = tmp_path / "out-start.mov"
        sync_clip(own, own, out, config, networks=models, start=0.12)
        assert burst_at(read_audio(out, SOUND_RATE, 1)) == pytest.approx(0.2 + SOUND_BURST[0] - 0.12, abs=0.001)


def test_a_clips_own_sound_ends_with_its_picture(tmp_path: Path) -> None:
    """A clip's own sound that starts 0.2 s after its picture and runs 0.2 s past its last frame: the output has the
    picture's frames, the sound cut there (it played the picture backwards for 5 frames: pingpong to the sound's
    length), said; with ``--end``, the sound ends with the frames selected (no warning: asked for)."""
    from lipsyncctl.media.probe import probe
    from lipsyncctl.pipeline.clip import sync_clip

    own = write_sound(tmp_path / "own.mov", "mov", "pcm_s16le", burst_sound(0.4), audio_at=0.2,
                      frames=sample_frames(10, scale=0.75))
    with tiny_models(tmp_path / "models") as (config, models):
        res = sync_clip(own, own, tmp_path / "o.mov", config, networks=models)
        part = sync_clip(own, own, tmp_path / "part.mov", config, networks=models, start=0.08, end=0.28)
    assert res.frames == 10 and probe(res.output).video.frame_count == 10
    assert len(read_audio(res.output, SOUND_RATE, 1)) == round(0.4 * SOUND_RATE)
    assert any("own sound runs 0.200 s past its last frame: cut there" in w for w in res.warnings), res.warnings
    assert part.frames == 5 and not any("past its last frame" in w or "length policy" in w for w in part.warnings)
    assert len(read_audio(part.output, SOUND_RATE, 1)) == round(0.2 * SOUND_RATE)


def test_a_timeline_dub_in_mpeg_ts_starts_at_its_first_sample(tmp_path: Path) -> None:
    """A timeline's dub file is read from its own start, as a clip's (``own_start``): an MPEG-TS's 1.4 s are not
    silence before the dialogue; a WAV's start is 0."""
    from lipsyncctl.media.audio import own_start
    from lipsyncctl.timeline.dub import load_dub_file

    ts = write_sound(tmp_path / "de.ts", "mpegts", "mp2", burst_sound(0.4), audio_at=1.4)  # as FFmpeg writes a TS
    assert own_start(ts) > 1 and own_start(write_wav(tmp_path / "a.wav", 0.1)) == 0
    dub = load_dub_file("de", ts, folder=tmp_path)
    assert dub.rate == SOUND_RATE and burst_at(np.asarray(dub.samples[0])) == pytest.approx(SOUND_BURST[0], abs=0.05)


def test_a_float_dub_above_full_scale_and_streams_left_out_are_said(tmp_path: Path) -> None:
    """A float WAV dub peaking at +6 dB is clipped in the output: said (it was silent); subtitles of the picture's
    file are not carried: said."""
    import subprocess

    import av
    import imageio_ffmpeg

    from lipsyncctl.pipeline.clip import sync_clip

    hot = tmp_path / "hot.wav"
    with av.open(str(hot), "w") as c:
        s = c.add_stream("pcm_f32le", rate=SOUND_RATE, layout="mono")
        sound = 2.0 * np.sin(2 * np.pi * 220 * np.arange(3840) / SOUND_RATE).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(sound.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = SOUND_RATE, 0
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    clip = write_clip(tmp_path / "v.mkv", sample_frames(6, scale=0.75), Fraction(25))
    (tmp_path / "s.srt").write_text("1\n00:00:00,000 --> 00:00:00,200\nHallo\n")
    subs = tmp_path / "subs.mkv"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(clip), "-i", str(tmp_path / "s.srt"),
                    "-map", "0", "-map", "1", "-c", "copy", str(subs)], check=True)
    with tiny_models(tmp_path / "models") as (config, models):
        res = sync_clip(subs, hot, tmp_path / "o.mov", config, networks=models)
    said = " | ".join(res.warnings)
    assert "above full scale (peak +6.0 dBFS" in said and "not carried into the output: subtitles (srt)" in said


def test_score_hears_what_plays_with_its_frames(tmp_path: Path) -> None:
    """``score`` reads the sound on sync's timeline: a clip whose picture starts at 0.12 s (3 frames) and its sound at
    0.2 s is measured against the sound that plays with its frames (it was read from the file's time 0 on: 3 frames
    early, an offset the measure would have reported as the clip's)."""
    from types import SimpleNamespace

    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.score import _score_one

    frames = sample_frames(10, scale=0.5)
    own = write_sound(tmp_path / "own.mov", "mov", "pcm_s16le", burst_sound(0.2), audio_at=0.2, frames=frames,
                       video_at=3)
    heard: list[np.ndarray] = []

    def measure(frames, sound, fps, count):  # type: ignore[no-untyped-def]
        heard.append(np.asarray(sound))
        return SimpleNamespace(measured=False, scale="official", reason="(a stand-in measure)")

    score = _score_one(SimpleNamespace(score=measure), own, own, cfg.resolve("tiny"), None, None, None)
    assert score.status == "unmeasured" and burst_at(heard[0]) == pytest.approx(0.2 + SOUND_BURST[0] - 0.12, abs=0.001)
