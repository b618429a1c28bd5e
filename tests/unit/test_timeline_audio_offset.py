"""A shot's ``audio_offset`` reaches every deliverable: the render's dub cut, the conform's sound and the
relinked timeline's dub track all read the dub at the shifted position over that shot's record range (whole
samples, hard cuts at its boundaries), and an edit without offsets gets exactly what it got before: one dub
clip and the plain dub in the conform. No render: the conform is muxed from the sources."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.timeline.dub import DubTrack
from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver
from tests.sync_media import write_clip
from tests.timeline_media import clip, rt

FPS = Fraction(25)
RATE = 48000
SPF = RATE // 25  # samples per frame
LEAD = RATE // 5  # the dub's first sample plays 0.2 s after the first frame
#: name -> (record start, frames, audio_offset) of the edit: B's dub is read 0.9 s earlier (its first 0.3 s
#: then fall before the dub file: silence, a gap on the dub track), C's 0.25 s later
SHOTS = {"A": (0, 20, None), "B": (20, 15, 0.9), "C": (35, 15, -0.25), "D": (50, 10, None)}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio_offset")
    write_clip(folder / "cam.mkv", [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(60)], FPS)
    return folder


def _edit(offsets: bool = True):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="ao", global_start_time=rt(0, FPS))
    v = otio.schema.Track(name="V1")
    for name, (start, frames, off) in SHOTS.items():
        meta = {"lipsync": {"audio_offset": off}} if offsets and off is not None else {}
        v.append(clip(name, "cam.mkv", start, frames, available=(0, 60), fps=FPS, **meta))
    tl.tracks.append(v)
    return tl


def _dub(path: str = "de.wav") -> DubTrack:
    """3 s of a stereo sawtooth (every sample differs from its neighbours by far more than 16-bit steps)."""
    n = 3 * RATE
    saw = ((np.arange(n) * 37) % 1000).astype(np.float32) / 1000 - 0.5
    return DubTrack("de", np.stack([saw, -0.5 * saw]), RATE, Fraction(LEAD, RATE), path)


def _expected(dub: DubTrack, total: int, offsets: bool = True) -> np.ndarray:
    """The dub at each record sample ``k``: file sample ``k - shift - LEAD``, silence outside the file."""
    out = np.zeros((2, total), np.float32)
    for start, frames, off in SHOTS.values():
        shift = round(off * RATE) if offsets and off else 0
        for k in range(start * SPF, (start + frames) * SPF):
            j = k - shift - LEAD
            if 0 <= j < dub.samples.shape[1]:
                out[:, k] = dub.samples[:, j]
    return out


def test_the_conform_plays_the_dub_where_each_shot_was_synced_to_it(media: Path, tmp_path: Path) -> None:
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.mediaio import read_audio
    from lipsyncctl.timeline.outputs import conform, conform_audio

    plan = plan_timeline(_edit(), MediaResolver(media), handles=2)
    assert [(s.name, s.options.audio_offset) for s in plan.segments] == [(n, o) for n, (_, _, o) in SHOTS.items()]
    dub = _dub()
    total = plan.duration * SPF
    mixed = np.concatenate(list(conform_audio(plan, dub)), axis=1)
    assert np.array_equal(mixed, _expected(dub, total))  # sample exact, hard cuts at B's and C's boundaries
    b0 = 20 * SPF
    assert not mixed[:, b0 : b0 + 14400].any() and mixed[:, b0 + 14400 :].any()  # B reads before the file: silence
    assert np.array_equal(mixed[:, 50 * SPF :], dub.cut(50, 10, FPS))  # D: as without offsets
    # the muxed conform (16-bit PCM) carries that sound
    config = cfg.resolve("tiny").with_overrides({"output.audio_codec": "pcm", "output.codec": "ffv1"})
    got, got_rate = read_audio(conform(plan, {}, dub, tmp_path / "ao.conform.mkv", config))
    assert got_rate == RATE and got.shape == (2, total)
    assert np.abs(got - mixed).max() < 2 / 32768
    # without offsets: the dub as it was, nothing shifted
    plain = plan_timeline(_edit(offsets=False), MediaResolver(media), handles=2)
    assert np.array_equal(np.concatenate(list(conform_audio(plain, dub)), axis=1), dub.cut(0, plain.duration, FPS))
    assert np.array_equal(np.concatenate(list(conform_audio(plain, dub)), axis=1), _expected(dub, total, offsets=False))


def test_the_render_is_given_the_sound_the_conform_plays(media: Path, tmp_path: Path) -> None:
    """The dub cut a shot's render is synced to and muxed with (job._write_task_audio): under its visible
    frames, the conform's samples; in its handles, the dub shifted the same way."""
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.job import _write_task_audio
    from lipsyncctl.timeline.mediaio import read_audio
    from lipsyncctl.timeline.outputs import conform_audio
    from lipsyncctl.timeline.shot_task import ShotTask
    from lipsyncctl.timeline.types import ShotState

    plan = plan_timeline(_edit(), MediaResolver(media), handles=2)
    dub = _dub()
    mixed = np.concatenate(list(conform_audio(plan, dub)), axis=1)
    for seg in plan.segments:
        task = ShotTask(key="k", language="de", segment_id=seg.id, video=str(seg.media), fps="25",
                        first=seg.render_start, frames=seg.render_frames, audio=str(tmp_path / f"{seg.name}.wav"),
                        output=str(tmp_path / f"{seg.name}.mkv"), config=cfg.resolve("tiny"))
        _write_task_audio(ShotState(seg, "de", FPS, "k", Path(task.output), [], 0.0, task=task), [dub])
        cut, rate = read_audio(Path(task.audio))
        assert rate == RATE and cut.shape == (2, seg.render_frames * SPF)
        head = seg.handle_in * SPF
        visible = mixed[:, seg.record_start * SPF : (seg.record_start + seg.record_frames) * SPF]
        assert np.abs(cut[:, head : head + visible.shape[1]] - visible).max() < 1 / 32767, seg.name
        shift = round((seg.options.audio_offset or 0) * RATE)
        j = (seg.record_start - seg.handle_in) * SPF - shift - LEAD  # the handle: the file read on at the shift
        if j >= 0:
            assert np.abs(cut[:, :head] - dub.samples[:, j : j + head]).max() < 1 / 32767, seg.name


def _dub_clips(media: Path, tmp_path: Path, offsets: bool) -> list[tuple[str, float, float, float, dict]]:
    """The relinked OTIO's dub track, written and read back: (kind, record start, source start, duration)
    in samples and each clip's ``lipsyncctl`` metadata."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import relinked_timeline, write_timelines

    timeline = _edit(offsets)
    edit = media / ("ao.otio" if offsets else "plain.otio")
    otio.adapters.write_to_file(timeline, str(edit))
    plan = plan_timeline(timeline, MediaResolver(media), handles=2)
    dub_file = tmp_path / "de.wav"
    dub_file.write_bytes(b"")  # only its path is written into the timeline
    relinked, warnings = relinked_timeline(timeline, plan, {}, "de", dub=_dub(str(dub_file)))
    assert warnings == []
    written, warnings = write_timelines(relinked, edit, tmp_path / "out")
    assert not warnings
    back = otio.adapters.read_from_file(str(written[0]))
    (track,) = [t for t in back.tracks if t.name == "Dub de"]

    def samples(t) -> float:  # type: ignore[no-untyped-def]
        assert t.rate == 25  # the timeline's rate, fractional frames: whole samples
        return round(t.value * SPF, 6)

    out = []
    for item in track:
        rng = item.range_in_parent()
        if isinstance(item, otio.schema.Gap):
            out.append(("gap", samples(rng.start_time), 0.0, samples(rng.duration), {}))
        else:
            assert Path(item.media_reference.target_url).name == "de.wav"
            out.append(("clip", samples(rng.start_time), samples(item.source_range.start_time),
                        samples(item.source_range.duration), dict(item.metadata.get("lipsyncctl", {}))))
    return out


def test_the_relinked_dub_track_gives_each_shifted_shot_its_own_clip(media: Path, tmp_path: Path) -> None:
    ids = {s.name: s.id for s in plan_timeline(_edit(), MediaResolver(media)).segments}
    assert _dub_clips(media, tmp_path, offsets=True) == [
        ("gap", 0, 0, LEAD, {}),
        ("clip", LEAD, 0, 20 * SPF - LEAD, {}),                            # A: the dub from its start
        ("gap", 20 * SPF, 0, 14400, {}),                                   # B reads 0.3 s before the file
        ("clip", 20 * SPF + 14400, 0, 15 * SPF - 14400, {"shot": ids["B"], "audio_offset": 0.9}),
        ("clip", 35 * SPF, 35 * SPF + 12000 - LEAD, 15 * SPF, {"shot": ids["C"], "audio_offset": -0.25}),
        ("clip", 50 * SPF, 50 * SPF - LEAD, 10 * SPF, {}),                 # D: where it was
    ]


def test_without_offsets_the_dub_track_stays_one_clip(media: Path, tmp_path: Path) -> None:
    assert _dub_clips(media, tmp_path, offsets=False) == [
        ("gap", 0, 0, LEAD, {}), ("clip", LEAD, 0, 60 * SPF - LEAD, {})]


def test_a_dub_from_an_audio_track_warns_that_the_nle_plays_it_unshifted(media: Path) -> None:
    from lipsyncctl.timeline.outputs import relinked_timeline

    timeline = _edit()
    plan = plan_timeline(timeline, MediaResolver(media))
    dub = _dub("track:Dub DE")
    _, warnings = relinked_timeline(timeline, plan, {}, "de", dub=dub)
    b, c = (s.id for s in plan.segments[1:3])
    assert warnings == [f"audio_offset of {b}, {c}: the timeline's audio track 'Dub DE' (the dub) is kept as it is, "
                        "so an NLE plays it unshifted there; the renders and the conform carry the shift"]
    _, warnings = relinked_timeline(_edit(False), plan_timeline(_edit(False), MediaResolver(media)), {}, "de", dub=dub)
    assert warnings == []


def test_the_dub_coverage_warning_follows_the_offsets(media: Path) -> None:
    """A dub covering the edit exactly: without offsets nothing to say; B reads 0.9 s before the dub's first
    sample (its first 2.5 frames get silence), so with offsets it is named partly silent; C (-0.25 s) and
    the unshifted shots have sound."""
    from lipsyncctl.timeline.gates import dub_coverage_warning

    n = 60 * SPF
    dub = DubTrack("de", np.full((1, n), 0.1, np.float32), RATE, Fraction(0), "de.wav")
    plain = plan_timeline(_edit(offsets=False), MediaResolver(media))
    assert dub_coverage_warning(dub, plain) is None
    shifted = plan_timeline(_edit(), MediaResolver(media))
    w = dub_coverage_warning(dub, shifted)
    assert w is not None and "an audio_offset moves a shot's window past its ends" in w
    (b,) = [s.id for s in shifted.segments if s.name == "B"]
    assert w.endswith(f"partly silent: {b}") and "silent shots" not in w
