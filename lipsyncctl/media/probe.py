"""``probe(path) -> MediaInfo``: what a media file holds, read in-process with PyAV (no ffprobe).

Frame rates are exact :class:`~fractions.Fraction` values (``30000/1001``, never ``29.97``), snapped to
the standard rates of :mod:`lipsyncctl.media.rates`. Whether the video is constant or variable frame
rate is decided from the presentation timestamps of the first :data:`PTS_SAMPLE` packets (a bounded
sample: demuxing only, no decoding).
Rotation is the display-matrix angle in degrees counter-clockwise (ffmpeg's convention), one of
0/90/180/270; a reader applies it with ``numpy.rot90(frame, rotation // 90)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from lipsyncctl.errors import MediaError
from lipsyncctl.media.container import (
    DEFAULT_SEQUENCE_FPS,
    ffmpeg_reason,
    frame_filter,
    is_image_sequence,
    open_input,
    sequence_files,
    sequence_gap,
    sequence_numbers,
    video_stream,
)
from lipsyncctl.media.rates import STANDARD_RATES as STANDARD_RATES  # the one table lives in media.rates
from lipsyncctl.media.rates import snap_rate

#: Packets demuxed to judge CFR/VFR when the container has no index.
PTS_SAMPLE = 600

_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
              10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
_TRANSFER = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
             11: "iec61966-2-4", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084",
             17: "smpte428", 18: "arib-std-b67"}
_MATRIX = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
           9: "bt2020nc", 10: "bt2020c"}
_RANGE = {1: "tv", 2: "pc"}
#: name -> ffmpeg enum value, for writers (see :mod:`lipsyncctl.media.writer`).
COLOR_CODES: dict[str, dict[str, int]] = {
    "primaries": {v: k for k, v in _PRIMARIES.items()},
    "transfer": {v: k for k, v in _TRANSFER.items()},
    "matrix": {v: k for k, v in _MATRIX.items()},
    "range": {v: k for k, v in _RANGE.items()},
}


@dataclass(frozen=True)
class ColorInfo:
    """Colour tags with ffmpeg's names (``"bt709"``, ``"smpte2084"``, range ``"tv"``/``"pc"``); None = untagged.

    ``mastering`` and ``light_level``: HDR10 static metadata, None when not given. The mastering display (SMPTE
    ST 2086) in the notation of x265 and ffmpeg's ``-master_display``, ``G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)``
    (chromaticities in units of 0.00002, luminance in 0.0001 cd/m2); the content light level ``MaxCLL,MaxFALL``
    (cd/m2). Read from the first decoded frame (a HEVC stream's SEI, or a MOV/MKV box the decoder passes on)."""

    primaries: str | None = None
    transfer: str | None = None
    matrix: str | None = None
    range: str | None = None
    mastering: str | None = None
    light_level: str | None = None

    @classmethod
    def from_codes(cls, primaries: int, transfer: int, matrix: int, range_: int) -> ColorInfo:
        return cls(_PRIMARIES.get(int(primaries)), _TRANSFER.get(int(transfer)), _MATRIX.get(int(matrix)),
                   _RANGE.get(int(range_)))

    def or_(self, other: ColorInfo) -> ColorInfo:
        """Fill untagged fields from ``other``."""
        return ColorInfo(self.primaries or other.primaries, self.transfer or other.transfer,
                         self.matrix or other.matrix, self.range or other.range,
                         self.mastering or other.mastering, self.light_level or other.light_level)

    @property
    def hdr10(self) -> bool:
        """HDR10 static metadata is given (a mastering display or a content light level)."""
        return bool(self.mastering or self.light_level)


def hdr10_metadata(frame: Any) -> ColorInfo:
    """The HDR10 static metadata a decoded frame carries (its side data), as a :class:`ColorInfo` of only those
    fields. A mastering display is taken when it gives both primaries and luminance (x265's notation needs both)."""
    import struct

    found: dict[str, str] = {}
    try:
        container = frame.side_data
        # (PyAV 18.1.1 made it a mapping, whose iteration gives the kinds; before, the side data themselves)
        side_data = [item if hasattr(item, "type") else container[item] for item in container]
    except ValueError:  # a kind of side data PyAV's enum does not know (FFmpeg 8's, on a TIFF): none of ours
        return ColorInfo()
    for data in side_data:
        kind = getattr(data.type, "name", str(data.type))
        raw = bytes(data)
        if kind == "MASTERING_DISPLAY_METADATA" and len(raw) >= 88:
            # AVMasteringDisplayMetadata: primaries R, G, B (x, y), white point (x, y), min and max luminance, each
            # an AVRational (num, den); then has_primaries, has_luminance
            v = struct.unpack("=22i", raw[:88])
            if v[20] and v[21]:
                q = [round(num * (50000 if k < 8 else 10000) / den) if den else 0
                     for k, (num, den) in enumerate(zip(v[0:20:2], v[1:20:2], strict=True))]
                rx, ry, gx, gy, bx, by, wx, wy, lo, hi = q
                found["mastering"] = f"G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})L({hi},{lo})"
        elif kind == "CONTENT_LIGHT_LEVEL" and len(raw) >= 8:
            max_cll, max_fall = struct.unpack("=2I", raw[:8])
            found["light_level"] = f"{max_cll},{max_fall}"
    return ColorInfo(**found)


@dataclass(frozen=True)
class VideoInfo:
    """One video stream. ``width``/``height`` are stored pixels; ``display_*`` after rotation."""

    index: int
    codec: str
    profile: str | None
    width: int
    height: int
    pix_fmt: str | None
    fps: Fraction          # exact rate for CFR; the mean rate for VFR
    nominal_fps: Fraction  # CFR: == fps; VFR: the usual frame spacing as a rate, snapped to a standard one
    is_vfr: bool
    frame_count: int
    duration: float       # seconds
    start_time: float     # seconds, first frame's presentation time
    rotation: int         # 0/90/180/270, counter-clockwise
    color: ColorInfo
    time_base: Fraction
    bit_rate: int | None = None
    sample_aspect: Fraction = Fraction(1)  # a stored pixel's width / height (anamorphic DV, HDV: not 1)
    #: ``progressive``, an interlaced order (``tt`` top field first, ``bb``, ``tb``, ``bt``; ``interlaced`` when
    #: the frames say so but not the order), or None (not said)
    field_order: str | None = None

    @property
    def interlaced(self) -> bool:
        """The frames hold two fields (1080i, PAL/NTSC SD)."""
        return is_interlaced(self.field_order)

    @property
    def fields(self) -> str:
        """:attr:`field_order` in words, e.g. ``interlaced, top field first``: the field shown first
        (:data:`SHOWN_FIRST`), and the one coded first where that is the other."""
        shown = SHOWN_FIRST.get(self.field_order or "")
        if shown is None:
            return "progressive" if self.field_order == "progressive" else (
                "interlaced" if self.interlaced else "progressive or not said")
        coded = "top" if (self.field_order or "").startswith("t") else "bottom"
        return f"interlaced, {shown} field first" + (f" (coded {coded} first)" if coded != shown else "")

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` of the stored pixels as shown, after applying :attr:`rotation`."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    @property
    def square_size(self) -> tuple[int, int]:
        """:attr:`display_size` in square pixels: the stored width times :attr:`sample_aspect` (1440x1080 HDV
        at 4:3 is a 1920x1080 picture)."""
        width = max(1, round(self.width * self.sample_aspect))
        return (self.height, width) if self.rotation in (90, 270) else (width, self.height)


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str | None
    sample_format: str | None
    duration: float       # seconds
    start_time: float     # seconds
    bit_rate: int | None = None
    language: str | None = None  # the stream's language tag (ISO 639-2, "deu"), when the file states it
    #: its title ("DX stem"): the title tag, a MOV track's ``name``, else the track name an editor set in its
    #: ``handler_name`` ("M&E"; not a muxer's default such as "SoundHandler": :func:`is_default_handler`); None when
    #: the file states none
    title: str | None = None

    def describe(self) -> str:
        """``2 ch 48000 Hz pcm_s24le, deu, "DX stem"``: how a message names the stream."""
        tags = [t for t in (self.language, f'"{self.title}"' if self.title else None) if t]
        return ", ".join([f"{self.channels} ch {self.sample_rate} Hz {self.codec}", *tags])


@dataclass(frozen=True)
class MediaInfo:
    """Result of :func:`probe`."""

    path: Path
    format_name: str
    size_bytes: int
    duration: float                      # seconds, the longest stream
    video: VideoInfo | None
    audio: tuple[AudioInfo, ...] = field(default_factory=tuple)
    is_image_sequence: bool = False
    timecode: str | None = None  # the file's start timecode tag, e.g. "01:00:00:00" ("01:00:00;00" drop frame)
    reel: str | None = None      # its reel (tape) name tag, e.g. "A001C003"
    others: tuple[str, ...] = ()  # its streams that are not its picture or sound, in words (:func:`_other_streams`)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (fractions as ``"30000/1001"`` strings)."""

        def conv(value: Any) -> Any:
            if isinstance(value, Fraction):
                return f"{value.numerator}/{value.denominator}"
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: conv(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [conv(v) for v in value]
            return value

        return conv(asdict(self))


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _timestamps(container: Any, stream: Any) -> list[int]:
    """Presentation timestamps of the first :data:`PTS_SAMPLE` packets of the stream, sorted.

    (Index entries would be cheaper but hold decoding timestamps, which have gaps wherever B-frames
    were cut away.)"""
    stamps: list[int] = []
    for packet in container.demux(stream):
        if packet.pts is not None and packet.size:
            stamps.append(packet.pts)
        if len(stamps) >= PTS_SAMPLE:
            break
    return sorted(stamps)


def _rate_and_vfr(stamps: list[int], stream: Any) -> tuple[Fraction, Fraction, bool]:
    """``(fps, nominal_fps, is_vfr)`` from sorted timestamps (see module doc)."""
    header = [Fraction(r) for r in (stream.base_rate, stream.average_rate, stream.guessed_rate) if r]
    fallback = header[0] if header else DEFAULT_SEQUENCE_FPS
    if len(stamps) < 3:
        return fallback, fallback, False
    tb = Fraction(stream.time_base)
    deltas = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    ordered = sorted(deltas)
    median = ordered[len(ordered) // 2]
    if median <= 0 or stamps[-1] == stamps[0]:
        return fallback, fallback, True
    # A tick of jitter is timestamp rounding (29.97 fps in a 1/1000 time base is 33,33,34 ms); in a 1/fps time
    # base (AVI, capture formats) a tick is a whole frame, so there a gap of two is a dropped frame, not jitter.
    slack = min(max(1, median * 0.005), median / 2)
    vfr = any(abs(d - median) > slack for d in deltas)
    measured = Fraction(len(deltas)) / ((stamps[-1] - stamps[0]) * tb)
    typical = Fraction(1) / (median * tb)
    if vfr:
        return measured.limit_denominator(1001), snap_rate(_aimed_rate(ordered, tb, measured), tolerance=0.03), True
    for candidate in [typical, *header]:
        if abs(float(candidate) - float(measured)) / float(measured) <= 0.005:
            rate = snap_rate(candidate)
            return rate, rate, False
    rate = snap_rate(measured)
    return rate, rate, False


def _aimed_rate(ordered: list[int], tb: Fraction, measured: Fraction) -> Fraction:
    """The rate a variable-rate clip's camera aimed at, from its sorted frame spacings ``ordered`` (in ``tb`` units)
    and its mean rate ``measured``: the median spacing ``m`` beside the usual spacing ``s`` of the shortest quarter
    of the frames (and those within a quarter of it).

    - ``m`` close to ``s`` (under 1.25 times): jitter around one rate, ``m``'s (a phone's timestamps);
    - ``m`` a whole multiple of ``s`` (2, 3, ... within 0.1): dropped frames, ``s``'s (a 25 fps camera dropping every
      third frame alternates 40 and 80 ms: the median alone read 12.5 fps and dropped a source frame in three);
    - otherwise a cadence (soft 3:2 pulldown's 33/50 ms is 23.976 content) or bunched stamps: the mean rate.

    Spacings shorter than a frame at the fastest standard rate (240 fps) are left out, from the mean too: frames a
    tick apart are near-duplicates, not a rate (a third of them read 90000 fps, and a 2 s clip became 180,000
    frames); where every spacing is that short (a high-speed capture), they are its rate."""
    plausible = [d for d in ordered if d * tb * STANDARD_RATES[-1] >= 1]
    if len(plausible) >= 2:
        ordered, measured = plausible, Fraction(len(plausible)) / (sum(plausible) * tb)
    m = ordered[len(ordered) // 2]
    group = [d for d in ordered if d <= ordered[len(ordered) // 4] * Fraction(5, 4)]
    s = group[len(group) // 2]
    ratio = Fraction(m, s)
    if ratio < Fraction(5, 4):
        return Fraction(1) / (m * tb)
    if round(ratio) >= 2 and abs(ratio - round(ratio)) <= Fraction(1, 10):
        return Fraction(1) / (s * tb)
    return measured


def _rotation(frame: Any, stream: Any) -> int:
    angle = getattr(frame, "rotation", 0) or 0
    if not angle:
        try:
            angle = -int(stream.metadata.get("rotate", 0))  # legacy tag is clockwise
        except ValueError:
            angle = 0
    return int(round(angle / 90.0)) % 4 * 90


#: demuxers that take ``seek(0)`` and then deliver no packet: FFmpeg's ``image2`` reading one file (a ``.jpg`` or
#: ``.jpeg``; the other still images have demuxers of their own, ``png_pipe``, ``tiff_pipe``..., which rewind)
NO_REWIND = frozenset({"image2"})


class _Passes:
    """The container probed, at its start for each pass over its packets (the count of the packets, the sample of
    their timestamps, the decoding of the first frame): as opened for the first, then rewound by ``seek(0)``, or
    opened again where its demuxer cannot seek back, because it refuses (an FLV without an index, a raw H.264 or HEVC
    stream: ``EPERM``) or because it takes the seek and then delivers nothing (:data:`NO_REWIND`). A stream or frame
    of a container opened again is that container's: streams are looked up again by index after :meth:`start`."""

    def __init__(self, path: Path, sequence_fps: Fraction) -> None:
        self.path, self.sequence_fps = path, sequence_fps
        self.container = open_input(path, sequence_fps=sequence_fps)
        self._read = False

    def start(self) -> Any:
        """The container at its start, for one more pass over its packets."""
        import av

        if self._read:
            if self.container.format.name in NO_REWIND:
                self._reopen()
            else:
                try:
                    self.container.seek(0)
                except av.error.FFmpegError:  # this demuxer cannot seek: read from the start of a new open
                    self._reopen()
        self._read = True
        return self.container

    def _reopen(self) -> None:
        self.container.close()
        self.container = open_input(self.path, sequence_fps=self.sequence_fps)

    def __enter__(self) -> _Passes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _first_frame(container: Any, stream: Any, path: Path) -> Any:
    import av

    stream.thread_type = "AUTO"
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: video cannot be decoded ({ffmpeg_reason(exc)})") from exc
    raise MediaError(f"{path}: video stream has no decodable frame (truncated or empty?)")


def _check_index_complete(stream: Any, size: int, path: Path) -> None:
    entries = stream.index_entries
    if entries is None or len(entries) == 0:
        return
    end = max(e.pos + e.size for e in entries if e.pos >= 0)
    if end > size:
        raise MediaError(f"{path}: file is truncated ({size} bytes, its index needs {end})")


def _check_scan_complete(scan: _Scan, container: Any, path: Path) -> None:
    """A header that promises more than the packets deliver means the file was cut short."""
    if not container.duration or not scan.end:
        return
    header = container.duration / 1e6 + (container.start_time or 0) / 1e6
    last = max(scan.end.values())
    if last < header - max(0.5, 0.05 * header):
        raise MediaError(f"{path}: file is truncated (media ends at {last:.2f} s, its header says {header:.2f} s)")


def _probe_video(passes: _Passes, path: Path, size: int, sequence_fps: Fraction, scan: _Scan | None) -> VideoInfo:
    index = video_stream(passes.container, path).index
    if is_image_sequence(path):
        numbers = sequence_numbers(path)
        if gap := sequence_gap(path, numbers):
            raise MediaError(f"{path}: {gap}", hint="the reader stops at a missing number: render or copy the "
                             "missing frames, or renumber the files")
        fps, nominal, vfr = sequence_fps, sequence_fps, False
        frame_count = len(numbers)
    else:
        _check_index_complete(passes.container.streams[index], size, path)
        container = passes.start()
        stream = container.streams[index]
        stamps = _timestamps(container, stream)
        fps, nominal, vfr = _rate_and_vfr(stamps, stream)
        frame_count = int(stream.frames or 0) or (scan.packets.get(index, 0) if scan else 0)
    container = passes.start()
    stream = container.streams[index]
    tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
    ctx = stream.codec_context
    # Container tags first (read before decoding: a decoder may overwrite them with the bitstream's).
    color = ColorInfo.from_codes(ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range)
    first = _first_frame(container, stream, path)
    color = color.or_(ColorInfo.from_codes(first.color_primaries, first.color_trc, first.colorspace,
                                           first.color_range)).or_(hdr10_metadata(first))
    start = _seconds(stream.start_time, tb) or 0.0
    duration = _seconds(stream.duration, tb)
    if not duration and vfr is False and frame_count:
        duration = float(frame_count / fps)
    if not duration and scan and stream.index in scan.end:
        duration = scan.end[stream.index] - start
    if not duration and container.duration:
        duration = container.duration / 1e6
    if frame_count == 0:
        raise MediaError(f"{path}: video stream has no frames")
    return VideoInfo(
        index=stream.index, codec=ctx.name, profile=ctx.profile, width=first.width, height=first.height,
        pix_fmt=first.format.name, fps=fps, nominal_fps=nominal, is_vfr=vfr, frame_count=frame_count, duration=float(duration or 0.0),
        start_time=start, rotation=_rotation(first, stream), color=color, time_base=tb,
        bit_rate=ctx.bit_rate or None, sample_aspect=_sample_aspect(stream), field_order=_field_order(ctx, first),
    )


#: AVFieldOrder codes -> VideoInfo.field_order (the first letter: the field coded first)
FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
#: an interlaced order -> the field shown first. FFmpeg's ``tb`` is top coded first, bottom shown first (MOV
#: ``fiel`` 9, "swapped"; its decoders flag such frames bottom field first), ``bt`` the other way round
SHOWN_FIRST = {"tt": "top", "bb": "bottom", "tb": "bottom", "bt": "top"}


def is_interlaced(field_order: str | None) -> bool:
    """Whether a :attr:`VideoInfo.field_order` says the frames hold two fields (an order, or just ``interlaced``)."""
    return field_order not in (None, "progressive")


def _field_order(ctx: Any, first: Any) -> str | None:
    """The stream's field order (the container's or the decoder's, after the first frame), else, when it states
    none, the first frame's if it is interlaced (a DV file states no order, but its frames are flagged bottom field
    first). A stream that says ``progressive`` is taken at its word over its frames' flags (PsF, or x264's
    fake-interlaced Blu-ray encodes: progressive pictures coded as fields)."""
    order = FIELD_ORDERS.get(int(getattr(ctx, "field_order", 0) or 0))
    if order is None and getattr(first, "interlaced_frame", False):
        return _frame_field_order(first)
    return order


def _frame_field_order(frame: Any) -> str:
    """``tt`` or ``bb``: the field an interlaced decoded frame is flagged to show first (FFmpeg's top-field-first
    frame flag, which PyAV does not expose: the ``select`` filter's ``interlace_type`` reads it); ``interlaced``
    where the filter cannot take the frame. Frames flag the field shown first only, so ``tb``/``bt`` never come."""
    import av

    try:
        graph = frame_filter(frame, "select", "eq(interlace_type,TOPFIRST)", Fraction(1, 25))
        graph.push(frame)
        graph.push(None)
        try:
            graph.pull()
        except EOFError:  # the filter dropped the frame: not top field first, so bottom (it is interlaced)
            return "bb"
        return "tt"
    except (av.error.FFmpegError, ValueError):
        return "interlaced"


def _sample_aspect(stream: Any) -> Fraction:
    """The stream's sample (pixel) aspect ratio: the container's, else the bitstream's; 1 when unset."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar:
            return Fraction(sar)
    return Fraction(1)


@dataclass
class _Scan:
    """Per-stream packet counts and end times (seconds) from one pass of demuxing (no decoding)."""

    packets: dict[int, int] = field(default_factory=dict)
    end: dict[int, float] = field(default_factory=dict)


def _scan_packets(container: Any) -> _Scan:
    scan = _Scan()
    for packet in container.demux():
        if packet.size == 0 or packet.pts is None or packet.time_base is None:
            continue
        i = packet.stream.index
        scan.packets[i] = scan.packets.get(i, 0) + 1
        end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
        scan.end[i] = max(end, scan.end.get(i, end))
    return scan


def _needs_scan(container: Any) -> bool:
    """Containers without a per-stream duration (MKV/WebM, ...) or video frame count (MPEG-TS/M2TS: its
    index entries fill in only as a decoder seeks, so they cannot count the frames) in the header, or whose
    durations are estimates (:data:`ESTIMATED_DURATIONS`: an MPEG-TS holding sound alone)."""
    return _estimated(container) or any(
        (s.type in ("video", "audio") and not s.duration) or (s.type == "video" and not s.frames)
        for s in container.streams)


#: formats whose streams' durations FFmpeg estimates (from the first and last timestamps it reads, or a bit rate): an
#: MPEG-TS's AAC said 1.92 s for 2.11 s of packets. Their packet scan (made for their frame count) gives the sound's.
ESTIMATED_DURATIONS = frozenset({"mpegts", "mpeg"})


def _estimated(container: Any) -> bool:
    """Whether FFmpeg estimates the durations of ``container``'s streams (:data:`ESTIMATED_DURATIONS`)."""
    return bool(ESTIMATED_DURATIONS & set(container.format.name.split(",")))


def _probe_audio(stream: Any, container: Any, scan: _Scan | None) -> AudioInfo:
    ctx = stream.codec_context
    tb = Fraction(stream.time_base) if stream.time_base else None
    duration = _seconds(stream.duration, tb)
    if (not duration or _estimated(container)) and scan and stream.index in scan.end:
        duration = scan.end[stream.index] - max(_seconds(stream.start_time, tb) or 0.0, 0.0)
    if not duration and container.duration:
        duration = container.duration / 1e6
    layout = ctx.layout.name if ctx.layout is not None else None
    return AudioInfo(
        index=stream.index, codec=ctx.name, sample_rate=int(ctx.sample_rate), channels=int(ctx.layout.nb_channels),
        layout=layout, sample_format=ctx.format.name if ctx.format is not None else None,
        duration=float(duration or 0.0), start_time=max(_seconds(stream.start_time, tb) or 0.0, 0.0),
        bit_rate=ctx.bit_rate or None, language=_stream_tag(stream, "language"),
        title=_track_name(stream),
    )


def _stream_tag(stream: Any, key: str) -> str | None:
    """A stream's metadata tag, None when absent or ``und`` (undetermined)."""
    value = (stream.metadata or {}).get(key)
    return value if value and value != "und" else None


#: ``handler_name`` values that muxers write by default, as compared by :func:`is_default_handler` (lower case,
#: spaces collapsed): Apple's AVFoundation (iPhone, QuickTime, Final Cut), GoPro, YouTube's MP4s (followed by a
#: date). Names such as FFmpeg's "SoundHandler", GPAC's "GPAC ISO Audio Handler", L-SMASH's, Bento4's, Android's
#: "SoundHandle" or QuickTime 7's "Apple Sound Media Handler" match :data:`_HANDLER_WORDS` instead.
DEFAULT_HANDLERS = frozenset({
    "core media audio", "core media video", "core media data", "core media metadata", "core media text",
    "gopro aac", "gopro avc", "gopro h.265", "gopro met", "gopro tcd", "gopro sos",
})
_HANDLER_WORDS = re.compile(r"(sound|audio|video|data|text|subtitle|caption|time ?code|hint|meta ?data|alias|"
                            r"media) ?(media ?)?(data ?)?handler?$")


def is_default_handler(name: str) -> bool:
    """Whether a MOV/MP4 track's ``handler_name`` is a muxer's default (it names the kind of track, "SoundHandler",
    "Core Media Audio"), not a name someone gave the track ("DE dialog")."""
    words = " ".join(name.lower().split())
    return (words in DEFAULT_HANDLERS or words.startswith("iso media file produced by")
            or _HANDLER_WORDS.search(words) is not None)


def _track_name(stream: Any) -> str | None:
    """A stream's title: its ``title`` tag; else ``name`` (where FFmpeg puts a MOV track's title, its ``udta`` name);
    else its ``handler_name`` (MOV/MP4) where that names the track rather than its kind (:func:`is_default_handler`).
    Tags in any case: an MKV remuxed from a MOV keeps them as ``NAME`` and ``HANDLER_NAME``."""
    tags = {str(k).lower(): str(v).strip() for k, v in (stream.metadata or {}).items()}
    handler = tags.get("handler_name", "")
    return (tags.get("title") or tags.get("name")
            or (handler if handler and not is_default_handler(handler) else None))


def pick_audio_stream(path: str | Path, info: MediaInfo, n: int, key: str) -> tuple[AudioInfo, str | None]:
    """The ``n``-th audio stream of ``path`` (``info``: its probe), and a warning when the file has several (which
    one is the dub, or the sound to keep, is a guess the user should see), else None. ``key``: the setting that
    picks it (``sync.audio_stream``), named in the messages.

    Raises:
        MediaError: the file has no ``n``-th audio stream (its streams listed).
    """
    streams = info.audio
    listed = "; ".join(f"{k}: {s.describe()}" for k, s in enumerate(streams))
    if n >= len(streams):
        raise MediaError(f"{path}: {key} {n}: the file has {len(streams)} audio stream(s) ({listed})",
                         hint=f"--set {key}=N picks one of them (0 = the first)")
    if len(streams) == 1:
        return streams[0], None
    return streams[n], f"{path} has {len(streams)} audio streams ({listed}): stream {n} is used (--set {key}=N picks another)"


def probe(path: str | Path, *, sequence_fps: Fraction = DEFAULT_SEQUENCE_FPS) -> MediaInfo:
    """Describe the media file (or ``image2`` pattern) at ``path``.

    Raises :class:`MediaError` with a one-line message naming the file when it is missing, empty,
    truncated (index past the end of the file), not media, or has neither audio nor video.
    """
    import av

    path = Path(path)
    with _Passes(path, sequence_fps) as passes:
        container = passes.container
        size = sum(p.stat().st_size for p in sequence_files(path)) if is_image_sequence(path) else path.stat().st_size
        try:
            scan = None
            if not is_image_sequence(path) and _needs_scan(container):
                scan = _scan_packets(passes.start())
                _check_scan_complete(scan, container, path)
            audio = tuple(_probe_audio(s, container, scan) for s in container.streams.audio
                          if s.codec_context.sample_rate)
            has_video = any(not (s.disposition & 0x400) for s in container.streams.video)
            video = _probe_video(passes, path, size, sequence_fps, scan) if has_video else None
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: cannot read ({ffmpeg_reason(exc)})") from exc
        container = passes.container  # the video's passes may have opened the file again
        if video is None and not audio:
            raise MediaError(f"{path}: no audio or video stream")
        durations = [a.duration for a in audio] + ([video.duration] if video else [])
        duration = max(durations) if durations else 0.0
        if not math.isfinite(duration):
            duration = 0.0
        return MediaInfo(path=path, format_name=container.format.name, size_bytes=size, duration=duration,
                         video=video, audio=audio, is_image_sequence=is_image_sequence(path),
                         timecode=_tag(container, "timecode"), reel=_tag(container, "reel_name", "reel", "tape"),
                         others=_other_streams(container))


def _other_streams(container: Any) -> tuple[str, ...]:
    """The streams of ``container`` besides its first picture and its sounds, in words (``subtitles (mov_text,
    eng)``, ``cover art (mjpeg)``, ``video (h264)``, ``data (gpmd)``): what a new file made of its picture and a
    sound does not carry. A timecode track is not one (its timecode is carried: :attr:`MediaInfo.timecode`)."""
    out, pictures = [], 0
    for stream in container.streams:
        context = getattr(stream, "codec_context", None)
        codec = getattr(context, "name", None)
        lang = stream.metadata.get("language")
        what = f" ({', '.join(t for t in (codec, lang) if t and t != 'und')})" if codec or lang else ""
        if stream.type == "video":
            if stream.disposition & 0x400:  # AV_DISPOSITION_ATTACHED_PIC
                out.append(f"cover art{what}")
            else:
                pictures += 1
                if pictures > 1:
                    out.append(f"video{what}")
        elif stream.type == "subtitle":
            out.append(f"subtitles{what}")
        elif stream.type == "data" and "timecode" not in stream.metadata:
            out.append(f"data{what}")
        elif stream.type == "attachment":
            out.append(f"attachment ({stream.metadata.get('filename', 'a file')})")
    return tuple(out)


def _tag(container: Any, *names: str) -> str | None:
    """The first of the tags ``names`` on the container or a stream (MOV/MXF keep ``timecode`` and ``reel_name`` on
    their timecode track; MKV writes them upper case)."""
    tags = [dict(container.metadata)] + [dict(s.metadata) for s in container.streams]
    for name in names:
        for t in tags:
            for k, v in t.items():
                if k.lower() == name and v:
                    return str(v)
    return None
