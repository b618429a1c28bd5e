"""Reading an edit with OpenTimelineIO and finding its media on this machine.

Any format an installed OTIO adapter reads works: ``.otio``, ``.otioz``/``.otiod`` built in, CMX 3600
EDL (``otio-cmx3600-adapter``, extra ``edl``), FCP 7 XML (``otio-fcp-adapter``, extra ``fcp``), Avid AAF
(``otio-aaf-adapter``, extra ``aaf``: a clip's media is the network locator of its file source mob, as an AMA link
writes it; a clip without one, Avid-managed media, is missing media).
Media paths are resolved, in order, through a ``--relink OLD=NEW`` prefix map, against the timeline's
folder (for a bundle: the bundle's root, where its ``media/`` are; see :mod:`~lipsyncctl.timeline.bundle`),
and against ``--media-root`` (by relative path, then by file name).

An EDL stores no frame rate. Without ``--edl-rate`` it is found from the file (:func:`detect_edl_rate`):
a rate stated in a comment, else the largest frame number in its timecodes and its ``FCM`` line. Where
those fit more than one rate (frames never past 23 fit every rate; 24 and 23.976 count alike) the media it
links to decide, when they all run at one of those rates; else the read stops with a
:class:`~lipsyncctl.errors.UsageError` (exit 2) asking for ``--edl-rate``: a 25 fps edit is never read at 24.
The rate and how it was found are kept in the timeline's ``metadata["lipsyncctl"]["edl_rate"]`` and
reported through :mod:`lipsyncctl.progress`.

An EDL's record timecodes are kept: the first event's record in (``01:00:00:00``) becomes the timeline's
``global_start_time`` (OTIO's reader leaves it unset), so plans, reports and the relinked timelines keep
it. A dissolve's incoming clip links to its own source (``* TO CLIP:``/``* TO FILE:``, else its name), not
to the outgoing clip's ``* FROM CLIP:`` path the adapter hands it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lipsyncctl import progress
from lipsyncctl.errors import MediaError, MissingToolError, UsageError
from lipsyncctl.media.rates import DROP_FRAME_RATES, STANDARD_RATES, parse_rate
from lipsyncctl.timeline.edl_text import keep_motion_effects

#: file suffix -> OTIO adapter name (for writing an output timeline in the input's format)
ADAPTERS_BY_SUFFIX: dict[str, str] = {
    ".otio": "otio_json", ".otioz": "otioz", ".otiod": "otiod", ".edl": "cmx_3600", ".xml": "fcp_xml",
    ".aaf": "AAF", ".fcpxml": "fcpx_xml",
}
#: adapter -> the pip package that provides it (for the error hint)
ADAPTER_PACKAGES: dict[str, str] = {"cmx_3600": "otio-cmx3600-adapter", "fcp_xml": "otio-fcp-adapter",
                                    "fcpx_xml": "otio-fcpx-xml-adapter", "AAF": "otio-aaf-adapter"}
#: adapter -> the extra of lipsyncctl that installs it (pyproject.toml); fcpx_xml has none (see _check_fcpx)
ADAPTER_EXTRAS: dict[str, str] = {"cmx_3600": "edl", "fcp_xml": "fcp", "AAF": "aaf"}


def installed_adapters() -> list[str]:
    import opentimelineio as otio

    return sorted(a.name for a in otio.plugins.ActiveManifest().adapters)


def adapter_for(path: Path) -> str | None:
    """The OTIO adapter that reads/writes ``path`` by its suffix (None = let OTIO decide)."""
    return ADAPTERS_BY_SUFFIX.get(path.suffix.lower())


def _other_adapter(path: Path) -> bool:
    """An installed OTIO adapter, other than those of :data:`ADAPTERS_BY_SUFFIX`, claims ``path``'s suffix."""
    import opentimelineio as otio

    try:
        otio.adapters.from_filepath(str(path))
    except otio.exceptions.NoKnownAdapterForExtensionError:
        return False
    return True


def read_timeline(path: str | Path, *, rate: float | None = None, extract_to: Path | None = None,
                  resolver: MediaResolver | None = None) -> Any:
    """Read ``path`` into an ``otio.schema.Timeline`` (a ``.otiod`` bundle is a folder).

    Args:
        rate: frame rate of an EDL (the format stores none), e.g. ``23.976``; None = detect it
            (:func:`detect_edl_rate`). Other formats carry their own rates and ignore it.
        extract_to: for an ``.otioz``, an existing empty folder to extract the bundle's media into
            (None: read only its timeline).
        resolver: finds an EDL's media when their rates must decide its rate (default: beside the file).

    Raises:
        MediaError: the file is missing or cannot be parsed, or its timecodes fit no rate.
        UsageError: ``rate`` is too low for the EDL's timecodes, or it fits several rates and its media
            do not decide (exit 2: pass ``--edl-rate``).
        MissingToolError: no installed adapter reads this format.
    """
    import opentimelineio as otio

    path = Path(path)
    folder = path.suffix.lower() == ".otiod"
    found = (path / "content.otio").is_file() if folder else path.is_file()
    formats = ", ".join(ADAPTERS_BY_SUFFIX)
    if not found and not folder and path.is_dir():
        raise MediaError(f"{path} is a folder, not a timeline file",
                         hint=f"give the edit's file to --timeline (one of {formats}; a .otiod bundle is a folder)")
    if not found:
        what = "OTIO bundle folder (with content.otio)" if folder else "timeline"
        raise MediaError(f"{what} not found: {path}", hint="check the path given to --timeline")
    adapter = adapter_for(path)
    if adapter is None and not _other_adapter(path):
        raise MediaError(f"{path}: {path.suffix or 'a file without an extension'} is not a timeline format read here",
                         hint=f"export the edit as one of {formats}")
    if adapter == "fcpx_xml":
        _check_fcpx(path)
    if adapter is not None and adapter not in installed_adapters():
        pkg = ADAPTER_PACKAGES.get(adapter, f"an OTIO adapter for {path.suffix}")
        extra = ADAPTER_EXTRAS.get(adapter)
        raise MissingToolError(f"{path}: no OpenTimelineIO adapter for {path.suffix} is installed",
                               hint=f"pip install {pkg}" + (f" (or 'lipsyncctl[{extra}]')" if extra else ""))
    if adapter == "cmx_3600":
        return _read_edl(path, rate, resolver or MediaResolver(path.resolve().parent))
    try:
        if adapter == "otioz" and extract_to is not None:
            from lipsyncctl.timeline.bundle import extract_otioz

            result = extract_otioz(path, extract_to)
        else:
            result = otio.adapters.read_from_file(str(path), adapter_name=adapter)
    except Exception as exc:  # noqa: BLE001 - adapters raise anything; report it as bad input media
        if adapter == "otio_json" and not _starts_like_json(path):  # (OTIO said "The document is empty" of a video)
            raise MediaError(f"{path}: not an OTIO file (OTIO is JSON text; this is not)",
                             hint="give the edit's .otio (a video goes to --video)") from exc
        raise MediaError(f"{path}: cannot read the timeline ({type(exc).__name__}: {exc})",
                         hint=f"check that it is a complete {path.suffix or 'OTIO'} export "
                              f"(read with OTIO's {adapter or 'default'} adapter)") from exc
    timeline = _one_timeline(path, result)
    if adapter == "fcp_xml":
        _keep_disabled(timeline)
    return timeline


def _starts_like_json(path: Path) -> bool:
    """Whether the file begins (after white space and a BOM) with ``{``, as every OTIO JSON document does."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return True  # (the read's own error is the one to say)
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _keep_disabled(timeline: Any) -> None:
    """Disable the clips and tracks an FCP 7 XML turns off (``<enabled>FALSE</enabled>``: a clip made invisible,
    a track's eye off), which OTIO's reader keeps only in their metadata: read as enabled, such a clip was
    lip-synced and shown in the conform where the edit shows what is under it. Its writer puts the element back
    from that metadata, so a relinked timeline keeps them off."""
    items = [*timeline.tracks, *timeline.find_children()]
    for item in items:
        fcp = item.metadata.get("fcp_xml") if item.metadata else None
        if hasattr(fcp, "get") and str(fcp.get("enabled", "")).strip().upper() == "FALSE":
            item.enabled = False


def _check_fcpx(path: Path) -> None:
    """Final Cut Pro X XML is read by ``otio-fcpx-xml-adapter`` (1.0), which counts every rate as a whole number of
    frames a second: 23.976 as 23, 29.97 as 29, so each shot would start on the wrong frame. Such a file is refused
    before it is read; whole rates (24, 25, 30...) read right.

    Raises:
        MissingToolError: a ``<format>`` of the file has a fractional rate (no installed reader counts it right).
        MediaError: the file is not XML.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise MediaError(f"{path}: cannot read the timeline ({exc})",
                         hint="check that it is a complete FCPXML export") from None
    for fmt in root.iter("format"):
        duration = (fmt.get("frameDuration") or "").removesuffix("s")
        try:
            rate = 1 / Fraction(duration)
        except (ValueError, ZeroDivisionError):
            continue
        if rate.denominator != 1:
            raise MissingToolError(
                f"{path}: FCPXML at {float(rate):.3f} fps: OpenTimelineIO's FCPXML adapter counts it as "
                f"{int(rate)} fps, so every shot would start on the wrong frame",
                hint="export the project as FCP 7 XML (.xml) or OTIO with a converter, or as an EDL (--edl-rate)")


def is_drop_frame_timeline(timeline: Any, fps: Fraction) -> bool:
    """Whether ``timeline`` counts its timecode drop frame (only at 29.97 and 59.94): an EDL's ``FCM: DROP FRAME``
    or ``;`` (kept by :func:`read_timeline`), an FCP XML sequence's ``<displayformat>DF``; else (OTIO files
    state none) non-drop."""

    if fps not in DROP_FRAME_RATES:
        return False
    meta = timeline.metadata
    ours = meta.get("lipsyncctl", {})
    if "drop_frame" in ours:
        return bool(ours["drop_frame"])
    fcp = meta.get("fcp_xml", {})
    code = fcp.get("timecode") if hasattr(fcp, "get") else None
    return bool(hasattr(code, "get") and str(code.get("displayformat", "")).upper() == "DF")


def _one_timeline(path: Path, result: Any) -> Any:
    """The timeline an adapter returned (the first of a collection)."""
    import opentimelineio as otio

    if isinstance(result, otio.schema.SerializableCollection):
        timelines = list(result.find_children(descended_from_type=otio.schema.Timeline, shallow_search=True))
        if not timelines:
            raise MediaError(f"{path}: the file holds no timeline")
        result = timelines[0]
    if not isinstance(result, otio.schema.Timeline):
        raise MediaError(f"{path}: expected a timeline, found {type(result).__name__}")
    return result


#: Timecode rates an EDL counts at when nothing says it is drop frame, in the order they are preferred
#: (48 fps timecode is too rare to guess).
EDL_RATES: tuple[Fraction, ...] = (Fraction(24), Fraction(25), Fraction(30), Fraction(50), Fraction(60))
#: A comment that states the rate and nothing else: ``* FPS: 25``, ``* FRAME RATE: 23.976``, ``EDIT RATE=24``.
_STATED_RATE = re.compile(
    r"^\*?\s*(?:FPS|FRAME[ _]?RATE|EDIT[ _]RATE|TIMECODE[ _]RATE)\s*[:=]\s*(\d+(?:[./]\d+)?)\s*(?:FPS)?\s*$",
    re.IGNORECASE)
#: ``HH:MM:SS:FF``; a ``;`` (or ``,``) before the frames marks drop-frame timecode.
_TIMECODE = re.compile(r"(?<![\d:;])\d{2}[:;.]\d{2}[:;.]\d{2}([:;.,])(\d{2,3})(?![\d:;])")


@dataclass(frozen=True)
class EdlRate:
    """The rate an EDL's timecodes count at, and how it was found.

    Attributes:
        rate: exact frames per second (``Fraction(30000, 1001)``).
        how: where it came from, for the user (``"stated in the file: '* FPS: 25'"``).
        assumed: another standard rate fits the file as well (23.976 counts like 24, 29.97 NDF like 30);
            ``rate`` is the likelier one and the note is a warning.
    """

    rate: Fraction
    how: str
    assumed: bool = False

    @property
    def fps(self) -> str:
        """The rate as people write it: ``25``, ``29.97``, ``23.976``."""
        return f"{float(self.rate):.3f}".rstrip("0").rstrip(".")

    def note(self) -> str:
        """One line for the plan's warnings (``assumed``) or notes."""
        if self.assumed:
            return (f"EDL frame rate {self.fps} fps assumed ({self.how}); pass --edl-rate if the edit was "
                    f"cut at another rate (e.g. 23.976 or 29.97)")
        return f"EDL frame rate {self.fps} fps ({self.how})"

    def to_dict(self) -> dict[str, Any]:
        return {"rate": f"{self.rate.numerator}/{self.rate.denominator}", "how": self.how,
                "assumed": self.assumed, "note": self.note()}


def detect_edl_rate(text: str, where: str = "EDL") -> EdlRate:
    """The frame rate of a CMX 3600 EDL's text (see :class:`EdlRate`), in this order:

    1. A comment stating it (:data:`_STATED_RATE`); ``FCM: DROP FRAME`` makes a stated 30 or 60 NTSC.
    2. Else the largest frame field ``F`` of its timecodes (events and ``LOC`` comments): the rate must
       exceed ``F``, and the first of :data:`EDL_RATES` (or :data:`DROP_FRAME_RATES` for drop frame) that
       does is taken. ``F <= 23`` fits every rate: 24 is assumed (OTIO's default, what was always read).

    Raises:
        MediaError: the file states two rates, a rate its timecodes exceed, drop frame at a rate that has
            none, or frame numbers beyond every standard rate (the hint names ``--edl-rate``).
    """
    lines = [line.strip() for line in text.splitlines()]
    stated = {line: parse_rate(m.group(1)) for line in lines if (m := _STATED_RATE.match(line))}
    top, drop = _timecode_frames(lines)
    hint = "pass the rate the edit was cut at, e.g. --edl-rate 25 (or 23.976, 29.97)"

    def fail(why: str) -> MediaError:
        return MediaError(f"{where}: cannot tell its frame rate: {why}", hint=hint)

    if len(set(stated.values())) > 1:
        raise fail("it states " + " and ".join(repr(k) for k in stated))
    if stated:
        line, rate = next(iter(stated.items()))
        if drop:
            ntsc = [r for r in DROP_FRAME_RATES if math.ceil(r) == math.ceil(rate)]
            if not ntsc:
                raise fail(f"{line!r} but its timecode is drop frame (only 29.97 and 59.94 have it)")
            rate = ntsc[0]
        if top is not None and top >= math.ceil(rate):
            raise fail(f"{line!r} but a timecode counts frame {top}")
        return EdlRate(rate, f"stated in the file: {line!r}")
    ladder = DROP_FRAME_RATES if drop else EDL_RATES
    kind = "drop-frame " if drop else ""
    if top is None:
        return EdlRate(ladder[0], f"no timecodes to tell it by; {float(ladder[0]):g} is the default",
                       assumed=True)
    fits = [r for r in ladder if math.ceil(r) > top]
    if not fits:
        raise fail(f"a {kind}timecode counts frame {top}, beyond every standard rate")
    rate = fits[0]
    ntsc_twin = not drop and rate * Fraction(1000, 1001) in STANDARD_RATES  # 24 vs 23.976, 30 vs 29.97 NDF
    how = f"its {kind}timecodes count frames up to {top}"
    return EdlRate(rate, how, assumed=top < 24 or ntsc_twin)


def _timecode_frames(lines: list[str]) -> tuple[int | None, bool]:
    """The largest frame field of the timecodes OTIO reads (event lines and ``LOC`` comments; None if
    there are none), and whether anything marks drop frame (an ``FCM: DROP FRAME`` line or a ``;``)."""
    top: int | None = None
    drop = False
    for line in lines:
        upper = line.upper()
        if upper.startswith("FCM") and "DROP" in upper and "NON" not in upper:
            drop = True
        if line[:1].isdigit() or re.match(r"^\*?\s*LOC:", line, re.IGNORECASE):
            for m in _TIMECODE.finditer(line):
                top = max(top or 0, int(m.group(2)))
                drop = drop or m.group(1) in ";,"
    return top, drop


def edl_rate_candidates(text: str) -> list[Fraction]:
    """The standard rates an EDL's timecodes can count at (:func:`_timecode_frames`), likeliest first: the
    rates of :data:`EDL_RATES` (or :data:`DROP_FRAME_RATES`) above its largest frame field, each followed by
    its NTSC twin that counts alike (23.976 after 24, 29.97 NDF after 30)."""
    top, drop = _timecode_frames([line.strip() for line in text.splitlines()])
    out: list[Fraction] = []
    for r in DROP_FRAME_RATES if drop else EDL_RATES:
        if top is None or math.ceil(r) > top:
            out.append(r)
            twin = r * Fraction(1000, 1001)
            if not drop and twin in STANDARD_RATES:
                out.append(twin)
    return out


def _parsed(events: str, rate: Fraction) -> Any:
    """The EDL's events read at ``rate``, or None where they do not read (at a wrong rate source and record
    durations disagree)."""
    import opentimelineio as otio

    try:
        return otio.adapters.read_from_string(events, adapter_name="cmx_3600", rate=float(rate))
    except Exception:  # noqa: BLE001 - adapters raise anything
        return None


def _rates_that_read(text: str) -> list[Fraction]:
    """The standard rates (:func:`edl_rate_candidates`) at which the EDL's events read."""
    events = _events_only(text)
    return [r for r in edl_rate_candidates(text) if _parsed(events, r) is not None]


def _media_rates(timeline: Any, resolver: MediaResolver) -> dict[Fraction, str]:
    """The rates of the media an EDL's events link to (those found and readable), each with a file's name."""
    rates: dict[Fraction, str] = {}
    seen: set[Path] = set()
    for clip in timeline.find_clips():
        media = _edl_media(clip, resolver)
        if media is not None and media not in seen:  # (each file probed once)
            seen.add(media)
            with contextlib.suppress(MediaError):
                rates.setdefault(probe_media(media).fps, media.name)
    return rates


def _check_given_rate(path: Path, timeline: Any, rate: float, found: EdlRate, resolver: MediaResolver) -> None:
    """An ``--edl-rate`` of 24, 30 or 60 for an EDL whose media all run at the NTSC rate beside it (or the other way
    round): their timecodes count alike, but every source time lands 0.1 % off (3.6 s an hour of timecode: "outside
    the media's frames"), so it is asked again.

    Raises:
        UsageError: so (exit 2), naming the rate the media run at.
    """
    rates = _media_rates(timeline, resolver)
    if len(rates) == 1 and (media := next(iter(rates))) != found.rate and math.ceil(media) == math.ceil(found.rate):
        shown = EdlRate(media, "").fps
        raise UsageError(f"--edl-rate {rate:g}: {path.name}'s media ({rates[media]}...) run at {shown} fps, whose "
                         f"timecodes count as {rate:g}'s do, but each source time would land 0.1 % off",
                         hint=f"--edl-rate {shown} (or leave --edl-rate out: it is detected from the media)")


def _rate_from_media(path: Path, text: str, guess: EdlRate, resolver: MediaResolver) -> EdlRate:
    """Settle an assumed EDL rate by the media its events link to: they must all run at one rate its
    timecodes fit (and at which its source and record durations agree). Else raise a :class:`UsageError`
    asking for ``--edl-rate`` (exit 2)."""
    fits = _rates_that_read(text)
    if not fits:
        return guess  # no rate reads it: the read names the line
    rates = _media_rates(_one_timeline(path, _parsed(_events_only(text), fits[0])), resolver)
    fps_list = ", ".join(EdlRate(r, "").fps for r in fits) or "no standard rate"
    if len(rates) == 1 and next(iter(rates)) in fits:
        rate, name = next(iter(rates.items()))
        return EdlRate(rate, f"its timecodes fit {fps_list}; its media ({name}...) run at {EdlRate(rate, '').fps}")
    found = ("none of its media were found" if not rates else
             "its media run at " + " and ".join(f"{EdlRate(r, '').fps} ({n})" for r, n in rates.items()))
    raise UsageError(f"{path}: cannot tell the EDL's frame rate: its timecodes fit {fps_list} fps and {found}",
                     hint=f"pass the rate the edit was cut at, e.g. --edl-rate {EdlRate(fits[0] if fits else guess.rate, '').fps}"
                          " (an EDL stores none; reading it at another rate shifts every cut)")


def _edl_media(clip: Any, resolver: MediaResolver) -> Path | None:
    """The file an EDL clip links to: its ``FROM CLIP`` path, else :func:`link_by_name` (as the planner links it)."""
    import opentimelineio as otio

    ref = clip.media_reference
    if isinstance(ref, otio.schema.ExternalReference) and ref.target_url:
        return resolver.resolve(ref.target_url)
    linked = link_by_name(clip, resolver)
    return resolver.resolve(linked) if linked is not None else None


def link_by_name(clip: Any, resolver: MediaResolver) -> str | None:
    """The URL of the media a clip without a media reference plays, found by name: EDLs name the source file in ``*
    FROM CLIP NAME:`` only, a list of reels alone by its event's reel (the file's stem, as tape-based and camera-card
    lists are cut), an AAF master mob without a locator by its file's stem. Its clip name first (as a file, then as a
    stem), then its reel; None when none is found (relink and media root apply)."""
    reel = (clip.metadata.get("cmx_3600") or {}).get("reel") if hasattr(clip.metadata, "get") else None
    for name in dict.fromkeys(n for n in (clip.name, reel) if n):
        if resolver.resolve(name):
            return name
        if (named := resolver.resolve_stem(name)) is not None:
            return str(named)
    return None


def _read_edl(path: Path, rate: float | None, resolver: MediaResolver) -> Any:
    """Read a CMX 3600 EDL at ``rate`` (None: :func:`detect_edl_rate`, then its media) and record the rate
    used; its record start becomes the timeline's start (:func:`_keep_record_start`)."""
    import opentimelineio as otio

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # older editors write Latin-1 clip names
    if rate is None:
        found = detect_edl_rate(text, str(path))
        if found.assumed:
            found = _rate_from_media(path, text, found, resolver)
    else:
        from lipsyncctl.media.timecode import exact_rate

        found = EdlRate(exact_rate(rate), "given with --edl-rate")  # 23.976 -> 24000/1001, as OTIO needs
        top, _ = _timecode_frames([line.strip() for line in text.splitlines()])
        if top is not None and top >= math.ceil(found.rate):
            raise UsageError(f"--edl-rate {rate:g} is too low for {path}: a timecode counts frame {top}",
                             hint="pass the rate the edit was cut at, or leave --edl-rate out to detect it")
    try:
        result = otio.adapters.read_from_string(_events_only(text), adapter_name="cmx_3600",
                                                rate=float(found.rate))
    except Exception as exc:  # noqa: BLE001 - adapters raise anything; report it as bad input media
        fits = _rates_that_read(text) if rate is not None else []
        if fits:  # the rate given is the wrong one: a usage error naming those that read it
            rates = ", ".join(EdlRate(r, "").fps for r in fits)
            raise UsageError(f"{path}: cannot read the EDL at {found.fps} fps, {found.how} ({type(exc).__name__}: "
                             f"{exc}); its timecodes read at {rates} fps",
                             hint="pass the rate the edit was cut at, or leave --edl-rate out to detect it") from exc
        raise MediaError(f"{path}: cannot read the EDL at {found.fps} fps, {found.how} "
                         f"({type(exc).__name__}: {exc})",
                         hint="fix the line named above" if rate is not None
                         else "if the rate is wrong pass --edl-rate; otherwise fix the line named above") from exc
    timeline = _one_timeline(path, result)
    if rate is not None:
        _check_given_rate(path, timeline, rate, found, resolver)
    _keep_record_start(timeline, found.rate)
    _link_incoming_clips(timeline)
    keep_motion_effects(timeline, text, found.rate)
    timeline.metadata.setdefault("lipsyncctl", {})["edl_rate"] = found.to_dict()
    timeline.metadata["lipsyncctl"]["drop_frame"] = _timecode_frames([line.strip() for line in text.splitlines()])[1]
    if found.assumed:
        progress.warning(found.note())
    else:
        progress.message(found.note())
    return timeline


def _keep_record_start(timeline: Any, rate: Fraction) -> None:
    """Make the EDL's first record timecode the timeline's ``global_start_time``.

    OTIO's reader gives each track a ``source_range`` starting at minus its first record in (so its own
    time 0 is that record in) and no global start; here the earliest record in of all tracks becomes the
    global start, and a track starting later gets a leading gap, so every track's time 0 is the timeline's
    first frame, as in any other OTIO timeline."""
    import opentimelineio as otio

    starts = [-round(t.source_range.start_time.rescaled_to(float(rate)).value) if t.source_range is not None else 0
              for t in timeline.tracks]
    if not starts:
        return
    first = min(starts)
    for track, start in zip(list(timeline.tracks), starts, strict=True):
        track.source_range = None
        if start > first:
            track.insert(0, otio.schema.Gap(source_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(0, float(rate)), otio.opentime.RationalTime(start - first, float(rate)))))
    timeline.global_start_time = otio.opentime.RationalTime(first, float(rate))


#: ``* TO CLIP: path`` / ``* TO FILE: path`` (the incoming side of a dissolve), which OTIO's reader keeps
#: only as a comment.
_TO_CLIP = re.compile(r"^\*?\s*TO (?:CLIP|FILE):\s*(.+)$", re.IGNORECASE)


def _link_incoming_clips(timeline: Any) -> None:
    """Give the incoming clip of each dissolve its own media.

    For an event ``D`` OTIO's reader makes one clip named by ``* TO CLIP NAME`` but linked to the
    ``* FROM CLIP:`` path, which is the *outgoing* clip's file: that clip would be rendered from the
    wrong picture. Its ``* TO CLIP:``/``* TO FILE:`` path is used instead; without one the reference is
    dropped, so the clip links by its own name like any event that states no path."""
    import opentimelineio as otio

    for track in timeline.tracks:
        children = list(track)
        for i, child in enumerate(children):
            if not (isinstance(child, otio.schema.Clip) and i > 0
                    and isinstance(children[i - 1], otio.schema.Transition)):
                continue
            comments = child.metadata.get("cmx_3600", {}).get("comments", [])
            to = next((m.group(1).strip() for c in comments if (m := _TO_CLIP.match("* " + c))), None)
            ref = child.media_reference
            if to is not None:
                child.media_reference = otio.schema.ExternalReference(target_url=to)
            elif isinstance(ref, otio.schema.ExternalReference):
                linked = Path(MediaResolver.url_path(ref.target_url))
                if child.name not in (linked.name, linked.stem):
                    child.media_reference = otio.schema.MissingReference()


def _events_only(text: str) -> str:
    """``text`` without the comment lines before its first event: OTIO's reader refuses them ("Unknown
    event type") though they carry nothing it reads (a ``* FPS: 25`` header, say)."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()[:1].isdigit()), len(lines))
    head = [line for line in lines[:first] if not line.strip().startswith("*")]
    return "\n".join(head + lines[first:]) + "\n"


@contextlib.contextmanager
def opened_timeline(path: Path, *, rate: float | None = None, scratch: Path | None = None,
                    media_root: Path | None = None,
                    relink: dict[str, str] | None = None) -> Iterator[tuple[Any, Path]]:
    """Read the timeline ``path`` for a job; yields ``(timeline, base)``, ``base`` being the folder its
    relative media URLs resolve against: the file's folder, an ``.otiod``'s own folder, or the private
    folder an ``.otioz`` is extracted into (under ``scratch``, else the system temp folder), which is
    removed when the block exits. ``media_root``/``relink`` find an EDL's media when they decide its rate.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".otioz":
        resolver = MediaResolver(path.resolve().parent, media_root, relink or {})
        timeline = read_timeline(path, rate=rate, resolver=resolver)
        yield timeline, (path.resolve() if suffix == ".otiod" else path.resolve().parent)
        return
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    from lipsyncctl.media.atomic import temp_prefix

    with tempfile.TemporaryDirectory(dir=scratch, prefix=temp_prefix(path, "otioz")) as tmp:
        base = Path(tmp).resolve()
        yield read_timeline(path, rate=rate, extract_to=base), base


def parse_relink(items: list[str] | None) -> dict[str, str]:
    """``["/old/root=/new/root", ...]`` -> prefix map (longest prefix wins when applied)."""
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise UsageError(f"--relink {item!r}: expected OLD=NEW",
                             hint="e.g. --relink /Volumes/edit=/mnt/edit or --relink D:\\proj=/mnt/proj")
        out[old] = new
    return out


#: a Windows drive path, ``D:/...`` (after :meth:`MediaResolver.url_path`)
_DRIVE = re.compile(r"^[A-Za-z]:(?=/|$)")


@dataclass
class MediaResolver:
    """Turns a media reference's ``target_url`` into an existing local path (or None).

    Attributes:
        base: the timeline file's folder (relative URLs are resolved against it).
        media_root: an extra folder searched by relative path, then by file name.
        relink: ``{old_prefix: new_prefix}`` applied to the URL's path first.
    """

    base: Path
    media_root: Path | None = None
    relink: dict[str, str] = field(default_factory=dict)
    #: media files by stem (as written), per folder, listed once (a list of reels alone looked each event's up by a scan
    #: of both folders, twice)
    _stems: dict[Path, dict[str, list[Path]]] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def url_path(url: str) -> str:
        """A media URL or path as one canonical path string, whatever form an NLE wrote it in:
        ``file:///a/b%20c.mov`` -> ``/a/b c.mov``; Windows paths get forward slashes and an upper-case
        drive, with or without a URL around them (``file://localhost/D%3a/x.mov``, ``file:///D:/x.mov``,
        ``/D:/x.mov``, ``D:\\x.mov`` -> ``D:/x.mov``); a UNC share ``\\\\srv\\share\\x.mov`` or
        ``file://srv/share/x.mov`` -> ``//srv/share/x.mov``. Other paths pass through."""
        raw = url
        if raw[:5].lower() == "file:":
            parsed = urlparse(raw)
            raw = unquote(parsed.path)
            if parsed.netloc and parsed.netloc.lower() != "localhost":
                raw = f"//{parsed.netloc}{raw}"
        if "\\" in raw and (_DRIVE.match(raw.replace("\\", "/")) or raw.startswith("\\\\")):
            raw = raw.replace("\\", "/")
        if re.match(r"^/[A-Za-z]:(/|$)", raw):
            raw = raw[1:]
        if _DRIVE.match(raw):
            raw = raw[0].upper() + raw[1:]
        return raw

    def relinked(self, url: str) -> str:
        """:meth:`url_path` of ``url`` with the longest matching ``--relink`` prefix replaced. Prefixes are
        read in the same forms (``D:\\proj``, ``/D:/proj`` and ``file://localhost/D%3a/proj`` are one) and
        match whole path components (``/Volumes/edit`` is not a prefix of ``/Volumes/editorial``);
        Windows drive paths match without regard to case, as Windows does."""
        raw = self.url_path(url)
        for old in sorted(self.relink, key=len, reverse=True):
            prefix = self.url_path(old).rstrip("/")
            head = raw[: len(prefix)]
            same = head.casefold() == prefix.casefold() if _DRIVE.match(prefix) else head == prefix
            if prefix and same and raw[len(prefix) : len(prefix) + 1] in ("", "/"):
                return self.url_path(self.relink[old]).rstrip("/") + raw[len(prefix):]
        return raw

    def candidates(self, url: str) -> list[Path]:
        raw = self.relinked(url)
        drive = _DRIVE.match(raw)  # a Windows path left as it was: not a path on this machine
        p = Path(os.path.expanduser(raw))
        cands = [p] if p.is_absolute() else [] if drive else [self.base / p]
        if self.media_root is not None:
            rel = Path(raw[drive.end():].lstrip("/")) if drive else Path(*p.parts[1:]) if p.is_absolute() else p
            cands += [self.media_root / rel, self.media_root / p.name]
        return cands

    def resolve(self, url: str, *, sequence: bool = False) -> Path | None:
        """The first candidate that exists, or None. ``sequence``: ``url`` is an image sequence's pattern
        (``shot.%04d.exr``, an OTIO ``ImageSequenceReference``'s), there where a file matches it; a file's URL
        that looks like one is a file name like any other."""
        from lipsyncctl.media.container import exists, is_image_sequence

        if not url:
            return None
        for cand in self.candidates(url):
            if (sequence and is_image_sequence(cand) and exists(cand)) or (not sequence and cand.is_file()):
                return cand.resolve()
        return None

    def resolve_stem(self, name: str) -> Path | None:
        """The media of a clip known by a name without its extension (Avid names a clip, an AAF master mob without
        a locator, after its file's stem: ``A001C003_250101_R1AB``): the one media file of that stem in the
        timeline's folder or ``--media-root``. None when there is none, or several (``x.mov`` and ``x.mxf``: which
        one is not known), or when ``name`` has a media extension or a folder (:meth:`resolve` looks for those)."""
        from lipsyncctl.media.container import MEDIA_EXTS

        if not name or Path(name).suffix.lower() in MEDIA_EXTS or "/" in name:
            return None
        matches = {p for folder in (self.base, self.media_root) if folder is not None
                   for p in self._media_by_stem(folder).get(name, [])}
        return matches.pop() if len(matches) == 1 else None

    def _media_by_stem(self, folder: Path) -> dict[str, list[Path]]:
        """The media files of ``folder`` (not its subfolders) by stem, read once."""
        from lipsyncctl.media.container import MEDIA_EXTS

        if folder not in self._stems:
            found: dict[str, list[Path]] = {}
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    path = Path(entry.path)
                    if path.suffix.lower() in MEDIA_EXTS and entry.is_file():
                        found.setdefault(path.stem, []).append(path.resolve())
            self._stems[folder] = found
        return self._stems[folder]


@dataclass(frozen=True)
class MediaFacts:
    """What the planner needs of one source file (probed once per file)."""

    path: Path
    fps: Any  # Fraction
    frames: int
    width: int
    height: int
    start_timecode: str | None  # the file's own timecode tag, e.g. "01:00:00:00"
    reel: str | None = None     # the file's reel (tape) name tag, e.g. "A001C003"
    field_order: str | None = None  # VideoInfo.field_order: "tt", "bb"... for an interlaced master
    hdr10: bool = False  # the file carries HDR10 static metadata (ColorInfo.hdr10)


def probe_media(path: Path, sequence_fps: Fraction | None = None) -> MediaFacts:
    """Probe one video file (PyAV) for its exact rate, frame count, size, timecode tag and field order.
    ``sequence_fps``: the rate of an image sequence (``shot.%04d.exr``; its files state none; default 25)."""
    from lipsyncctl.media.container import DEFAULT_SEQUENCE_FPS
    from lipsyncctl.media.probe import probe

    info = probe(path, sequence_fps=sequence_fps or DEFAULT_SEQUENCE_FPS)
    if info.video is None:
        raise MediaError(f"{path}: no video stream")
    return MediaFacts(path=path, fps=info.video.nominal_fps, frames=info.video.frame_count,
                      width=info.video.width, height=info.video.height, start_timecode=info.timecode, reel=info.reel,
                      field_order=info.video.field_order, hdr10=info.video.color.hdr10)
