"""Per-language outputs: the relinked timeline(s) and the optional conformed full-length video.

The input timeline is never modified: a deep copy is relinked. Each lip-synced clip gets two media
references (OTIO 0.18 multi-reference): ``lipsync_<lang>`` (active) pointing at the rendered shot,
and ``DEFAULT_MEDIA``, the original. The clip's ``source_range`` is unchanged; the rendered file's
``available_range`` is placed in the original media's timecode (its frame 0 is the first handle
frame), so both references share the clip's source times and the record times stay the same. That
start is the timecode written into the render (:attr:`Segment.render_timecode`), and the clip's EDL reel
becomes the render's reel name (:func:`render_reel`, also written into it): an NLE relinks by either.

URLs keep the form the input used: a ``file://`` URL stays a URL, a plain path a plain path, and a
relative path stays relative, to the folder the output timeline is written to (FCP XML always gets
``file://`` URLs, which is what it holds). The language's dub is added on an audio track at its record
position (:func:`dub_track`); the original tracks are kept.

The conform (:func:`conform`) plays each planned transition (:class:`~lipsyncctl.timeline.segments.TransitionSpan`)
as a linear cross-dissolve (:func:`dissolve_weight`, :func:`mix`), streamed with one frame of each side held.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.media import timecode as tb
from lipsyncctl.timeline.edl_text import REVERSE, edl_counting, edl_speeds
from lipsyncctl.timeline.segments import TRUNCATED_REEL, Segment, TimelinePlan
from lipsyncctl.timeline.shots import is_option_marker
from lipsyncctl.timeline.source import MediaResolver, adapter_for
from lipsyncctl.timeline.types import ShotOutcome, ShotStatus

if TYPE_CHECKING:
    from lipsyncctl.timeline.dub import DubTrack

DEFAULT_KEY = "DEFAULT_MEDIA"
#: options of an adapter's writer: the AAF writer makes a new mob ID for a clip whose metadata names none
ADAPTER_OPTIONS: dict[str, dict[str, Any]] = {"AAF": {"use_empty_mob_ids": True}}
#: formats whose readers take every media path as a ``file://`` URL (FCP 7 XML ``pathurl``, AAF locators)
ABSOLUTE_URLS = ("fcp_xml", "AAF")


def child_at(timeline: Any, path: tuple[int, ...]) -> Any:
    """The item at ``path`` (child indices from ``timeline.tracks``)."""
    node = timeline.tracks
    for i in path:
        node = node[i]
    return node


def render_reel(key: str) -> str:
    """The reel (tape) name of a render: ``LS`` + 6 digits of its content key, 8 characters as CMX 3600
    reels are. Stable: a render reused from an earlier run has the same key, so the same reel."""
    return f"LS{key[:6].upper()}"


def use_original_media(timeline: Any) -> list[str]:
    """Make each clip of a timeline this tool relinked (``lipsync_<lang>`` active, the original kept as
    ``DEFAULT_MEDIA``) point at its original media again: a relinked edit fed back in (as it comes back from the
    NLE) rendered the new dub over the earlier lip-sync, and named that render as the next version's "original".
    Returns the warning saying so (none when no clip was relinked)."""
    moved: dict[str, int] = {}
    for clip in timeline.find_clips():
        key, refs = clip.active_media_reference_key, clip.media_references()
        if key.startswith("lipsync_") and DEFAULT_KEY in refs:
            # the renders go (no input of this run: one is the very file a reused render's cache entry is) and the
            # source's reel comes back
            clip.set_media_references({DEFAULT_KEY: refs[DEFAULT_KEY]}, DEFAULT_KEY)
            ours = clip.metadata.get("lipsyncctl") or {}
            if ours.get("source_reel") and "cmx_3600" in clip.metadata:
                clip.metadata["cmx_3600"]["reel"] = ours["source_reel"]
            moved[key[len("lipsync_"):]] = moved.get(key[len("lipsync_"):], 0) + 1
    if not moved:
        return []
    said = ", ".join(f"{n} of {lang}" for lang, n in moved.items())
    return [f"the edit's clips point at lipsyncctl renders ({said}): each is rendered from its original media "
            f"({DEFAULT_KEY}), not over the earlier lip-sync"]


def is_render(path: Path) -> bool:
    """Whether ``path`` is a render this tool delivered or cached (``OUT/LANG/vNNN/shots/...``, whose version folder
    holds its report, or ``OUT/.lipsyncctl/renders/...``): a shot whose media is one is lip-synced over a lip-sync."""
    parent = path.parent
    if parent.name == "renders" and parent.parent.name == ".lipsyncctl":
        return True
    return parent.name == "shots" and (parent.parent / "report.json").is_file() and \
        (parent.parent.parent.parent / ".lipsyncctl").is_dir()


#: metadata key of a reference whose URL is written relative to the output timeline's folder
_RELATIVE = "relative_url"


def _url_form(url: str) -> str:
    """How an input URL names its file: ``"url"`` (``file://``...), ``"absolute"`` or ``"relative"``."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", url) and not re.match(r"^[A-Za-z]:[\\/]", url):
        return "url"
    return "absolute" if Path(url).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", url) else "relative"


def _url_like(form: str, path: Path) -> str:
    """``path`` (absolute) as a URL of ``form``; a relative one is made relative when written."""
    return path.as_uri() if form == "url" else str(path)


def relinked_timeline(timeline: Any, plan: TimelinePlan, outcomes: dict[str, ShotOutcome],
                      language: str, dub: DubTrack | None = None) -> tuple[Any, list[str]]:
    """A copy of ``timeline`` whose finished shots point at their renders. Returns ``(timeline, warnings)``.

    ``outcomes`` maps segment id -> the shot's outcome (a segment without one is pending). ``dub``: the
    language's dub, added on an audio track (:func:`dub_track`) when it comes from a file. A clip a higher track
    splits into visible parts is cut there (:func:`_split`), each part on its own render.
    """
    out = timeline.deepcopy()
    out.name = f"{timeline.name or 'timeline'} [lipsync {language}]"
    warnings: list[str] = []
    clips = {seg.id: child_at(out, seg.clip_path) for seg in plan.segments}  # (before any clip is split)
    parts: dict[tuple[int, ...], list[Segment]] = {}  # a clip a higher track splits: its visible parts
    for seg in plan.segments:
        oc = outcomes.get(seg.id)
        if not seg.whole_clip:
            parts.setdefault(seg.clip_path, []).append(seg)
            continue
        clip = clips[seg.id]
        _mark(clip, oc, language)
        if oc is not None and oc.status == ShotStatus.DONE and oc.output:
            _point_at_render(clip, seg, oc, language)
    for segs in parts.values():
        clip = clips[segs[0].id]
        pieces = _split(clip, segs, plan.fps)
        if pieces is None:  # (its parts do not tile its range in whole frames: left as it was, said)
            done = [s.id for s in segs if (o := outcomes.get(s.id)) is not None and o.status == ShotStatus.DONE]
            if done:
                warnings.append(f"{', '.join(done)}: only part of the clip is visible; the timeline keeps its "
                                "original media there")
            _mark(clip, None, language)
            continue
        parent, at = clip.parent(), clip.parent().index(clip)
        del parent[at]
        for k, (piece, seg) in enumerate(pieces):
            oc = outcomes.get(seg.id) if seg is not None else None
            _mark(piece, oc, language)
            if seg is None:  # no shot: the covered span
                piece.metadata["lipsyncctl"]["status"] = "covered"
            if seg is not None and oc is not None and oc.status == ShotStatus.DONE and oc.output:
                _point_at_render(piece, seg, oc, language)
            parent.insert(at + k, piece)
    if dub is not None and not dub.source.startswith("track:"):
        urls = bool(plan.segments) and _url_form(plan.segments[0].media_url) == "url"
        out.tracks.append(dub_track(dub, plan, "url" if urls else "absolute"))  # given on the command line
    elif dub is not None:
        from lipsyncctl.timeline.dub import shifted_spans

        if shifted := [seg.id for *_, seg in shifted_spans(plan.segments, plan.fps, dub.rate)]:
            warnings.append(f"audio_offset of {', '.join(shifted)}: the timeline's audio track "
                            f"{dub.source[len('track:'):]!r} (the dub) is kept as it is, so an NLE plays it "
                            "unshifted there; the renders and the conform carry the shift")
    return out, warnings


def _mark(clip: Any, oc: ShotOutcome | None, language: str) -> None:
    """The clip's ``lipsyncctl`` metadata: the language, its shot's status (pending without an outcome) and key."""
    clip.metadata["lipsyncctl"] = {"language": language, "status": (oc.status if oc else ShotStatus.PENDING).value,
                                   "key": oc.key if oc else None}


def _point_at_render(clip: Any, seg: Segment, oc: ShotOutcome, language: str) -> None:
    """Make ``lipsync_<language>``, a reference to the shot's render (its handles in its available range), the
    clip's active media, the original kept as ``DEFAULT_MEDIA``; its EDL reel is the render's."""
    import opentimelineio as otio

    original = clip.media_reference
    form = _url_form(seg.media_url)
    rendered = otio.schema.ExternalReference(
        target_url=_url_like(form, Path(oc.output).resolve()),
        available_range=tb.time_range(seg.media_start + seg.render_start, seg.render_frames, seg.media_fps),
        metadata={"lipsyncctl": {"language": language, "handles": [seg.handle_in, seg.handle_out],
                                 "source": seg.media_url, "timecode": seg.render_timecode,
                                 "reel": render_reel(oc.key), _RELATIVE: form == "relative"},
                  # the FCP XML writer labels a file's timecode non-drop unless its reference says DF: a
                  # drop-frame render (as its source) was listed at another timecode (01:00:55:12 NDF for
                  # 01:00:59;00 DF, the same frame)
                  **({"fcp_xml": {"timecode": {"displayformat": "DF"}}} if seg.media_drop else {})},
    )
    key = f"lipsync_{language}"
    clip.set_media_references({DEFAULT_KEY: original.deepcopy(), key: rendered}, key)
    cmx = clip.metadata.setdefault("cmx_3600", {})
    if cmx.get("reel"):
        clip.metadata["lipsyncctl"]["source_reel"] = cmx["reel"]
    cmx["reel"] = render_reel(oc.key)
    if cmx.get("comments"):  # OTIO's note of the file the source's reel was made from, the source's own
        # FROM/TO CLIP (the writer states the render's): not this reel's, not this file's
        cmx["comments"] = [c for c in cmx["comments"] if not TRUNCATED_REEL.match(str(c))
                           and not SOURCE_FILE_NOTE.match(str(c))]


def _split(clip: Any, segs: list[Segment], fps: Fraction) -> list[tuple[Any, Segment | None]] | None:
    """A clip a higher track splits into visible parts (``segs``, each a shot), as consecutive copies of it: each
    visible part with its shot, the hidden spans between (and at its ends) with None, their source ranges tiling the
    clip's. So each part can point at its own render, as an NLE sees the clip (it kept the original media for the
    whole clip: the visible parts played un-dubbed). None where the parts do not tile the clip's range in whole
    frames at its rate. A marker stays on the piece its time is in; a hidden piece is marked ``covered``."""
    import opentimelineio as otio

    whole = clip.source_range or clip.trimmed_range()
    rate = whole.start_time.rate
    first, total = round(whole.start_time.value), round(whole.duration.value)
    per_frame = tb.exact_rate(rate) / fps  # clip frames a timeline frame (23.976 stored rounded: 24000/1001)
    spans: list[tuple[int, int, Segment | None]] = []
    cursor = first
    for seg in sorted(segs, key=lambda s: s.record_start):
        # a clip's source range moves with its record frames (a time warp maps them to the media after): where the
        # part is in the clip, not which media frames it shows
        start = first + seg.clip_offset * per_frame
        length = seg.record_frames * per_frame
        if start.denominator != 1 or length.denominator != 1 or start < cursor:
            return None
        if start > cursor:
            spans.append((cursor, int(start) - cursor, None))
        spans.append((int(start), int(length), seg))
        cursor = int(start + length)
    if cursor > first + total:
        return None
    if cursor < first + total:
        spans.append((cursor, first + total - cursor, None))
    pieces = []
    for k, (begin, frames, seg) in enumerate(spans):
        piece = clip.deepcopy()
        piece.source_range = otio.opentime.TimeRange(otio.opentime.RationalTime(begin, rate),
                                                     otio.opentime.RationalTime(frames, rate))
        # a note once in the edit, on the piece its time is in (before the first: on it; at or past the end: on the
        # last); a clip's lipsync options on every piece (they are the whole clip's: a piece fed back in keeps them)
        at = [round(m.marked_range.start_time.rescaled_to(rate).value) for m in piece.markers]
        piece.markers[:] = [m for m, t in zip(list(piece.markers), at, strict=True) if is_option_marker(m)
                            or begin <= t < begin + frames or (k == 0 and t < begin)
                            or (k == len(spans) - 1 and t >= begin + frames)]
        pieces.append((piece, seg))
    return pieces


#: an EDL comment naming an event's file (``* TO CLIP: cam_b.mov``; not ``* TO CLIP NAME:``)
SOURCE_FILE_NOTE = re.compile(r"^\*?\s*(FROM|TO)\s+(CLIP|FILE)\s*:", re.IGNORECASE)


def dub_track(dub: DubTrack, plan: TimelinePlan, form: str) -> Any:
    """An audio track ``Dub <lang>`` holding the dub file at its record position: its sample 0 plays at
    timeline second ``dub.start``, so a dub that starts later gets a leading gap and one that starts
    earlier is trimmed at its head; it ends where the timeline does. Times are on the timeline's rate
    (FCP XML and EDL writers need one rate) with fractional values: whole samples, exactly. The
    reference's URL has the input's ``form``.

    One clip, unless shots have an ``audio_offset``: then the clip is split at each such shot's record
    boundaries and the shot's own clip reads the file at the shifted position (metadata ``lipsyncctl``:
    ``shot``, ``audio_offset``), what its render and the conform play (:func:`conform_audio`). Where a
    stretch reads past either end of the file, a gap."""
    import opentimelineio as otio

    def at(samples: int) -> Any:
        return otio.opentime.RationalTime(float(Fraction(samples) * plan.fps / dub.rate), float(plan.fps))

    def span(first: int, count: int) -> Any:
        return otio.opentime.TimeRange(at(first), at(count))

    total = tb.samples_at(plan.duration, plan.fps, dub.rate)
    lead = math.floor(dub.start * dub.rate)
    length = dub.samples.shape[1]
    track = otio.schema.Track(name=f"Dub {dub.language}", kind=otio.schema.TrackKind.Audio,
                              metadata={"lipsyncctl": {"language": dub.language, "dub": dub.source,
                                                       "sample_rate": dub.rate}})
    pieces = _dub_pieces(plan, dub, total, lead, length)
    if not pieces and lead > 0:  # no sound in the edit: the track still says where the dub starts
        track.append(otio.schema.Gap(source_range=span(0, min(lead, total))))
    path = Path(dub.source).resolve()
    pos = 0
    for rec, first, count, seg in pieces:
        if rec > pos:
            track.append(otio.schema.Gap(source_range=span(0, rec - pos)))
        ref = otio.schema.ExternalReference(target_url=_url_like(form, path), available_range=span(0, length),
                                            metadata={"lipsyncctl": {_RELATIVE: form == "relative"}})
        meta = None if seg is None else {"lipsyncctl": {"shot": seg.id, "audio_offset": seg.options.audio_offset}}
        track.append(otio.schema.Clip(name=path.name, media_reference=ref, source_range=span(first, count),
                                      metadata=meta))
        pos = rec + count
    return track


def _dub_pieces(plan: TimelinePlan, dub: DubTrack, total: int, lead: int,
                length: int) -> list[tuple[int, int, int, Segment | None]]:
    """The dub track's clips as ``(record sample, file sample, count, shifted shot or None)``: the record
    ``[0, total)`` cut at each shifted shot's boundaries (:func:`~lipsyncctl.timeline.dub.shifted_spans`),
    each stretch reading the file (sample 0 at record sample ``lead``, ``length`` samples) at its shift,
    kept where the file has sound. Without shifts: one clip, the file's overlap with the edit."""
    from lipsyncctl.timeline.dub import shifted_spans

    stretches: list[tuple[int, int, int, Segment | None]] = []
    pos = 0
    for first, end, shift, seg in shifted_spans(plan.segments, plan.fps, dub.rate):
        if first > pos:
            stretches.append((pos, first, 0, None))
        stretches.append((first, end, shift, seg))
        pos = end
    if pos < total:
        stretches.append((pos, total, 0, None))
    out = []
    for first, end, shift, seg in stretches:
        at = first - shift - lead  # the file sample under record sample ``first``
        lo, hi = max(at, 0), min(at + end - first, length)
        if hi > lo:
            out.append((first + lo - at, lo, hi - lo, seg))
    return out


def write_timelines(timeline: Any, source_path: Path, folder: Path, *, resolver: MediaResolver | None = None,
                    inputs: Iterable[Path] = (), at: Path | None = None) -> tuple[list[Path], list[str]]:
    """Write ``timeline`` as ``.otio`` and, where an adapter can, in the input's format.

    For an ``.otioz``/``.otiod`` input the second one is a self-contained bundle with the renders and the
    original media embedded (:func:`lipsyncctl.timeline.bundle.write_bundle`); ``resolver`` finds the
    input's media (default: relative to ``source_path``'s folder). The ``.otio``'s URLs reach the input's media from
    ``folder`` (an ``.otioz``'s, inside the zip, stay relative to the bundle's root).

    Args:
        inputs: files besides ``source_path`` that must never be overwritten.
        at: the folder the files will be in when delivered (default ``folder``): relative URLs are
            made from it (a version is written under a temporary name, :mod:`~lipsyncctl.timeline.delivery`).
    """
    import opentimelineio as otio

    from lipsyncctl.media.atomic import atomic_output
    from lipsyncctl.timeline.bundle import is_bundle, write_bundle

    folder.mkdir(parents=True, exist_ok=True)
    written, warnings = [], []
    protected = [source_path, *inputs]
    # the input's relative URLs are re-based from its folder (an .otiod's: the bundle folder, which lasts); an .otioz's
    # media are inside the zip only: its URLs stay relative to the bundle's root
    zipped = source_path.suffix.lower() == ".otioz"
    base = None if zipped else (resolver.base if resolver else
                                source_path.resolve() if is_bundle(source_path) else source_path.resolve().parent)
    targets = [(folder / f"{source_path.stem}.otio", "otio_json")]
    adapter = adapter_for(source_path)
    if source_path.suffix.lower() != ".otio" and adapter is not None:
        targets.append((folder / f"{source_path.stem}{source_path.suffix}", adapter))
    for path, name in targets:
        try:
            if is_bundle(path):
                write_bundle(timeline, path, resolver or MediaResolver(source_path.resolve().parent),
                             inputs=protected)
            else:
                with atomic_output(path, inputs=protected) as tmp:
                    out = _for_adapter(_with_urls(timeline, at or folder, base, name), name)
                    if name == "cmx_3600":
                        text = edl_speeds(otio.adapters.write_to_string(out, adapter_name=name), timeline)
                        tmp.write_text(edl_counting(text, timeline), encoding="utf-8")
                    else:
                        otio.adapters.write_to_file(out, str(tmp), adapter_name=name, **ADAPTER_OPTIONS.get(name, {}))
            written.append(path)
        except Exception as exc:  # noqa: BLE001 - adapters raise anything; the .otio is the one that must exist
            if name == "otio_json":
                raise
            warnings.append(f"could not write {path.name} with the {name} adapter ({type(exc).__name__}: {exc});"
                            " use the .otio")
    return written, warnings


def _with_urls(timeline: Any, folder: Path, base: Path | None, adapter: str) -> Any:
    """A copy of ``timeline`` whose URLs are right from ``folder``, where it is written: the renders and
    dub marked relative relative to ``folder``, the input's own relative URLs (relative to ``base``, the
    input's folder; None for a bundle input, whose URLs stay as they are) re-based onto ``folder``. For
    the formats of :data:`ABSOLUTE_URLS` every local path becomes a ``file://`` URL. An image sequence's folder
    (``target_url_base``) is moved as the input's own URLs are."""
    import opentimelineio as otio

    def moved(url: str, mine: bool | None) -> str:
        form = _url_form(url)
        if adapter in ABSOLUTE_URLS:
            local = Path(url) if form == "absolute" else (base / url if base is not None and form == "relative" else None)
            return local.resolve().as_uri() if local is not None else url
        if mine:
            return Path(os.path.relpath(url, folder.resolve())).as_posix()
        if mine is None and form == "relative" and base is not None:
            return Path(os.path.relpath(base / url, folder.resolve())).as_posix()
        return url

    out = timeline.deepcopy()
    refs = [ref for clip in out.find_clips() for ref in clip.media_references().values()]
    for ref in refs:
        if isinstance(ref, otio.schema.ImageSequenceReference):  # a folder URL ("" is the timeline's own folder)
            ref.target_url_base = moved(ref.target_url_base.rstrip("/") or ("/" if ref.target_url_base else "."),
                                        None).rstrip("/") + "/"
        if not isinstance(ref, otio.schema.ExternalReference) or not ref.target_url:
            continue
        mine = (ref.metadata.get("lipsyncctl") or {}).get(_RELATIVE)
        if mine is not None:
            ref.metadata["lipsyncctl"].pop(_RELATIVE, None)
        ref.target_url = moved(ref.target_url, mine)
    return out


def _for_adapter(timeline: Any, adapter: str) -> Any:
    """``timeline`` as ``adapter`` needs it. The CMX 3600 writer counts record timecode from each track's
    own time and ignores ``global_start_time``: a copy whose tracks start at minus the global start
    (as OTIO's EDL reader makes them) keeps an edit at 01:00:00:00 there. The AAF writer names each clip's
    media by the mob ID the AAF reader left in its metadata: a clip that now plays one of our files (a render,
    the dub) loses the source's ID, so that it gets a master mob of its own instead of one that claims the
    camera file's ID with a locator to the render (:data:`ADAPTER_OPTIONS`: new IDs where none is left)."""
    import opentimelineio as otio

    if adapter == "AAF":
        out = timeline.deepcopy()
        rate = (out.global_start_time or out.duration()).rate
        for clip in out.find_clips():
            if clip.active_media_reference_key != DEFAULT_KEY or "lipsyncctl" in clip.media_reference.metadata:
                for meta in (clip.metadata, clip.media_reference.metadata):
                    for key in ("MobID", "SourceID"):
                        (meta.get("AAF") or {}).pop(key, None)
            # The writer takes every range at the edit's rate: an audio clip read at its samples' rate (16000)
            # is restated in frames (the same times; AAF counts a sound slot in the composition's edit units too)
            clip.source_range = _at_rate(clip.source_range, rate)
            for ref in clip.media_references().values():
                ref.available_range = _at_rate(ref.available_range, rate)
        return out
    if adapter != "cmx_3600":
        return timeline

    def divided(effect: Any) -> bool:  # speed 0 (an M2 of 000.0), which the writer divided by, or a reverse, for
        # which it wrote a source out before the in point (and raised below 00:00:00:00): edl_speeds writes both
        return type(effect) is otio.schema.LinearTimeWarp and effect.time_scalar <= 0

    out = timeline.deepcopy()
    # the writer writes the picture's events only, and refuses a third audio track: an EDL with A and A2 events
    # plus our dub's track was not delivered (the .otio, FCP XML and AAF carry the dub)
    for k in reversed(range(len(out.tracks))):
        if "dub" in out.tracks[k].metadata.get("lipsyncctl", {}):
            del out.tracks[k]
    for clip in out.find_clips():
        cmx = clip.metadata.setdefault("cmx_3600", {})
        if not cmx.get("reel"):  # the reader's AX (no reel): as the input said, not a reel the writer makes of the
            cmx["reel"] = "AX"   # clip's or file's name (with spaces, which no EDL reader parses)
        if any(divided(e) for e in clip.effects):
            clip.effects[:] = [e if not divided(e) else otio.schema.FreezeFrame() if e.time_scalar == 0
                               else otio.schema.LinearTimeWarp(time_scalar=-e.time_scalar) for e in clip.effects]
            if any(type(e) is otio.schema.LinearTimeWarp for e in clip.effects):
                clip.name = f"{clip.name}{REVERSE}"
    start = out.global_start_time
    for track in out.tracks if start is not None else ():
        length = track.available_range().duration
        track.source_range = otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, length.rate) - start.rescaled_to(length.rate), length)
    return out


def _at_rate(span: Any, rate: float) -> Any:
    """``span`` (an OTIO TimeRange, or None) with its start and duration at ``rate``."""
    if span is None or (span.start_time.rate == rate and span.duration.rate == rate):
        return span
    import opentimelineio as otio

    return otio.opentime.TimeRange(span.start_time.rescaled_to(rate), span.duration.rescaled_to(rate))


def shot_extension(config: Any) -> str:
    """The container (``mov``) of a shot's render and of the conform: ``timeline.shot_container``, or the
    default one of ``output.codec``.

    Raises:
        ConfigError: the container cannot hold the codec (before any work: e.g. ProRes into mp4).
    """
    from lipsyncctl.pipeline.output import check_output, default_extension

    chosen = config.timeline.shot_container
    ext = chosen if chosen != "auto" else default_extension(config.output.codec)[1:]
    check_output(Path(f"shot.{ext}"), config.output)
    return ext


def conform_audio(plan: TimelinePlan, dub: DubTrack, me: Path | None = None) -> Iterator[np.ndarray]:
    """The conform's sound, float32 ``(channels, n)`` blocks at ``dub.rate`` (of :data:`~lipsyncctl.media.audio.BLOCK`
    samples, streamed: the whole edit's sound is never held) for the whole edit: the dub, and with ``me`` an
    M&E (music and effects) file, decoded at the dub's rate, whose first sample plays at the first frame,
    summed under it at unity gain (stems are mixed to add up), mono spread to every channel, clipped to full
    scale.

    A lip-synced shot with an ``audio_offset`` hears what its render was synced to: over its record range
    the dub is read at the shifted position (:func:`~lipsyncctl.timeline.dub.shifted_spans`, whole samples),
    whatever the shot's status. The shifted window simply replaces that stretch, with hard cuts at the shot's
    boundaries and no crossfade, as the split clips of the relinked dub track (:func:`dub_track`) play in
    an NLE; the M&E is never shifted."""
    from lipsyncctl.media.audio import BLOCK, iter_audio, own_start, reblock
    from lipsyncctl.timeline.dub import shifted_spans

    total = tb.samples_at(plan.duration, plan.fps, dub.rate)
    spans = shifted_spans(plan.segments, plan.fps, dub.rate)
    beds: Iterator[np.ndarray] = iter(())
    channels = dub.samples.shape[0]
    if me is not None:
        chunks = iter_audio(me, dub.rate, None, start=float(own_start(me)))  # from its own start, as the dub
        first = next(chunks)  # at least one, maybe empty: it tells the channel count
        beds = reblock(itertools.chain([first], chunks), BLOCK)
        channels = max(channels, first.shape[1])
    for b0 in range(0, total, BLOCK):
        n = min(BLOCK, total - b0)
        mix = dub.window(b0, n)
        for first_s, end_s, shift, _ in spans:
            lo, hi = max(first_s, b0), min(end_s, b0 + n)
            if hi > lo:
                dub.window(lo - shift, hi - lo, out=mix[:, lo - b0 : hi - b0])
        if me is None:
            yield mix
            continue
        out = mix if mix.shape[0] == channels else np.resize(mix, (channels, n))  # mono spread to every channel
        bed = next(beds, None)
        if bed is not None:
            bed = bed[:n].T
            m = bed.shape[1]
            out[:, :m] += bed if bed.shape[0] in (1, channels) else np.resize(bed, (channels, m))
        yield np.clip(out, -1.0, 1.0, out=out)


def conform(plan: TimelinePlan, outcomes: dict[str, ShotOutcome], dub: Any, output: Path,
            config: Any, inputs: tuple[Path, ...] = (), me: Path | None = None) -> Path:
    """Write the full-length picture of the edit with the dub (over the M&E file ``me`` if given:
    :func:`conform_audio`): the whole edit. Lip-synced shots where finished, their source where not;
    pass-through shots (``lipsync: false``, time warps at their speed: :attr:`SkippedItem.source
    <lipsyncctl.timeline.segments.SkippedItem.source>`) from their source; black in gaps and where there is
    no picture to trust (missing or unreadable media, an EDL event whose file has the wrong name: the
    plan's warning says so). Transitions are dissolves (:func:`_dissolved`), a pass-through side
    included; one beside black stays a cut. Frame size = the first shot's media (others are resized to
    it). It starts at the edit's record timecode.

    The picture is encoded in a private temporary folder beside ``output``, then muxed with the dub
    under a temporary name and renamed: a failure or Ctrl-C leaves no partial ``output``, and
    ``output`` may not be one of ``inputs``."""
    import tempfile

    import cv2

    from lipsyncctl.media.atomic import check_not_input, temp_prefix
    from lipsyncctl.media.splice import Splicer
    from lipsyncctl.timeline.mediaio import mux, video_writer

    check_not_input(output, inputs)
    shots = plan.segments or plan.pictures()
    size = shots[0].media_size if shots else (640, 360)
    black = np.zeros((size[1], size[0], 3), dtype=np.uint8)

    def fit(picture: Picture) -> Picture:
        rgb, _ = picture
        if rgb.shape[1] != size[0] or rgb.shape[0] != size[1]:
            return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), None
        return picture

    first = _video_facts(shots[0].media, shots[0].media_fps) if shots else None
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=temp_prefix(output)) as tmp:
        video_only = Path(tmp) / f"video{output.suffix}"
        with _named(output), video_writer(video_only, plan.fps, config,
                                          sample_aspect=first.sample_aspect if first else None,
                                          color=first.color if first else None,
                                          source_pix_fmt=first.pix_fmt if first else None,
                                          field_order=first.field_order if first else None) as writer:
            # Frames shown as they are in a file (not resized, not in a dissolve) are its own samples, where their
            # colour is the conform's (media.splice); the others are written from RGB.
            splicer = Splicer(writer.pix_fmt, color=writer.color)
            t = 0
            with progress.Task("conform", total=plan.duration) as bar:
                for seg in plan.pictures():  # shots left alone (lipsync: false) show their source
                    while t < seg.record_start:
                        writer.write(black)
                        t += 1
                        bar.advance()
                    for rgb, source in _dissolved(seg, plan, outcomes, fit):
                        spliced = splicer.frame(source) if source is not None else None
                        writer.write(rgb if spliced is None else spliced)
                        t += 1
                        bar.advance()
                while t < plan.duration:
                    writer.write(black)
                    t += 1
                    bar.advance()
        mux(video_only, conform_audio(plan, dub, me), dub.rate, output, config.output.audio_codec,
            inputs=(*inputs, *([me] if me else [])), timecode=plan.timecode(0))
    return output


def _video_facts(media: Path, fps: Fraction) -> Any:
    """The video stream of ``media`` (:class:`~lipsyncctl.media.probe.VideoInfo`: the conform's frame is its first
    shot's: its pixel aspect, colour tags, pixel format and field order); None when it cannot be read (the plan already said why)."""
    from lipsyncctl.errors import MediaError
    from lipsyncctl.media.probe import probe

    try:
        return probe(media, sequence_fps=fps).video  # (the rate is an image sequence's; a file states its own)
    except MediaError:
        return None


@contextlib.contextmanager
def _named(output: Path) -> Iterator[None]:
    """A write failure of the block (on a temporary file) is told for ``output``."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.media.atomic import write_error

    try:
        yield
    except WriteError as exc:
        raise write_error(output, exc) from exc


def dissolve_weight(k: int, frames: int) -> float:
    """The incoming shot's weight on frame ``k`` (0-based) of a ``frames``-frame dissolve: ``(k + 0.5) / frames``.

    Linear, sampled at the middle of each frame, as NLEs mix a cross-dissolve: no frame of the
    transition is all of one shot, the weights are symmetric about the cut point of an even dissolve
    (a 2-frame one is 1/4, 3/4), and a 1-frame dissolve is an even mix."""
    return (k + 0.5) / frames


def mix(outgoing: np.ndarray, incoming: np.ndarray, weight: float) -> np.ndarray:
    """``outgoing * (1 - weight) + incoming * weight``, per channel, rounded to the nearest level (uint8)."""
    out = outgoing.astype(np.float32) * (1 - weight) + incoming.astype(np.float32) * weight
    return np.floor(out + 0.5).astype(np.uint8)


#: a conform frame: its RGB image and the decoded frame it is, unchanged (None once resized or mixed)
Picture = tuple[np.ndarray, Any]


def _dissolved(seg: Segment, plan: TimelinePlan, outcomes: dict[str, ShotOutcome],
               fit: Callable[[Picture], Picture]) -> Iterator[Picture]:
    """The ``record_frames`` frames of ``seg`` (sized by ``fit``), those inside a transition mixed with
    the other side's: before the cut the incoming shot's head handle under the outgoing shot, after it
    the outgoing shot's tail handle under the incoming one (:func:`dissolve_weight`). Streamed: one
    frame of each side held."""
    overlays = []  # (first record frame, end, span, other segment, its first record offset, seg is outgoing)
    for span in plan.transitions:  # a side may be a pass-through shot (plan.shot: negative index, its source)
        if span.outgoing == seg.index and span.before:
            overlays.append((span.start, span.cut, span, plan.shot(span.incoming), -span.before, True))
        if span.incoming == seg.index and span.after:
            other = plan.shot(span.outgoing)
            overlays.append((span.cut, span.end, span, other, other.record_frames, False))
    own = _segment_frames(seg, _outcome(seg, outcomes), plan.fps)
    with contextlib.closing(own):
        k = 0
        for lo, hi, span, other, first, own_out in sorted(overlays, key=lambda o: o[0]):
            for _ in range(lo - seg.record_start - k):
                yield fit(next(own))
                k += 1
            ext = _segment_frames(other, _outcome(other, outcomes), plan.fps, first, first + hi - lo)
            with contextlib.closing(ext):
                for t in range(lo, hi):
                    a, b = fit(next(own))[0], fit(next(ext))[0]
                    yield (mix(a, b, dissolve_weight(t - span.start, span.frames)) if own_out else
                           mix(b, a, dissolve_weight(t - span.start, span.frames))), None
                    k += 1
        for picture in own:
            yield fit(picture)


def _outcome(seg: Segment, outcomes: dict[str, ShotOutcome]) -> ShotOutcome | None:
    """The render of ``seg``; none for a pass-through shot (negative index: its source is shown)."""
    return outcomes.get(seg.id) if seg.index >= 0 else None


def _segment_frames(seg: Segment, outcome: ShotOutcome | None, fps: Fraction, lo: int = 0,
                    hi: int | None = None) -> Iterator[Picture]:
    """The frames (:data:`Picture`) of ``seg`` at the timeline rate for record offsets ``lo .. hi - 1`` (default: its
    ``record_frames``; 0 = its first visible frame). Offsets outside ``0 .. record_frames - 1`` are the
    picture a transition shows beyond the cut: the render's handles where it has those frames, else
    the source media (its first/last frame held where the media ends). A pass-through shot's time warp
    (``seg.speed``) scales the media frames read per record frame. Streamed: one frame held."""
    from lipsyncctl.timeline.mediaio import read_pictures

    hi = seg.record_frames if hi is None else hi
    rendered = outcome is not None and outcome.status == ShotStatus.DONE and bool(outcome.output)
    ratio = Fraction(seg.media_fps) / fps * seg.speed
    picks: list[tuple[Path, int]] = []
    for k in range(lo, hi):
        j = math.floor(k * ratio)  # media frames from the first visible one
        if 0 <= k < seg.record_frames:
            j = min(j, seg.source_frames - 1)
        if rendered and -seg.handle_in <= j < seg.source_frames + seg.handle_out:
            picks.append((Path(outcome.output), seg.handle_in + j))  # type: ignore[union-attr,arg-type]
        else:
            picks.append((seg.media, max(seg.source_start + j, 0)))  # past its end the last frame is held
    for path, run in itertools.groupby(picks, key=lambda p: p[0]):
        wanted = [i for _, i in run]
        stream = read_pictures(path, wanted[0], wanted[-1] + 1 - wanted[0], seg.media_fps if path == seg.media else None)
        with contextlib.closing(stream):
            cur_idx, cur = wanted[0], next(stream)
            for idx in wanted:
                while cur_idx < idx:
                    cur_idx, cur = cur_idx + 1, next(stream)
                yield cur
