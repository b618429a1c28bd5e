"""Per-range overrides from a segments file (``sync --segments FILE``), like sync.so's segments.

The file (JSON or YAML) is a list of ranges, or a mapping with the list under ``segments``::

    - {start: "00:00:01:00", end: "00:00:02:12", lipsync: false}       # left alone: the source picture
    - {start: 3.5, end: 6, face: 1, audio_offset: 0.08}                # seconds
    - {start: 150f, end: 200f, set: ["inference.guidance=2.0"]}        # frames (a string ending in f)

``start`` is the range's first frame and ``end`` the first frame after it (exclusive, like sync.so's
``endTime``): a timecode ``HH:MM:SS:FF`` in the picture's own timecode (the clip's timecode tag, or the
edit's record timecode), seconds (a number, or a string such as ``"3.5"``/``"3.5s"``) or frames
(``"150f"``) from the first frame. The options are a shot's ``lipsync`` options
(:mod:`~lipsyncctl.timeline.shots`): ``lipsync`` (``false``: no lip-sync, the source picture is kept),
``face`` (track id), ``face_at`` (``[x, y]``), ``audio_offset`` (seconds), ``guidance``, ``steps``,
``length_policy``, ``set`` (config overrides: ``["key=value", ...]`` or a mapping); ``name`` names the range.

With one clip (``--video``), the clip becomes an edit cut at the range boundaries: one shot per range
(``seg_001``...) and one ``lipsync: false`` shot (``pass_001``...) per stretch no range covers, which
keeps its source picture; ``OUT/segments.otio`` holds it. With an edit (``--timeline``, or the scenes of
``--split-scenes``) the ranges are in record time and apply to the shots they cover: a range must cover
whole shots (one that splits a shot is an error naming both). Either way the options reach each shot as a
``lipsync`` marker on its clip, so the relinked timelines show them.

Errors: an unreadable file, a bad time, ranges that overlap or leave the picture, a range that splits a
shot: :class:`~lipsyncctl.errors.UsageError` (exit 2); an unknown option or a bad option value:
:class:`~lipsyncctl.errors.ConfigError` (exit 3). Each names the file and the range (1-based).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import ConfigError, MediaError, UsageError
from lipsyncctl.media import timecode as tb
from lipsyncctl.media.rates import exact

if TYPE_CHECKING:
    from lipsyncctl.timeline.scenes import SceneRange
    from lipsyncctl.timeline.source import MediaResolver

#: the single-clip edit's file name in ``OUT``
SEGMENTS_NAME = "segments.otio"
#: option keys of a range (beside ``start``, ``end``, ``name``) -> the shot option it sets
_OPTIONS = {"lipsync": "enabled", "face": "face", "face_at": "face_at", "audio_offset": "audio_offset",
            "guidance": "guidance", "steps": "steps", "length_policy": "length_policy", "set": "set"}
_TIMECODE = re.compile(r"^\d{1,2}:\d{2}:\d{2}[:;.]\d{2,3}$")
_FRAMES = re.compile(r"^\d+\s*f$", re.IGNORECASE)
_SECONDS = re.compile(r"^\d+(\.\d*)?\s*s?$|^\.\d+\s*s?$", re.IGNORECASE)
_HINT = "times are HH:MM:SS:FF, seconds (3.5) or frames (150f); end is the first frame after the range"
#: a range's options (`lipsync`, `face`, `set`...)
_OPTIONS_HINT = "see `lipsyncctl sync --help` (--segments) for a range's options and their values"


@dataclass(frozen=True)
class RangeSpec:
    """One range as written: its raw ``start``/``end``, a name and the ``lipsync`` options it sets."""

    number: int                   # 1-based position in the file
    start: Any
    end: Any
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentsFile:
    """A parsed segments file (:func:`load_segments`)."""

    path: Path
    ranges: tuple[RangeSpec, ...]


@dataclass(frozen=True)
class FrameRange:
    """A range in frames of the picture: ``[first, stop)`` from its first frame."""

    spec: RangeSpec
    first: int
    stop: int


def load_segments(path: str | Path) -> SegmentsFile:
    """Read and check a segments file (its times are checked against the picture later:
    :func:`frame_ranges`).

    Raises:
        MediaError: a missing or unreadable file.
        UsageError: not a list of mappings, a range without start/end.
        ConfigError: an unknown option, or an option of the wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:  # a missing or unreadable input file: exit 5, as in every command
        raise MediaError(f"--segments {path}: {exc.strerror or exc}", hint="give a JSON or YAML file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--segments {path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                         hint="save it as UTF-8 (an editor's UTF-16 'Unicode' is not read)") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--segments {path}: not valid JSON ({exc})", hint="give a JSON or YAML list") from None
    else:  # YAML (JSON is YAML too)
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"--segments {path}: not valid YAML ({' '.join(str(exc).split())})",
                             hint="give a JSON or YAML list of ranges") from None
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"]
    if not isinstance(data, list) or not data:
        raise UsageError(f"--segments {path}: expected a non-empty list of ranges ({{start, end, ...}})",
                         hint=_HINT)
    return SegmentsFile(path=path, ranges=tuple(_spec(path, k, item) for k, item in enumerate(data, start=1)))


def _spec(path: Path, number: int, item: Any) -> RangeSpec:
    where = f"--segments {path}: range {number}"
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a mapping such as {{start: 1.0, end: 2.5}}, got {item!r}", hint=_HINT)
    missing = [k for k in ("start", "end") if item.get(k) is None]
    if missing:
        raise UsageError(f"{where}: no {' or '.join(missing)}", hint=_HINT)
    unknown = sorted(set(item) - {"start", "end", "name", *_OPTIONS})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}",
                          hint=f"known keys: start, end, name, {', '.join(sorted(_OPTIONS))}")
    options = {_OPTIONS[k]: v for k, v in item.items() if k in _OPTIONS}
    _check_options(where, options)
    return RangeSpec(number=number, start=item["start"], end=item["end"],
                     name=None if item.get("name") is None else str(item["name"]), options=options)


def _check_options(where: str, options: dict[str, Any]) -> None:
    """Raise ConfigError for a value the shot options would not read (the `set` list is parsed here too)."""
    from lipsyncctl.config import overrides_from_sets
    from lipsyncctl.timeline.shots import face_point, finite_number

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} {options[key]!r}: expected {expected}", hint=_OPTIONS_HINT)

    if "enabled" in options and not isinstance(options["enabled"], bool):
        raise ConfigError(f"{where}: lipsync {options['enabled']!r}: expected true or false", hint=_OPTIONS_HINT)
    if "face" in options and (isinstance(options["face"], bool) or not isinstance(options["face"], int)
                              or options["face"] < 0):
        raise bad("face", "a face track id (0, 1, ...)")
    for key in ("audio_offset", "guidance"):  # (read as the shot options read them, strings aside)
        if key in options:
            try:
                if isinstance(options[key], str):
                    raise ValueError
                finite_number(options[key], key)
            except (TypeError, ValueError):
                raise bad(key, "a finite number" + (" of seconds" if key == "audio_offset" else "")) from None
    if "steps" in options and (isinstance(options["steps"], bool) or not isinstance(options["steps"], int)):
        raise bad("steps", "a whole number")
    if "face_at" in options:
        try:
            face_point(options["face_at"])
        except (TypeError, ValueError):
            raise bad("face_at", '[x, y] or "X,Y" in pixels') from None
    if "set" in options:
        sets = options["set"]
        if isinstance(sets, dict):
            sets = [f"{k}={json.dumps(v) if isinstance(v, bool | list | dict) or v is None else v}"
                    for k, v in sets.items()]
        if isinstance(sets, str):
            sets = [sets]
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise bad("set", 'a list of "key=value" or a mapping')
        try:
            overrides_from_sets(sets)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{where}: set: {exc}", hint=_OPTIONS_HINT) from None
        options["set"] = sets


def parse_time(value: Any, fps: Fraction, start: int, where: str) -> int:
    """``value`` as a frame from the first frame: a number = seconds; ``"HH:MM:SS:FF"`` = a timecode in the
    picture's own timecode (``start`` = its first frame's timecode as a frame count); ``"150f"`` = frames;
    ``"3.5"``/``"3.5s"`` = seconds. Raises UsageError naming ``where``."""
    if isinstance(value, bool):
        raise UsageError(f"{where} {value!r}: not a time", hint=_HINT)
    if isinstance(value, int | float):
        if not math.isfinite(value):  # (YAML's .nan/.inf, JSON's NaN: an internal error in the fraction)
            raise UsageError(f"{where} {value!r}: not a time", hint=_HINT)
        return round(exact(value) * fps)
    text = str(value).strip()
    if _FRAMES.match(text):
        return int(text[:-1].strip())
    if _SECONDS.match(text):
        return round(Fraction(text.rstrip("sS").strip()) * fps)
    if _TIMECODE.match(text):
        try:
            tb.check_drop_label(text, fps)  # (01:01:00;00 was read as 01:00:59;28)
            frames = tb.timecode_frames(text, fps)
        except ValueError as exc:
            raise UsageError(f"{where} {text!r}: bad timecode at {float(fps):.3f} fps ({exc})", hint=_HINT) from None
        return frames - start
    raise UsageError(f"{where} {text!r}: not a timecode, seconds or frames", hint=_HINT)


def frame_ranges(segments: SegmentsFile, fps: Fraction, start: int, frames: int, what: str,
                 drop: bool = False) -> list[FrameRange]:
    """The ranges in frames ``[first, stop)`` of a picture of ``frames`` frames at ``fps`` whose first frame
    has the timecode ``start`` (a frame count; counted drop frame in messages with ``drop``), sorted; ``what``
    names the picture in errors.

    Raises:
        UsageError: a bad time, a range that is empty, starts before the first frame or ends after the
            last one, or two ranges that overlap (both named).
    """
    out: list[FrameRange] = []
    for spec in segments.ranges:
        where = f"--segments {segments.path}: range {spec.number}"
        first = parse_time(spec.start, fps, start, f"{where}: start")
        stop = parse_time(spec.end, fps, start, f"{where}: end")
        span = f"{tb.timecode(start + first, fps, drop)}-{tb.timecode(start + stop, fps, drop)}"
        if stop <= first:
            raise UsageError(f"{where}: end is not after start ({span})", hint=_HINT)
        if first < 0 or stop > frames:
            raise UsageError(f"{where} ({span}) is outside {what} ({tb.timecode(start, fps, drop)}-"
                             f"{tb.timecode(start + frames, fps, drop)}, {frames} frames)", hint=_HINT)
        out.append(FrameRange(spec, first, stop))
    out.sort(key=lambda r: r.first)
    for a, b in zip(out, out[1:], strict=False):
        if b.first < a.stop:
            raise UsageError(f"--segments {segments.path}: ranges {a.spec.number} and {b.spec.number} overlap "
                             f"(frames {a.first}-{a.stop} and {b.first}-{b.stop})",
                             hint="give each frame at most one range")
    return out


def clip_ranges(ranges: Sequence[FrameRange], frames: int) -> list[SceneRange]:
    """The shots of a single clip cut at the range boundaries: ``seg_NNN`` per range (named by the range's
    ``name`` where given) and a ``lipsync: false`` ``pass_NNN`` per stretch no range covers."""
    from lipsyncctl.timeline.scenes import SceneRange

    out: list[SceneRange] = []
    at, passes = 0, 0
    for r in ranges:
        if r.first > at:
            passes += 1
            out.append(SceneRange(at, r.first, f"pass_{passes:03d}", lipsync=False))
        out.append(SceneRange(r.first, r.stop, r.spec.name or f"seg_{r.spec.number:03d}"))
        at = r.stop
    if at < frames:
        out.append(SceneRange(at, frames, f"pass_{passes + 1:03d}", lipsync=False))
    return out


def apply_ranges(timeline: Any, resolver: MediaResolver, segments: SegmentsFile, *, handles: int = 0) -> list[str]:
    """Put each range's options on the shots of ``timeline`` it covers (record time), as a ``lipsync``
    marker on the shot's clip (read by :func:`~lipsyncctl.timeline.shots.shot_options`, after the clip's
    own metadata: the range wins). Returns warnings (a range that covers no shot).

    Raises:
        UsageError: a bad range (:func:`frame_ranges`), or a range that splits a shot (names both).
    """
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import child_at
    from lipsyncctl.timeline.segments import plan_timeline

    plan = plan_timeline(timeline, resolver, handles=handles)
    ranges = frame_ranges(segments, plan.fps, plan.global_start, plan.duration, f"the edit {plan.name!r}",
                          plan.drop_frame)
    shots = [*plan.segments, *(s.source for s in plan.skipped if s.source is not None)]
    warnings: list[str] = []
    for r in ranges:
        covered = []
        for seg in shots:
            lo, hi = seg.record_start, seg.record_start + seg.record_frames
            if hi <= r.first or lo >= r.stop:
                continue
            if lo < r.first or hi > r.stop:
                tc = plan.timecode
                raise UsageError(f"--segments {segments.path}: range {r.spec.number} ({tc(r.first)}-{tc(r.stop)}) "
                                 f"splits shot {seg.name!r} ({tc(lo)}-{tc(hi)})",
                                 hint="a range covers whole shots of an edit: move its ends to the shot's cuts")
            covered.append(seg)
        if not covered:
            warnings.append(f"--segments range {r.spec.number}: covers no shot of the edit")
        for seg in covered:
            clip = child_at(timeline, seg.clip_path)
            marker = otio.schema.Marker(name=f"lipsync segments range {r.spec.number}",
                                        marked_range=clip.trimmed_range(),
                                        metadata={"lipsync": dict(r.spec.options)})
            clip.markers.append(marker)
    return warnings


def is_clip(path: Path) -> bool:
    """Whether ``path`` is a video file rather than an edit (by its name)."""
    from lipsyncctl.media.container import MEDIA_EXTS
    from lipsyncctl.timeline.source import adapter_for

    return adapter_for(path) is None and path.suffix.lower() in MEDIA_EXTS


def write_clip_edit(video: Path, folder: Path, segments: SegmentsFile, *, inputs: Sequence[Path] = ()) -> Path:
    """The edit of one clip cut at the ranges of ``segments`` (:func:`clip_ranges`; record = source times,
    from the clip's timecode), written atomically to ``folder/segments.otio``; the ranges' options are put
    on it by :func:`apply_ranges` when the job reads it.

    Raises:
        MediaError: ``video`` is not a readable video (exit 5); UsageError: a bad range (exit 2).
    """
    import opentimelineio as otio

    from lipsyncctl.errors import MediaError
    from lipsyncctl.media.atomic import atomic_output
    from lipsyncctl.timeline.scenes import ranges_timeline
    from lipsyncctl.timeline.source import probe_media

    if not video.is_file():
        raise MediaError(f"{video}: file not found", hint="check the --video path")
    facts = probe_media(video)
    fps = Fraction(facts.fps)
    start = tb.tag_frames(facts.start_timecode, fps)
    ranges = frame_ranges(segments, fps, start, facts.frames, f"the clip {video.name}",
                          tb.is_drop_frame(facts.start_timecode, fps))
    timeline = ranges_timeline(video, str(video.resolve()), clip_ranges(ranges, facts.frames), fps=fps,
                               media_start=start, media_frames=facts.frames, name=video.stem,
                               metadata={"segments": {"clip": str(video.resolve()), "file": str(segments.path)}})
    path = folder / SEGMENTS_NAME
    with atomic_output(path, inputs=[video, segments.path, *inputs]) as tmp:
        otio.adapters.write_to_file(timeline, str(tmp), adapter_name="otio_json")
    return path
