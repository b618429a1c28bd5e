"""Planning: which frames of which media each visible shot of the edit shows (DESIGN.md §4).

A **segment** is a visible stretch of one enabled clip with a media reference on the picture: its record
range (timeline frames, 0 = the timeline's first frame, which may be 01:00:00:00), its source range in
the media file's own frames (frame 0 = the file's first frame; OTIO source times are in the media's
timecode, so the media's start timecode is subtracted), and the handles rendered around it.

Rules:
- Video tracks are flattened: a higher track hides what is under it; nested stacks and nested tracks are
  walked recursively (their tracks sit just above the track that holds them). Disabled clips and
  disabled tracks are transparent; clips with missing media, time warps or generators still hide
  what is under them (as in an NLE), and are reported as skipped.
- A skipped clip whose media is there (``lipsync: false``, a time warp) is a **pass-through** shot: planned
  as a segment would be (:attr:`SkippedItem.source`, a negative index, no handles), never rendered, left
  alone in the relinked timelines; the conform plays its source (a time warp at its speed,
  :func:`_time_warp`). Missing or unreadable media, a source range outside the file and an EDL event whose
  file has the wrong name (below) have no picture: the conform shows black there.
- Transitions are boundaries: each side keeps its own segment, and the handle each side needs for the
  transition (``out_offset`` after the outgoing clip, ``in_offset`` before the incoming one) is rendered.
  A transition between two adjacent segments is planned as a :class:`TransitionSpan` (record frames
  ``cut - in_offset .. cut + out_offset``), which the conform plays as a dissolve; a side may be a
  pass-through shot (its source runs on into the transition); one with a side that shows nothing (a gap,
  a clip without media) stays a cut there.
- Each segment's id (its render file's name, its report row) is its clip name and record-in timecode,
  ``sh020_01-00-04-12``: stable when other shots are skipped or added.
- All arithmetic is on whole frames at exact rates (:mod:`lipsyncctl.media.timecode`).
- An EDL names each event's source by its clip name and reel, and a path where it states one: the file
  found for it must carry that name (file name or stem) or that reel (the file's reel tag, or its name
  truncated as EDL reels are), or be the file OTIO's truncated-reel comment names; a file that matches none
  is not rendered (skipped, with a warning saying what was compared).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from lipsyncctl.errors import MediaError
from lipsyncctl.media import timecode as tb
from lipsyncctl.media.probe import is_interlaced
from lipsyncctl.timeline.shots import ShotOptions, shot_options
from lipsyncctl.timeline.source import (
    MediaFacts,
    MediaResolver,
    is_drop_frame_timeline,
    link_by_name,
    probe_media,
)


@dataclass
class Segment:
    """One visible shot to lip-sync. Frame numbers are exact integers (see the module docstring)."""

    index: int
    id: str
    name: str
    clip_path: tuple[int, ...]     # child indices from timeline.tracks down to the clip
    track: str
    media: Path
    media_url: str
    media_fps: Fraction
    media_size: tuple[int, int]    # (width, height)
    media_start: int               # the media's start timecode in frames at media_fps
    record_start: int              # timeline frames from the timeline's first frame
    record_frames: int
    source_start: int              # first visible frame, index into the file
    source_frames: int             # visible frames at media_fps
    handle_in: int = 0
    handle_out: int = 0
    whole_clip: bool = True        # no higher track hides part of what the clip shows here
    clip_offset: int = 0           # timeline frames from the clip's record start to the segment's
    options: ShotOptions = field(default_factory=ShotOptions)
    warnings: list[str] = field(default_factory=list)
    #: media frames per record frame relative to the plain rate conversion: a pass-through shot's time
    #: warp (0 = a still of its first frame); always 1 for a lip-synced shot
    speed: Fraction = Fraction(1)
    media_drop: bool = False       # the media's timecode tag counts drop frame (``;``)
    media_fields: str | None = None  # the media's field order when it is interlaced ("tt", "bb"...), else None
    media_hdr10: bool = False  # the media carries HDR10 static metadata (mastering display, light level)

    @property
    def render_start(self) -> int:
        """First rendered source frame (with the head handle)."""
        return self.source_start - self.handle_in

    @property
    def render_frames(self) -> int:
        return self.source_frames + self.handle_in + self.handle_out

    @property
    def render_timecode(self) -> str:
        """The source timecode of the render's first frame (its head handle), in the media's timecode (drop
        frame where its tag is): written into the render, so it relinks by timecode."""
        return tb.timecode(self.media_start + self.render_start, self.media_fps, self.media_drop)

    def to_dict(self, timeline_fps: Fraction, global_start: int, drop: bool = False) -> dict[str, Any]:
        rec = self.record_start + global_start
        return {
            "index": self.index, "id": self.id, "name": self.name, "track": self.track,
            "media": str(self.media), "url": self.media_url, "media_fps": tb.fraction_str(self.media_fps),
            "record": {"start": self.record_start, "frames": self.record_frames,
                       "in": tb.timecode(rec, timeline_fps, drop),
                       "out": tb.timecode(rec + self.record_frames, timeline_fps, drop)},
            "source": {"start": self.source_start, "frames": self.source_frames,
                       "in": tb.timecode(self.media_start + self.source_start, self.media_fps, self.media_drop)},
            "handles": [self.handle_in, self.handle_out],
            "render": {"start": self.render_start, "frames": self.render_frames},
            "options": self.options.to_dict(), "warnings": list(self.warnings),
        }


@dataclass
class SkippedItem:
    """A clip that is not lip-synced, and why (``disabled``, ``missing media``, ``time warp``...)."""

    name: str
    reason: str
    record_start: int
    record_frames: int
    clip_path: tuple[int, ...] = ()
    #: a pass-through shot (``lipsync: false``, a time warp, with its media there): the shot as it would
    #: have been planned (a negative index, no handles, never rendered), so the conform shows its source
    #: picture; None where there is none to show (missing/unreadable media, wrong media, a generator)
    source: Segment | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "record_start": self.record_start,
                "record_frames": self.record_frames, "conform": "source" if self.source else "black"}


@dataclass
class TransitionSpan:
    """A transition between two adjacent segments, in record frames: it runs over ``start .. end`` around
    the ``cut`` (where the outgoing segment ends and the incoming one starts). ``before``/``after`` are
    OTIO's ``in_offset``/``out_offset``, cut to what is visible of each side. Over those frames the
    outgoing shot goes on into its tail handle and the incoming one starts from its head handle."""

    outgoing: int              # segment index; negative: a pass-through shot (TimelinePlan.shot)
    incoming: int
    cut: int
    before: int
    after: int
    kind: str                  # OTIO transition_type (SMPTE_Dissolve, Custom_Transition...)
    name: str = ""

    @property
    def start(self) -> int:
        return self.cut - self.before

    @property
    def end(self) -> int:
        return self.cut + self.after

    @property
    def frames(self) -> int:
        return self.before + self.after

    def to_dict(self) -> dict[str, Any]:
        return {"outgoing": self.outgoing, "incoming": self.incoming, "cut": self.cut,
                "before": self.before, "after": self.after, "kind": self.kind, "name": self.name}


@dataclass
class TimelinePlan:
    """The segments of one edit, in record order, and what was left out."""

    name: str
    fps: Fraction
    global_start: int          # the timeline's first frame as a frame count (01:00:00:00 -> 86400 at 24)
    duration: int              # timeline frames
    segments: list[Segment]
    skipped: list[SkippedItem]
    warnings: list[str]
    transitions: list[TransitionSpan] = field(default_factory=list)  # in record order, never overlapping
    drop_frame: bool = False   # the edit counts drop-frame timecode (29.97/59.94: :func:`is_drop_frame_timeline`)

    def timecode(self, frame: int) -> str:
        """The record timecode of timeline frame ``frame`` (0 = the first), as the edit counts it (drop frame or not)."""
        return tb.timecode(self.global_start + frame, self.fps, self.drop_frame)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "fps": tb.fraction_str(self.fps),
            "start": self.timecode(0), "global_start_frames": self.global_start,
            "duration_frames": self.duration, "drop_frame": self.drop_frame,
            "segments": [s.to_dict(self.fps, self.global_start, self.drop_frame) for s in self.segments],
            "transitions": [t.to_dict() for t in self.transitions],
            "skipped": [s.to_dict() for s in self.skipped], "warnings": list(self.warnings),
        }

    def pictures(self) -> list[Segment]:
        """What the conform shows, in record order: the segments and the source of every pass-through
        shot (``lipsync: false``, time warps; their indices are -1, -2...)."""
        kept = [s.source for s in self.skipped if s.source is not None]
        return sorted([*self.segments, *kept], key=lambda s: s.record_start)

    def shot(self, index: int) -> Segment:
        """The segment (``index >= 0``) or pass-through shot (``index < 0``) a transition names."""
        if index >= 0:
            return self.segments[index]
        return next(s.source for s in self.skipped if s.source is not None and s.source.index == index)


@dataclass
class _Piece:
    """A clip's visible record stretch before flattening (internal)."""

    priority: tuple[int, ...]
    lo: int
    hi: int
    clip: Any
    path: tuple[int, ...]
    track: str
    clip_lo: int               # the clip's own record range (for the source mapping)
    clip_hi: int
    need_in: int = 0           # handle frames transitions need (timeline frames)
    need_out: int = 0
    trans_in: Any = None       # the OTIO transition before / after the clip (kept on the visible part at its edge)
    trans_out: Any = None
    covered: bool = False      # a higher track hides some of what its clip shows here (_flatten)


def timeline_rate(timeline: Any) -> Fraction:
    """The edit's rate: the global start time's rate, else the first clip's, else 24."""
    if timeline.global_start_time is not None:
        return tb.exact_rate(timeline.global_start_time.rate)
    for clip in timeline.find_clips():
        return tb.exact_rate(clip.trimmed_range().duration.rate)
    return Fraction(24)


def _whole_media(timeline: Any, resolver: MediaResolver, probe: Callable[..., MediaFacts]) -> None:
    """Give a clip that states no range (neither a source range nor its media's available range: valid OTIO, the
    clip is its whole media, as simple scripts and some exporters write) its media's range, probed: start timecode
    and frames at the media's rate.

    Raises:
        MediaError: such a clip's media is not found (its length, and so the edit's, cannot be known).
    """
    import opentimelineio as otio

    from lipsyncctl.media.audio import audio_length

    for clip in timeline.find_clips():
        track = clip.parent()
        while track is not None and not isinstance(track, otio.schema.Track):  # (a clip in a nested stack)
            track = track.parent()
        sound = track is not None and track.kind == otio.schema.TrackKind.Audio
        ref = clip.media_reference
        if clip.source_range is not None or getattr(ref, "available_range", None) is not None:
            continue
        url = getattr(ref, "target_url", None)
        path = resolver.resolve(url) if url else None
        if path is None:
            raise MediaError(f"clip {clip.name!r}{' (sound)' if sound else ''}: no source range, and its media "
                             f"({url or 'none'}) is not found to take its whole length", hint="find the media "
                             "(--media-root DIR, --relink OLD=NEW), or give the clip a source range in the edit")
        if sound:  # (a sound file: its samples at its rate)
            samples, rate = audio_length(path)
            ref.available_range = otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate),
                                                          otio.opentime.RationalTime(samples, rate))
            continue
        facts = probe(path)
        ref.available_range = tb.time_range(tb.tag_frames(facts.start_timecode, facts.fps), facts.frames,
                                            facts.fps)


def plan_timeline(
    timeline: Any,
    resolver: MediaResolver,
    *,
    handles: int = 0,
    probe: Callable[..., MediaFacts] = probe_media,
) -> TimelinePlan:
    """Plan the segments of ``timeline`` (an ``otio.schema.Timeline``).

    Args:
        resolver: finds each media reference's file.
        handles: extra source frames to render before and after each segment where the media has them.
        probe: reads a media file's rate/frame count (cached per file); an image sequence's rate, from its
            reference, comes second.
    """
    import opentimelineio as otio

    _whole_media(timeline, resolver, probe)
    fps = timeline_rate(timeline)
    gstart = tb.to_frames(timeline.global_start_time, fps) if timeline.global_start_time is not None else 0
    pieces: list[_Piece] = []
    for k, track in enumerate(timeline.tracks):
        if isinstance(track, otio.schema.Track) and track.kind == otio.schema.TrackKind.Video and track.enabled:
            _walk_track(track, (k,), (k,), 0, None, fps, pieces)
    duration = tb.to_frames(timeline.duration(), fps)
    visible = _flatten(pieces)
    probed: dict[tuple[Path, Fraction | None], MediaFacts] = {}
    segments: list[Segment] = []
    skipped: list[SkippedItem] = []
    warnings: list[str] = []
    by_clip: dict[tuple[int, ...], int] = {}
    shown: list[tuple[Segment, _Piece]] = []  # segments and pass-through shots, with their visible parts
    check_names = "edl_rate" in timeline.metadata.get("lipsyncctl", {})  # read from an EDL
    for piece in visible:
        seg_or_skip = _segment(piece, resolver, fps, handles, probe, probed, check_names)
        if isinstance(seg_or_skip, SkippedItem):
            skipped.append(seg_or_skip)
            if seg_or_skip.source is not None:
                seg_or_skip.source.index = -1 - sum(1 for s, _ in shown if s.index < 0)
                shown.append((seg_or_skip.source, piece))
            continue
        by_clip[piece.path] = by_clip.get(piece.path, 0) + 1
        seg_or_skip.clip_offset = piece.lo - piece.clip_lo
        # a higher track hides part of it (its head or tail too; a nested stack's trim is not a cover: the clip stays
        # whole in the relinked edit)
        seg_or_skip.whole_clip = not piece.covered
        if note := _effects_note(piece.clip):  # in the shot's report, and said (below)
            seg_or_skip.warnings.append(note)
        segments.append(seg_or_skip)
        shown.append((seg_or_skip, piece))
    for i, seg in enumerate(segments):
        seg.index = i
        if by_clip[seg.clip_path] > 1:
            seg.warnings.append("the clip is split by a clip on a higher track; each visible part is its own shot")
    _name_segments(segments, fps, gstart)
    # a shot's own warnings (effects, short handles for a dissolve, another rate) are said by the run too, not only in
    # its row of the report
    warnings += [f"{seg.id}: {w}" for seg in segments for w in seg.warnings]
    transitions = _transitions([s for s, _ in shown], [p for _, p in shown], fps, warnings)
    for item in skipped:  # (a generator, black or bars, is no picture to lip-sync: in the plan's skipped list only,
        # not a warning every run of an EDL with BL events repeats)
        if not item.reason.startswith("generator ("):
            warnings.append(f"{item.name}: skipped ({item.reason})")
    skipped.extend(_disabled(timeline, fps))
    return TimelinePlan(name=timeline.name or "timeline", fps=fps, global_start=gstart, duration=duration,
                        segments=segments, skipped=skipped, warnings=warnings, transitions=transitions,
                        drop_frame=is_drop_frame_timeline(timeline, fps))


def _walk_track(track: Any, path: tuple[int, ...], priority: tuple[int, ...], offset: int,
                window: tuple[int, int] | None, fps: Fraction, out: list[_Piece]) -> None:
    """Collect the clips of ``track``; its time ``t`` is record frame ``offset + frames(t)``."""
    import opentimelineio as otio

    children = list(track)
    for i, child in enumerate(children):
        if isinstance(child, (otio.schema.Gap, otio.schema.Transition)):
            continue
        rng = track.range_of_child_at_index(i)
        lo = offset + tb.to_frames(rng.start_time, fps)
        hi = lo + tb.to_frames(rng.duration, fps)
        vis = (lo, hi) if window is None else (max(lo, window[0]), min(hi, window[1]))
        if vis[1] <= vis[0] or not child.enabled:
            continue
        if isinstance(child, otio.schema.Clip):
            piece = _Piece(priority, vis[0], vis[1], child, path + (i,), track.name, lo, hi)
            if i > 0 and isinstance(children[i - 1], otio.schema.Transition):
                piece.need_in = tb.to_frames(children[i - 1].in_offset, fps)
                piece.trans_in = children[i - 1]
            if i + 1 < len(children) and isinstance(children[i + 1], otio.schema.Transition):
                piece.need_out = tb.to_frames(children[i + 1].out_offset, fps)
                piece.trans_out = children[i + 1]
            out.append(piece)
        elif isinstance(child, (otio.schema.Stack, otio.schema.Track)):
            inner = lo - tb.to_frames(child.trimmed_range().start_time, fps)
            tracks = [child] if isinstance(child, otio.schema.Track) else list(child)
            for j, sub in enumerate(tracks):
                if not isinstance(sub, otio.schema.Track) or not sub.enabled:
                    continue
                if sub.kind != otio.schema.TrackKind.Video:
                    continue
                sub_path = path + (i,) if isinstance(child, otio.schema.Track) else path + (i, j)
                _walk_track(sub, sub_path, priority + (j,), inner, vis, fps, out)


def _flatten(pieces: list[_Piece]) -> list[_Piece]:
    """Higher priority hides lower: subtract covered stretches, return the visible parts in record order."""
    covered: list[tuple[int, int]] = []
    visible: list[_Piece] = []
    for p in sorted(pieces, key=lambda q: q.priority, reverse=True):
        parts = [(p.lo, p.hi)]
        for c_lo, c_hi in covered:
            nxt = []
            for lo, hi in parts:
                if c_hi <= lo or c_lo >= hi:
                    nxt.append((lo, hi))
                    continue
                if lo < c_lo:
                    nxt.append((lo, c_lo))
                if c_hi < hi:
                    nxt.append((c_hi, hi))
            parts = nxt
        for lo, hi in parts:
            head, tail = lo == p.clip_lo, hi == p.clip_hi
            visible.append(_Piece(p.priority, lo, hi, p.clip, p.path, p.track, p.clip_lo, p.clip_hi,
                                  p.need_in if head else 0, p.need_out if tail else 0,
                                  p.trans_in if head else None, p.trans_out if tail else None,
                                  covered=(lo, hi) != (p.lo, p.hi)))
        covered.append((p.lo, p.hi))
    return sorted(visible, key=lambda q: q.lo)


def _transitions(segments: list[Segment], pieces: list[_Piece], fps: Fraction,
                 warnings: list[str]) -> list[TransitionSpan]:
    """The transitions between adjacent shots the conform shows, segments and pass-through shots
    (``pieces[i]`` is the visible part ``segments[i]`` comes from). Each side is cut to what is visible of its segment and to the previous span, so spans never
    overlap. Every type plays as a dissolve (a wipe or custom effect keeps its timing, with a warning:
    the conform is a reference picture, the editor's own NLE renders the effect from the relinked timeline)."""
    spans: list[TransitionSpan] = []
    for i in range(len(segments) - 1):
        a, b = segments[i], segments[i + 1]
        tr = pieces[i].trans_out
        # the same transition: b is the clip after the one after a on a's track
        same = pieces[i + 1].trans_in is not None and b.clip_path == (*a.clip_path[:-1], a.clip_path[-1] + 2)
        if tr is None or not same or a.record_start + a.record_frames != b.record_start:
            continue
        cut = b.record_start
        floor = max(a.record_start, spans[-1].end if spans else 0)
        before = max(0, min(tb.to_frames(tr.in_offset, fps), cut - floor))
        after = max(0, min(tb.to_frames(tr.out_offset, fps), b.record_frames))
        if before + after == 0:
            continue
        kind = str(tr.transition_type or "")
        spans.append(TransitionSpan(a.index, b.index, cut, before, after, kind, tr.name or ""))
        if kind not in ("", "SMPTE_Dissolve"):  # no type: OTIO's default, a dissolve for its adapters
            warnings.append(f"{a.id or a.name} -> {b.id or b.name}: transition {kind} is played as a dissolve "
                            "in the conform")
    return spans


def _segment(piece: _Piece, resolver: MediaResolver, fps: Fraction, handles: int,
             probe: Callable[..., MediaFacts], probed: dict[tuple[Path, Fraction | None], MediaFacts],
             check_names: bool = False) -> Segment | SkippedItem:
    import opentimelineio as otio

    clip = piece.clip
    warp = _time_warp(clip)  # not lip-synced; a pass-through shot where its media is there

    def skip(reason: str) -> SkippedItem:
        if warp is not None and reason != warp[1]:
            reason = f"{warp[1]}; {reason}"  # the time warp first: it is why the clip is not lip-synced
        return SkippedItem(clip.name, reason, piece.lo, piece.hi - piece.lo, piece.path)

    ref = clip.media_reference
    if isinstance(ref, otio.schema.MissingReference) and (linked := link_by_name(clip, resolver)) is not None:
        ref = otio.schema.ExternalReference(target_url=linked)
    if isinstance(ref, otio.schema.GeneratorReference):
        return skip(f"generator ({ref.generator_kind or 'unknown'})")
    sequence = isinstance(ref, otio.schema.ImageSequenceReference)
    if not isinstance(ref, otio.schema.ExternalReference) and not sequence:
        return skip("missing media (no media reference)" if isinstance(ref, otio.schema.MissingReference)
                    else f"unsupported media reference {type(ref).__name__}")
    url = sequence_url(ref) if sequence else ref.target_url
    media = resolver.resolve(url, sequence=sequence)
    if media is None:  # where it was looked for: the timeline's folder (a relative URL), --relink, --media-root
        looked = ", ".join(dict.fromkeys(os.path.normpath(c) for c in resolver.candidates(url)))  # (tl/../in: in)
        return skip(f"missing media: {url}" + (f" (looked for {looked})" if looked else ""))
    rate = _sequence_rate(ref, clip) if sequence else None
    if sequence:
        gap = _sequence_gap(ref, media) if rate else "unsupported media reference: an image sequence stating no rate"
        if gap:
            return skip(gap)
    options = shot_options(clip)
    off = options.enabled is False  # left alone: planned without handles only for the conform's picture
    passing = warp[1] if warp else "lipsync: false" if off else None  # a pass-through shot: why
    known = (media, rate)  # (a sequence is probed at its reference's rate: two references, two rates)
    try:
        facts = probed[known] if known in probed else probed.setdefault(
            known, probe(media, rate) if rate else probe(media))
    except MediaError as exc:
        return skip("lipsync: false" if off else f"unreadable media: {exc}")
    if check_names and (mismatch := name_mismatch(clip, facts)):
        return skip("lipsync: false" if off else mismatch)  # left alone, but not from the wrong picture
    mfps = facts.fps
    media_start = _media_start(ref, facts, mfps)
    src_time = clip.trimmed_range().start_time
    speed = warp[0] if warp else Fraction(1)
    # visible record frame lo shows the source time src + (lo - clip_lo) / fps (times the speed of a warp)
    first = round((tb.seconds(src_time) + Fraction(piece.lo - piece.clip_lo) / fps * speed) * mfps) - media_start
    count = round(Fraction(piece.hi - piece.lo) * mfps / fps)
    if warp is not None:  # the frames the warp reads (record frame k: k * speed); past the media's end: held
        count = min(math.floor((piece.hi - piece.lo - 1) * mfps / fps * speed) + 1, facts.frames - first)
    if first < 0 or count <= 0 or first + count > facts.frames:
        return skip("lipsync: false" if off else
                    f"source range {first}..{first + count} outside the media's {facts.frames} frames")
    seg = Segment(index=0, id="", name=clip.name or media.stem, clip_path=piece.path, track=piece.track,
                  media=media, media_url=url, media_fps=mfps, media_size=(facts.width, facts.height),
                  media_start=media_start, record_start=piece.lo, record_frames=piece.hi - piece.lo,
                  source_start=first, source_frames=count, options=options, speed=speed,
                  media_drop=tb.is_drop_frame(facts.start_timecode, mfps),
                  media_fields=facts.field_order if is_interlaced(facts.field_order) else None,
                  media_hdr10=facts.hdr10)
    if passing is not None:
        seg.index = -1  # numbered -1, -2... by plan_timeline
        item = skip(passing)
        item.source = seg
        return item
    # the transitions' own need (a 2+2 dissolve's 2 frames), then --handles' more where the media has them
    dissolve_in = round(Fraction(piece.need_in) * mfps / fps)
    dissolve_out = round(Fraction(piece.need_out) * mfps / fps)
    seg.handle_in = min(max(handles, dissolve_in), first)
    seg.handle_out = min(max(handles, dissolve_out), facts.frames - first - count)
    if seg.handle_in < dissolve_in:  # (short of --handles alone is no fault: the render takes what there is)
        seg.warnings.append(f"the transition before needs {dissolve_in} handle frames, the media has {seg.handle_in}")
    if seg.handle_out < dissolve_out:
        seg.warnings.append(f"the transition after needs {dissolve_out} handle frames, the media has "
                            f"{seg.handle_out}")
    if mfps != fps:
        seg.warnings.append(f"media at {float(mfps):.3f} fps on a {float(fps):.3f} fps timeline")
    return seg


def _effects_note(clip: Any) -> str | None:
    """What to say of ``clip``'s effects that are not time warps (a resize, a flop, a colour correction from the
    NLE): the render does not apply them. None when it has none."""
    import opentimelineio as otio

    effects = [e.effect_name or e.name or type(e).__name__ for e in clip.effects
               if not isinstance(e, otio.schema.LinearTimeWarp | otio.schema.FreezeFrame) and _time_remap(e) is None]
    if not effects:
        return None
    return (f"effect{'s' * (len(effects) > 1)} {', '.join(effects)} not rendered: the render is the media as it is, "
            "the relinked timeline keeps the effect for the NLE, the conform shows the shot without it")


def _time_warp(clip: Any) -> tuple[Fraction, str] | None:
    """The clip's time warps as ``(speed, reason)``: media frames per record frame relative to the plain
    rate conversion, and why the clip is not lip-synced; None without a time warp (or only 1x ones).

    Linear time warps multiply (OTIO: record time ``t`` of the clip shows source time ``start + t * s``).
    A freeze frame, and a reverse (negative) speed, which the conform cannot stream (it reads forward,
    one frame held), play as a still of the clip's first source frame (speed 0); so does a variable speed (an
    FCP XML time remap's keyframed graph). FCP XML's time remap filter, which OTIO's reader keeps as a plain
    effect, counts as the speed it states (:func:`_time_remap`). Other effects are ignored."""
    import opentimelineio as otio

    speed, said = Fraction(1), []
    for effect in clip.effects:
        remap = _time_remap(effect)
        if isinstance(effect, otio.schema.FreezeFrame):
            speed, said = Fraction(0), [*said, "freeze frame"]
        elif isinstance(effect, otio.schema.LinearTimeWarp) and effect.time_scalar != 1:
            scalar = Fraction(effect.time_scalar).limit_denominator(10000)
            speed, said = speed * max(scalar, Fraction(0)), [*said, f"speed {effect.time_scalar:g}x"]
        elif remap is None or remap == 1:
            continue
        elif remap == "variable":
            speed, said = Fraction(0), [*said, "variable speed"]
        else:
            speed, said = speed * max(remap, Fraction(0)), [*said, f"speed {float(remap):g}x"]
    return (speed, f"time warp: {', '.join(said)} (not supported)") if said else None


def _time_remap(effect: Any) -> Fraction | str | None:
    """The speed an FCP 7 XML time remap filter states (``effectid`` ``timeremap``, which OTIO's FCP reader keeps
    as a plain effect with its parameters): ``speed`` percent, negative when ``reverse`` is on; ``"variable"``
    for a keyframed speed (``variablespeed``, or a speed that is not a number); None for any other effect."""
    fcp = (effect.metadata.get("fcp_xml") or {}) if effect.metadata else {}
    if str(fcp.get("effectid", "")).lower() != "timeremap":
        return None
    params = fcp.get("parameter") or []
    params = [params] if hasattr(params, "get") else list(params)  # one parameter, or a list (OTIO's AnyVector)
    values = {str(p.get("parameterid", "")).lower(): p.get("value") for p in params if hasattr(p, "get")}
    if str(values.get("variablespeed", "0")).strip().upper() in ("1", "TRUE"):
        return "variable"
    try:
        speed = Fraction(str(values.get("speed", "100")).strip()) / 100
    except (ValueError, ZeroDivisionError):
        return "variable"
    return -abs(speed) if str(values.get("reverse", "FALSE")).strip().upper() in ("1", "TRUE") else speed


def _media_start(ref: Any, facts: MediaFacts, mfps: Fraction) -> int:
    """The media's first frame as a timecode frame count: its available range, else its timecode tag. An image
    sequence's: the time of the first file on disk, the reference's ``start_frame`` being the file shown at the
    start of its available range (at time 0 without one), one file a frame."""
    import opentimelineio as otio

    if isinstance(ref, otio.schema.ImageSequenceReference):
        from lipsyncctl.media.container import sequence_numbers

        base = tb.to_frames(ref.available_range.start_time, mfps) if ref.available_range is not None else 0
        return base - ref.start_frame + sequence_numbers(facts.path)[0]
    if ref.available_range is not None:
        return tb.to_frames(ref.available_range.start_time, mfps)
    return tb.tag_frames(facts.start_timecode, mfps)


def sequence_url(ref: Any) -> str:
    """An OTIO ``ImageSequenceReference``'s files as an ffmpeg ``image2`` pattern URL (``.../shot.%04d.exr``),
    which the readers take (:func:`lipsyncctl.media.container.is_image_sequence`)."""
    pad = ref.frame_zero_padding
    return ref.abstract_target_url(f"%0{pad}d" if pad else "%d")


def _sequence_rate(ref: Any, clip: Any) -> Fraction | None:
    """An ``ImageSequenceReference``'s rate: its own, else (OTIO's default of 1 left) its available range's or the
    clip's; None when none says more than 1."""
    spans = (ref.available_range, clip.source_range)
    for rate in (ref.rate, *(span.duration.rate for span in spans if span is not None)):
        if rate and rate > 1:
            return tb.exact_rate(rate)
    return None


def _sequence_gap(ref: Any, pattern: Path) -> str | None:
    """Why the image sequence ``pattern`` (of ``ref``) cannot be read as one picture a file, or None: a frame step
    other than 1, or a number missing between its first and last file (:func:`~lipsyncctl.media.container.sequence_gap`)."""
    from lipsyncctl.media.container import sequence_gap

    if ref.frame_step != 1:
        return f"unsupported media reference: image sequence with a frame step of {ref.frame_step}"
    gap = sequence_gap(pattern)
    return f"missing media: {gap}" if gap else None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


#: the comment OTIO's CMX 3600 writer adds where it made the reel up from the file's name (``clip.mp4`` ->
#: ``clipmp4``); its reader keeps it among the clip's ``cmx_3600`` ``comments``
TRUNCATED_REEL = re.compile(r"^\*?\s*OTIO TRUNCATED REEL NAME FROM:\s*(.+)$", re.IGNORECASE)


def name_mismatch(clip: Any, facts: MediaFacts) -> str | None:
    """Why the file ``facts`` is not the source an EDL event names (None: it is, or nothing to tell by).

    The event's clip name must be the file's name or stem, or its reel the file's reel tag or the start
    of its stem or name (EDL reels are file names cut to 8 letters and digits; OTIO's writer keeps an
    extension holding a digit: ``clipmp4``), or the file its ``* OTIO TRUNCATED REEL NAME FROM:`` comment
    says the reel was made from. (Not the file its ``* FROM CLIP:`` path names: that path is how the file was
    found, so it would pass every event; a comment attached to the wrong event is what this check is for.) A clip
    name that is only the event number (OTIO's reader names unnamed events so) and the reels ``AX``/``BL`` name
    nothing."""
    name = clip.name or ""
    names = [] if not name or name.isdigit() else [name]
    meta = clip.metadata.get("cmx_3600", {}) or {}
    reel = meta.get("reel") or ""
    reels = [reel] if reel and reel.upper() not in ("AX", "BL", "BLACK") else []
    if not names and not reels:
        return None
    stem, file_name = _norm(facts.path.stem), _norm(facts.path.name)
    if any(_norm(n) in (file_name, stem) for n in names):
        return None
    if any(_norm(r) and (stem.startswith(_norm(r)) or file_name.startswith(_norm(r))
                         or _norm(r) == _norm(facts.reel or "")) for r in reels):
        return None
    made_from = [m[1].strip() for c in meta.get("comments", []) or [] if (m := TRUNCATED_REEL.match(str(c)))]
    if facts.path.name in (Path(MediaResolver.url_path(u)).name for u in made_from):
        return None
    said = " and ".join([f"clip name {n!r}" for n in names] + [f"reel {r!r}" for r in reels])
    own = f" (reel {facts.reel!r})" if facts.reel else ""
    return (f"wrong media? the EDL names {said}, the file found is {facts.path.name}{own}; "
            f"relink the right file (--relink/--media-root) or fix the event's name")


def _disabled(timeline: Any, fps: Fraction) -> list[SkippedItem]:
    """Disabled clips, reported (they are transparent, so nothing of theirs is a segment)."""
    out = []
    for clip in timeline.find_clips():
        if not clip.enabled:
            rng = clip.trimmed_range_in_parent()
            start = tb.to_frames(rng.start_time, fps) if rng is not None else 0
            frames = tb.to_frames(rng.duration, fps) if rng is not None else 0
            out.append(SkippedItem(clip.name, "disabled", start, frames))
    return out


def _name_segments(segments: list[Segment], fps: Fraction, global_start: int) -> None:
    """Give each segment a stable id: its clip name and record-in timecode (``sh020_01-00-04-12``, counted
    non-drop frame in a drop-frame edit too, so that ids never change with how a timecode is shown).

    The id names the render file and the report row, so it must not depend on which other shots are
    planned (skipping a shot leaves every other id unchanged, unlike a running number). Visible segments
    never share a record frame, so the timecode alone makes ids unique; should two still collide (names
    cut to 40 characters, equal timecodes), the track's index and then a counter are appended, in record
    order, so the outcome is the same on every run."""
    seen: set[str] = set()
    for seg in segments:
        tc = tb.timecode(seg.record_start + global_start, fps).replace(":", "-")
        sid = f"{_slug(seg.name)}_{tc}"
        if sid in seen:
            sid = f"{sid}_t{seg.clip_path[0] + 1}"
        base, n = sid, 2
        while sid in seen:
            sid, n = f"{base}_{n}", n + 1
        seen.add(sid)
        seg.id = sid


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:40] or "shot"
