"""Media and edits generated at test time for the timeline tests: short, downscaled copies of the shared
fixture clip (camera A) and a mirrored later stretch of it (camera B), a tone, and OTIO timelines."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.sync_media import write_clip

FILM = Fraction(24000, 1001)
SIZE = (360, 640)  # (w, h): the smallest size at which dlib finds the fixture's face reliably


def fixture_frames(video: Path, first: int, count: int, mirror: bool = False) -> list[np.ndarray]:
    """``count`` RGB frames of ``video`` from ``first``, resized to :data:`SIZE`."""
    import av
    import cv2

    out = []
    with av.open(str(video)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for i, frame in enumerate(c.decode(video=0)):
            if i < first:
                continue
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_AREA)
            out.append(rgb[:, ::-1].copy() if mirror else rgb)
            if len(out) == count:
                break
    return out


def rt(frames: int, fps: Fraction = FILM):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.opentime.RationalTime(frames, float(fps))


def tr(start: int, duration: int, fps: Fraction = FILM):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.opentime.TimeRange(rt(start, fps), rt(duration, fps))


def clip(name: str, url: str | None, start: int, duration: int, *, available: tuple[int, int] | None = None,
         fps: Fraction = FILM, **metadata):  # type: ignore[no-untyped-def]
    """An OTIO clip of ``duration`` frames from source frame ``start`` (in the media's timecode)."""
    import opentimelineio as otio

    ref = (otio.schema.ExternalReference(target_url=url, available_range=tr(*available, fps) if available else None)
           if url is not None else otio.schema.MissingReference())
    return otio.schema.Clip(name=name, media_reference=ref, source_range=tr(start, duration, fps),
                            metadata=metadata or None)


def write_sources(folder: Path, fixture: Path) -> tuple[Path, Path]:
    """Camera A: fixture frames 0-39; camera B: frames 120-149 mirrored, tagged with timecode 01:00:00:00.
    Both lossless FFV1 at 23.976 fps, 360x640."""
    folder.mkdir(parents=True, exist_ok=True)
    cam_a = write_clip(folder / "cam_a.mkv", fixture_frames(fixture, 0, 40), FILM)
    cam_b = write_clip(folder / "cam_b.mkv", fixture_frames(fixture, 120, 30, mirror=True), FILM,
                       tags={"timecode": "01:00:00:00"})
    return cam_a, cam_b


def write_edit(path: Path, items: list, *, name: str = "edit", start: int = 0) -> Path:  # type: ignore[type-arg]
    """A one-track OTIO edit (``V1``: ``items`` in order) starting at record frame ``start`` (23.976), written
    to ``path`` (its folder made); returns ``path``."""
    import opentimelineio as otio

    tl = otio.schema.Timeline(name=name, global_start_time=rt(start))
    track = otio.schema.Track(name="V1")
    track.extend(items)
    tl.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    otio.adapters.write_to_file(tl, str(path))
    return path


#: the edit of :func:`build_edit`: name -> (record start, frames, source start in file frames) of the shots
EXPECTED_SHOTS = {"A1": (0, 12, 4), "B1": (12, 10, 8), "B3": (22, 8, 20), "A3": (42, 8, 26)}
EXPECTED_SKIPS = {"MISS": "missing media", "B2": "time warp", "A4": "lipsync: false", "A2": "disabled"}


def build_edit(folder: Path, name: str = "edit.otio"):  # type: ignore[no-untyped-def]
    """A 23.976 edit starting at 01:00:00:00 over cam_a/cam_b (relative URLs), 62 frames:

    V1: A1 (a 4-16) | transition 2+2 | B1 (b 01:00:00:08, 10) | gap 6 | A2 disabled 8 | MISS 6 |
        nested stack [A3 (a 24-36) trimmed to 2..10] | B2 (2x time warp) 6 | A4 (lipsync: false) 6
    V2: gap 22 | B3 (b 01:00:00:20, 8) - over the gap and the disabled clip.
    """
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="edit", global_start_time=rt(86400))
    v1, v2 = otio.schema.Track(name="V1"), otio.schema.Track(name="V2")
    v1.append(clip("A1", "cam_a.mkv", 4, 12, available=(0, 40)))
    v1.append(otio.schema.Transition(in_offset=rt(2), out_offset=rt(2)))
    v1.append(clip("B1", "cam_b.mkv", 86408, 10, available=(86400, 30)))
    v1.append(otio.schema.Gap(source_range=tr(0, 6)))
    a2 = clip("A2", "cam_a.mkv", 20, 8)
    a2.enabled = False
    v1.append(a2)
    v1.append(clip("MISS", "nowhere/missing.mkv", 0, 6))
    stack = otio.schema.Stack(name="compound", source_range=tr(2, 8))
    inner = otio.schema.Track(name="inner")
    inner.append(clip("A3", "cam_a.mkv", 24, 12))
    stack.append(inner)
    v1.append(stack)
    b2 = clip("B2", "cam_b.mkv", 86402, 6, available=(86400, 30))
    b2.effects.append(otio.schema.LinearTimeWarp(time_scalar=2.0))
    v1.append(b2)
    v1.append(clip("A4", "cam_a.mkv", 30, 6, lipsync=False))
    v2.append(otio.schema.Gap(source_range=tr(0, 22)))
    v2.append(clip("B3", "cam_b.mkv", 86420, 8, available=(86400, 30)))
    tl.tracks.extend([v1, v2])
    path = folder / name
    otio.adapters.write_to_file(tl, str(path))
    return path


def media_frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    """``count`` RGB frames of ``path`` from frame ``first`` (the timeline's own reader)."""
    from lipsyncctl.timeline.mediaio import read_frames

    return list(read_frames(path, first, count))


def assert_dissolve(got: list[np.ndarray], a_frames: list[np.ndarray], b_frames: list[np.ndarray], start: int,
                    length: int, strict: bool = False) -> None:
    """``got`` plays A (``a_frames`` from record frame 0), then an ``length``-frame dissolve from record frame
    ``start``, then B (``b_frames`` from record frame ``start``): each dissolve frame is the weighted mix within
    one level; ``strict``: and is neither side."""
    from lipsyncctl.timeline.outputs import dissolve_weight

    for t, frame in enumerate(got):
        if t < start:
            assert np.array_equal(frame, a_frames[t]), t
        elif t >= start + length:
            assert np.array_equal(frame, b_frames[t - start]), t
        else:
            w = dissolve_weight(t - start, length)
            expect = a_frames[t].astype(np.float64) * (1 - w) + b_frames[t - start].astype(np.float64) * w
            assert np.abs(frame.astype(np.float64) - expect).max() <= 1, t
            if strict:
                assert not np.array_equal(frame, a_frames[t]) and not np.array_equal(frame, b_frames[t - start])


def write_aaf(path: Path, media: dict[str, Path], cuts: list[tuple[str, int, int]], *, rate: Fraction = FILM,
              record_start: int = 86400, tape_timecode: dict[str, int] | None = None,
              unlinked: tuple[str, ...] = (), dub: tuple[str, Path, int] | None = None,
              dissolves: dict[int, tuple[int, int]] | None = None) -> Path:
    """An AAF composition as Avid Media Composer writes one for AMA-linked files (pyaaf2): for each ``media``
    name a master mob -> file source mob (a network locator to the file) -> tape mob chain, the tape mob with a
    timecode track starting at ``tape_timecode[name]`` where given (a file with a timecode tag); a composition
    mob with a primary timecode track at ``record_start`` and one picture track ``V1`` of source clips
    ``(name, start, frames)`` (start: the file's frame, from 0; a reader adds the tape's timecode). ``unlinked`` names get no
    locator (Avid-managed media that this machine cannot see). ``dub``: ``(track name, WAV file, frames)``, a sound
track of one clip from the record start, the WAV AMA-linked (its master mob counts samples). ``dissolves``: cut
index -> ``(frames, cut point)``, an Avid dissolve (VideoDissolve_2 with its Level ramp) after that cut, which
overlaps both clips as AAF transitions do (the sequence is that much shorter)."""
    import aaf2
    import av

    tc_fps = round(float(rate))

    def described(file: Path) -> dict:  # type: ignore[type-arg]
        """What ``ffprobe -show_format -show_streams`` says of ``file``, the fields pyaaf2's AMA link reads."""
        with av.open(str(file)) as c:
            s = c.streams.video[0]
            frames = sum(1 for _ in c.decode(video=0))
            return {"format": {"format_name": c.format.name, "format_long_name": c.format.long_name},
                    "streams": [{"codec_type": "video", "codec_name": s.codec_context.name, "width": s.width,
                                 "height": s.height, "pix_fmt": s.codec_context.pix_fmt, "nb_frames": str(frames),
                                 "avg_frame_rate": f"{rate.numerator}/{rate.denominator}"}]}

    def wav(file: Path) -> dict:  # type: ignore[type-arg]
        with av.open(str(file)) as c:
            s = c.streams.audio[0]
            samples = sum(frame.samples for frame in c.decode(audio=0))
            return {"format": {"format_name": "wav", "format_long_name": "WAV / WAVE (Waveform Audio)"},
                    "streams": [{"codec_type": "audio", "codec_name": "pcm_s16le", "sample_rate": str(s.rate),
                                 "channels": s.channels, "duration_ts": str(samples), "sample_fmt": "s16",
                                 "bit_rate": str(s.rate * 16 * s.channels)}]}

    with aaf2.open(str(path), "w") as f:
        masters = {}
        for name, file in media.items():
            master, source, tape = f.content.create_ama_link(str(file), described(file))
            master.name = name
            if name in unlinked:
                source.descriptor["Locator"].value = []
            if tape_timecode and name in tape_timecode:
                slot = tape.create_timecode_slot(f"{rate.numerator}/{rate.denominator}", tc_fps)
                slot.segment.start = tape_timecode[name]
                slot["PhysicalTrackNumber"].value = 1
            masters[name] = master
        comp = f.create.CompositionMob(path.stem)
        f.content.mobs.append(comp)
        edit_rate = f"{rate.numerator}/{rate.denominator}"
        tc_slot = comp.create_timeline_slot(edit_rate)
        tc_slot.segment = f.create.Timecode(tc_fps, drop=False)
        tc_slot.segment.start = record_start
        tc_slot.segment.length = sum(n for _, _, n in cuts)
        tc_slot["PhysicalTrackNumber"].value = 1
        sequence = f.create.Sequence(media_kind="picture")
        slot = comp.create_timeline_slot(edit_rate)
        slot.name = "V1"
        slot.segment = sequence
        for k, (name, start, frames) in enumerate(cuts):
            sequence.components.append(masters[name].create_source_clip(slot_id=1, start=start, length=frames))
            if dissolves and k in dissolves:
                sequence.components.append(_aaf_dissolve(f, *dissolves[k]))
        if dub is not None:
            track, file, frames = dub
            master = f.content.create_ama_link(str(file), wav(file))[0]
            sound = f.create.Sequence(media_kind="sound")
            slot = comp.create_timeline_slot(edit_rate)
            slot.name = track
            slot.segment = sound
            sound.components.append(master.create_source_clip(slot_id=1, start=0, length=frames))
    return path


def _aaf_dissolve(f, frames: int, cut_point: int):  # type: ignore[no-untyped-def]
    """A picture Transition as Media Composer writes a dissolve: an OperationGroup of the standard VideoDissolve_2
    definition with a linear Level ramp from 0 to 1 (pyaaf2 objects of the open file ``f``)."""
    import uuid
    from fractions import Fraction

    import aaf2

    try:
        opdef = f.dictionary.lookup_operationdef("VideoDissolve_2")
    except Exception:  # noqa: BLE001 - pyaaf2 raises its own lookup errors: not defined yet in this file
        opdef = f.create.OperationDef(uuid.UUID("0c3bea41-fc05-11d2-8a29-0050040ef7d2"), "VideoDissolve_2", "")
        f.dictionary.register_def(opdef)
        opdef.media_kind = "picture"
        opdef["NumberInputs"].value = 2
        opdef["IsTimeWarp"].value = False
        opdef["Bypass"].value = 1
        opdef["OperationCategory"].value = "OperationCategory_Effect"
        level = f.create.ParameterDef(uuid.UUID("e4962320-2267-11d3-8a4c-0050040ef7d2"), "Level", "",
                                      f.dictionary.lookup_typedef("Rational"))
        f.dictionary.register_def(level)
        opdef["ParametersDefined"].extend([level])
        f.dictionary.register_def(f.create.InterpolationDef(aaf2.misc.LinearInterp, "LinearInterp", "Linear"))
    ramp = f.create.VaryingValue()
    ramp.parameterdef = f.dictionary.lookup_parameterdef("Level")
    ramp["Interpolation"].value = f.dictionary.lookup_interperlationdef("LinearInterp")
    for t in (0, 1):
        point = f.create.ControlPoint()
        point["EditHint"].value = "Proportional"
        point.value, point.time = Fraction(t), Fraction(t)
        ramp["PointList"].append(point)
    group = f.create.OperationGroup(opdef, frames)
    group["Parameters"].append(ramp)
    transition = f.create.Transition("picture", frames)
    transition["OperationGroup"].value = group
    transition["CutPoint"].value = cut_point
    return transition
