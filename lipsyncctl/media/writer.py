"""Streaming video writer: frames in, a constant-frame-rate file out, renamed into place when done.

Frames are numpy ``(H, W, 3)`` uint8 RGB arrays or ``av.VideoFrame`` objects (passed through without
an RGB round trip, e.g. by ``prep``). Frame ``i`` gets presentation time ``i / fps`` exactly: the
stream time base is ``1 / fps`` (``1001/30000`` for 29.97), so the output is CFR by construction.

Same frames, same settings, same bytes: the container is written ``bitexact`` (:data:`BITEXACT`: the
Matroska muxer otherwise gives every file a random segment UID), and with ``threads`` the encoder's
thread count is fixed. x264 is deterministic for a given thread count, but its automatic count follows
the CPUs the process may use (``taskset``, a scheduler's cpuset), and the count changes its output;
the RGB -> YUV conversion (swscale) runs one thread (:data:`~lipsyncctl.media.container.SWS_THREADS`: sliced
conversions into 10-bit formats are not deterministic).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError
from lipsyncctl.media.atomic import atomic_output, file_size, write_error, write_failure
from lipsyncctl.media.container import SWS_THREADS, ffmpeg_reason, frame_filter, is_image_sequence
from lipsyncctl.media.probe import COLOR_CODES, FIELD_ORDERS, SHOWN_FIRST, ColorInfo, is_interlaced


@dataclass(frozen=True)
class CodecSpec:
    """How one user-facing codec name maps onto an encoder."""

    encoder: str
    pix_fmt: str                    # default pixel format
    containers: tuple[str, ...]     # extensions that can hold it; the first is the default
    crf: int | None = None          # default CRF (x264/x265); None: quality set by ``profile``
    profile: str | None = None      # default profile (ProRes / DNxHR)
    options: dict[str, str] = field(default_factory=dict)
    codec_tag: str | None = None
    min_size: tuple[int, int] | None = None  # the smallest picture (width, height) the encoder codes


def size_refused(codec: str, width: int, height: int) -> str | None:
    """Why the ``CODECS`` codec ``codec`` cannot code a ``width x height`` picture (DNxHR: under 256x120), or None."""
    least = CODECS[codec].min_size
    if least is not None and (width < least[0] or height < least[1]):
        return f"{codec} codes pictures of at least {least[0]}x{least[1]}, not {width}x{height}"
    return None


_MP4_FAMILY = (".mp4", ".mov", ".mkv", ".m4v")
#: The one table of codecs: encoder, defaults and the containers each can be stored in (the first one is
#: the extension chosen when the caller names none: ``prep``'s files, the timeline's shots).
CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec("libx264", "yuv420p", _MP4_FAMILY, crf=18),
    # (not .m4v: FFmpeg's M4V muxer takes no H.265, a run failed at its first frame)
    "h265": CodecSpec("libx265", "yuv420p", _MP4_FAMILY[:3], crf=22, options={"x265-params": "log-level=error"},
                      codec_tag="hvc1"),  # hvc1: QuickTime/Apple players refuse hev1-tagged mp4
    # prores_ks profiles: proxy lt standard hq 4444 4444xq
    "prores": CodecSpec("prores_ks", "yuv422p10le", (".mov", ".mkv"), profile="hq", options={"vendor": "apl0"}),
    # DNxHR: lb sq hq (8-bit 4:2:2), hqx (10-bit), 444
    "dnxhr": CodecSpec("dnxhd", "yuv422p", (".mov", ".mxf"), profile="dnxhr_hq", min_size=(256, 120)),
    # pix_fmt="bgr0" stores RGB frames bit-exactly (lossless verification output).
    "ffv1": CodecSpec("ffv1", "yuv420p", (".mkv", ".avi"), options={"level": "3", "slicecrc": "1"}),
}

@dataclass(frozen=True)
class OutputCodec:
    """A codec users name (``--codec``, ``output.codec``, ``prep.codec``): a :data:`CODECS` row and what differs from
    its defaults."""

    codec: str                   # the :data:`CODECS` row
    profile: str | None = None   # None: the row's default (ProRes hq, DNxHR dnxhr_hq)
    pix_fmt: str | None = None   # None: the row's default, or the source's where ``keeps_source``
    keeps_source: bool = False   # the source's pixel format is written where the encoder codes it (:data:`KEEP_PIX`)


#: The codecs users name, onto the rows of :data:`CODECS` (``config.VideoCodecName`` lists the same names for the
#: schema; a test keeps them equal). FFV1 is written as RGB: lossless, every untouched pixel of the picture exact.
OUTPUT_CODECS: dict[str, OutputCodec] = {
    "h264": OutputCodec("h264", keeps_source=True),
    "h265": OutputCodec("h265", keeps_source=True),
    "prores_hq": OutputCodec("prores"),
    "prores_4444": OutputCodec("prores", "4444", "yuv444p10le"),
    "dnxhr_hq": OutputCodec("dnxhr"),
    "ffv1": OutputCodec("ffv1", pix_fmt="bgr0"),
}
#: Source pixel formats x264/x265 keep (4:2:0, 4:2:2, 4:4:4 in 8 or 10 bit).
KEEP_PIX = frozenset({"yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"})


def output_spec(name: str) -> tuple[OutputCodec, CodecSpec]:
    """The :data:`OUTPUT_CODECS` row ``name`` and its :data:`CODECS` row."""
    named = OUTPUT_CODECS[name]
    return named, CODECS[named.codec]


def codec_table() -> str:
    """:data:`OUTPUT_CODECS` as a reStructuredText table (name, encoder and profile, pixel format, containers), for
    the documentation that lists them (:mod:`lipsyncctl.pipeline.output`'s)."""
    rows = [("name", "encoder", "pixel format", "containers")]
    for name, (named, spec) in ((n, output_spec(n)) for n in OUTPUT_CODECS):
        profile = named.profile or spec.profile
        pix = named.pix_fmt or spec.pix_fmt
        rows.append((f"``{name}``", spec.encoder + (f" {profile}" if profile else ""),
                     f"the source's where kept, else {pix}" if named.keeps_source else pix, " ".join(spec.containers)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


@cache
def encoder_formats(encoder: str) -> frozenset[str]:
    """The pixel formats FFmpeg's ``encoder`` takes (empty when this build has no such encoder)."""
    import av

    try:
        return frozenset(f.name for f in (av.Codec(encoder, "w").video_formats or ()))
    except (ValueError, av.error.FFmpegError):
        return frozenset()


def pix_bits(pix_fmt: str) -> int:
    """The most bits of a component of ``pix_fmt`` (``yuv422p10le`` -> 10). Raises ValueError for a name FFmpeg does
    not know."""
    import av

    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def encoders() -> tuple[str, ...]:
    """The encoders of every :data:`CODECS` row, the default codec's (H.264) first."""
    return tuple(dict.fromkeys(spec.encoder for spec in CODECS.values()))


#: The image formats an image sequence (``-o 'shot.%04d.png'``) is written in, by extension: the encoder and its
#: pixel format (8-bit RGB, as the render makes its pictures; DPX in the 10-bit RGB plates usually are; an RGB
#: source's own format where the encoder takes it: :func:`sequence_pix_fmt`). EXR is not
#: written: its pictures are scene-linear floats, and ours are display values (``float_picture_warning``).
SEQUENCE_FORMATS: dict[str, tuple[str, str]] = {".png": ("png", "rgb24"), ".tif": ("tiff", "rgb24"),
                                                 ".tiff": ("tiff", "rgb24"), ".dpx": ("dpx", "gbrp10le")}
#: container options of every file written: no random IDs, no library version strings
BITEXACT = {"fflags": "+bitexact"}
_PRORES_PROFILES = {"proxy": "0", "lt": "1", "standard": "2", "hq": "3", "4444": "4", "4444xq": "5"}
_SWS_MATRIX = {"bt709": "itu709", "smpte170m": "smpte170m", "bt470bg": "itu601", "smpte240m": "smpte240m",
               "fcc": "fcc", "bt2020nc": "bt2020", "bt2020c": "bt2020"}
#: AVCodecContext flags of interlaced coding (``+ildct``, ``+ilme``)
_INTERLACED_FLAGS = (1 << 18) | (1 << 29)
#: how an encoder is told to code interlaced frames: x264 by its own parameters, prores_ks by the context's flags
#: (the field order by each frame's flags); FFV1 keeps whole frames, flagged in the container. Not here: x265 (it
#: codes each field as a picture of its own) and DNxHR (FFmpeg's encoder codes DNxHR progressive only, and MOV/MXF
#: then say progressive).
_FIELD_CODING = {"libx264": "x264-params", "prores_ks": "flags", "ffv1": "container"}
#: how an encoder writes HDR10 static metadata (:attr:`ColorInfo.mastering`, :attr:`ColorInfo.light_level`) into its
#: bitstream (SEI): its parameter option and the two parameters. Not here: ProRes, DNxHR and FFV1 (theirs lives in
#: MOV/MKV boxes, made from stream side data PyAV cannot set).
_HDR_PARAMS = {"libx264": ("x264-params", "mastering-display", "cll"),
               "libx265": ("x265-params", "master-display", "max-cll")}
#: Tags for RGB frames when the caller gives none: HD video is BT.709, limited range. Also the matrix and range an
#: RGB source (tagged ``gbr``: PNG, DPX) is converted with into a YUV output (:meth:`VideoWriter._tags`).
DEFAULT_COLOR = ColorInfo("bt709", "bt709", "bt709", "tv")
#: How an encoder's output keeps :attr:`VideoWriter.sample_aspect` (the pixel aspect). ``context``: from the codec
#: context, in the bitstream (x264, x265: the VUI) or each image's header (PNG pHYs, TIFF resolution, DPX). ``frame``:
#: FFV1 codes each frame's own in its slice headers and ignores the context's (PyAV sets no frame's aspect; FFmpeg's
#: ``setsar`` filter does: :meth:`VideoWriter._stamp`). ``container``: ProRes and DNxHR code none; the MOV muxer's
#: ``pasp`` box keeps it (written from the stream's codec parameters, which the context fills), not the containers of
#: :data:`_STREAM_SAR_CONTAINERS`. A stream copied into another file (a mux) keeps the first two by itself; the
#: third only if the copy is given the aspect again.
_SAR_CODING = {"libx264": "context", "libx265": "context", "png": "context", "tiff": "context", "dpx": "context",
               "ffv1": "frame", "prores_ks": "container", "dnxhd": "container"}
#: containers whose muxer writes the pixel aspect from the AVStream's own ``sample_aspect_ratio`` (Matroska's
#: DisplayWidth/DisplayHeight, MXF's descriptor), which PyAV 18 cannot set (``VideoStream.sample_aspect_ratio`` is a
#: read-only guess; setting it sets the codec context's)
_STREAM_SAR_CONTAINERS = (".mkv", ".mxf")


def is_rgb(pix_fmt: str) -> bool:
    """True for RGB pixel formats (``rgb24``, ``bgr0``, ``gbrp``...): frames are stored without a YUV
    conversion, so RGB input round-trips bit for bit through a lossless codec such as FFV1."""
    return pix_fmt.startswith(("rgb", "bgr", "gbr", "0rgb", "0bgr", "argb", "abgr"))


@cache
def _is_yuv(pix_fmt: str) -> bool:
    """True for YUV pixel formats (three components or more, not RGB: ``yuv420p``, ``nv12``, ``yuva444p``...);
    False for RGB, grey (one or two components) and palette formats."""
    import av

    fmt = av.VideoFormat(pix_fmt)
    return not fmt.is_rgb and len(fmt.components) >= 3


def codec_spec(codec: str) -> CodecSpec:
    try:
        return CODECS[codec]
    except KeyError:
        raise MediaError(f"unknown video codec {codec!r}", hint=f"choose one of {', '.join(CODECS)}") from None


#: VideoInfo.field_order -> AVFieldOrder code
_FIELD_CODES = {name: code for code, name in FIELD_ORDERS.items()}


def sequence_format(path: str | Path) -> tuple[str, str]:
    """The encoder and pixel format of the image sequence ``path`` (:data:`SEQUENCE_FORMATS`).

    Raises:
        MediaError: an extension that is not written (EXR, JPEG...), naming those that are.
    """
    ext = Path(path).suffix.lower()
    if ext in SEQUENCE_FORMATS:
        return SEQUENCE_FORMATS[ext]
    why = (" (EXR holds scene-linear floats; the render's pictures are display values)" if ext == ".exr" else
           " (a lossy image format)" if ext in (".jpg", ".jpeg") else "")
    raise MediaError(f"{path}: an image sequence is not written as '{ext or '(none)'}'{why}",
                     hint=f"name one of {', '.join(SEQUENCE_FORMATS)} (e.g. -o 'shot.%04d.dpx'), or a video file")


#: the 16-bit RGB an image format stores a deep plate in when it does not take the plate's own format
_DEEP_FORMAT = {"png": "rgb48be", "tiff": "rgb48le", "dpx": "rgb48le"}


def sequence_pix_fmt(path: str | Path, source_pix_fmt: str | None) -> str:
    """The pixel format an image sequence ``path`` is written in: a deep RGB source's own (more than 8 bits,
    :func:`~lipsyncctl.media.splice.deep_rgb`) where the format's encoder stores it, else that format's 16-bit RGB
    (a 16-bit PNG or TIFF, a 10-bit DPX plate come back at their depth: :mod:`lipsyncctl.media.splice`); a deep YUV
    source (10-bit ProRes) the format's deep RGB; any other the format's own (:data:`SEQUENCE_FORMATS`: 8-bit
    PNG/TIFF, 10-bit DPX)."""
    from lipsyncctl.media.splice import deep_rgb

    encoder, default = sequence_format(path)
    if source_pix_fmt is not None and deep_rgb(source_pix_fmt):
        return source_pix_fmt if source_pix_fmt in encoder_formats(encoder) else _DEEP_FORMAT[encoder]
    try:
        deep = source_pix_fmt is not None and pix_bits(source_pix_fmt) > 8
    except (ValueError, TypeError):
        deep = False
    return _DEEP_FORMAT[encoder] if deep and not deep_rgb(default) else default


def keeps_fields(codec: str, field_order: str | None) -> bool:
    """Whether a ``codec`` output of a source in ``field_order`` is written interlaced in that order: H.264
    (x264's interlaced coding), ProRes (interlaced frames), FFV1 (whole frames, the order in the container). H.265
    and DNxHR stay progressive (:data:`_FIELD_CODING`)."""
    return is_interlaced(field_order) and field_order in _FIELD_CODES and codec_spec(codec).encoder in _FIELD_CODING


def keeps_sample_aspect(codec: str, path: str | Path) -> bool:
    """Whether a ``codec`` output at ``path`` stores a pixel aspect other than 1 (:data:`_SAR_CODING`): not ProRes
    in an .mkv, nor DNxHR in an .mxf. An image sequence does (in each image)."""
    if is_image_sequence(path):
        return True
    coded = _SAR_CODING.get(codec_spec(codec).encoder)
    return coded != "container" or Path(path).suffix.lower() not in _STREAM_SAR_CONTAINERS


def keeps_hdr10(codec: str) -> bool:
    """Whether a ``codec`` output carries a source's HDR10 static metadata (H.264, H.265: :data:`_HDR_PARAMS`)."""
    return codec_spec(codec).encoder in _HDR_PARAMS


def check_container_rate(path: str | Path, fps: Fraction) -> None:
    """Fail fast when ``path``'s container cannot hold frames at ``fps`` (an .mxf: :data:`~lipsyncctl.media.rates.MXF_RATES`;
    12, 15 or 240 fps failed at the first frame written).

    Raises:
        MediaError: naming the rate and the rates it holds.
    """
    from lipsyncctl.media.rates import MXF_RATES

    def words(rate: Fraction) -> str:
        return f"{float(rate):.3f}".rstrip("0").rstrip(".")

    if Path(path).suffix.lower() == ".mxf" and Fraction(fps) not in MXF_RATES:
        held = ", ".join(words(r) for r in sorted(MXF_RATES))
        raise MediaError(f"{path}: an MXF cannot hold {words(Fraction(fps))} frames per second (it holds {held})",
                         hint="write a .mov, or conform the rate first (sync --fps 25)")


def _merge_params(opts: dict[str, str], key: str, *params: str) -> None:
    """Append ``params`` to the colon-separated encoder parameters ``opts[key]`` (``x264-params``...)."""
    opts[key] = ":".join(p for p in (opts.get(key, ""), *params) if p)


def _top_first(field_order: str) -> bool:
    """Whether the top field is shown first (:data:`~lipsyncctl.media.probe.SHOWN_FIRST`)."""
    return SHOWN_FIRST.get(field_order) == "top"


class VideoWriter:
    """Write frames to ``path`` at exactly ``fps`` (a Fraction).

    Args:
        path: final output path; written under a temporary name and renamed on :meth:`close`.
        fps: output frame rate, e.g. ``Fraction(30000, 1001)``.
        codec: ``h264`` | ``h265`` | ``prores`` | ``dnxhr`` | ``ffv1`` (see :data:`CODECS`).
        crf: quality for h264/h265 (lower is better; default 18 / 22).
        preset: x264/x265 speed preset.
        profile: ProRes (``proxy``..``4444xq``) or DNxHR (``dnxhr_lb``..``dnxhr_444``) profile.
        pix_fmt: output pixel format (default per codec, e.g. ``yuv420p``).
        color: colour tags to write and, for RGB frames, the matrix/range used to convert them.
        rotation: display-matrix rotation tag to store (counter-clockwise degrees); 0 stores none.
        sample_aspect: the pixel aspect ratio to store (anamorphic footage: its source's, so that the file
            plays at the same shape) where the codec or container holds one (:func:`keeps_sample_aspect`); 1 or
            None stores none (square).
        inputs: files that must never be overwritten (:class:`MediaError` if ``path`` is one).
        options: extra encoder options (strings), merged over the codec's defaults.
        threads: the encoder's thread count; None lets it use every CPU the process may (faster where
            there are many, but x264's output then depends on how many that is).
        field_order: the source's :attr:`~lipsyncctl.media.probe.VideoInfo.field_order`: an interlaced order
            (``tt``, ``bb``, ``tb``, ``bt``) writes interlaced-coded frames in that order where the codec can
            (:func:`keeps_fields`), so a 1080i master comes back as one; anything else, progressive.
        start_number: the first frame's number when ``path`` is an image sequence (``shot.%04d.png``: one
            image a frame, in the format of its extension, :data:`SEQUENCE_FORMATS`; ``codec``, ``crf``,
            ``preset`` and ``profile`` are not used then).

    Use as a context manager: on an exception the temporary file is deleted and nothing is renamed.
    """

    def __init__(self, path: str | Path, fps: Fraction, *, codec: str = "h264", crf: int | None = None,
                 preset: str = "medium", profile: str | None = None, pix_fmt: str | None = None,
                 color: ColorInfo | None = None, rotation: int = 0, inputs: tuple[str | Path, ...] | list = (),
                 options: dict[str, str] | None = None, threads: int | None = None,
                 sample_aspect: Fraction | None = None, field_order: str | None = None,
                 start_number: int = 1) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        if self.fps <= 0:
            raise MediaError(f"{path}: frame rate must be positive, got {fps}")
        self.start_number = start_number
        self.sequence = is_image_sequence(self.path)
        if self.sequence:  # its extension's image format: the codec, profile and field order are a video's
            encoder, default_pix = sequence_format(self.path)
            self.spec = CodecSpec(encoder, default_pix, (self.path.suffix,))
            codec, profile, field_order = encoder, None, None
        else:
            self.spec = codec_spec(codec)
        check_container_rate(self.path, self.fps)
        self.codec = codec
        self.pix_fmt = pix_fmt or self.spec.pix_fmt
        self.color = color
        self.rotation = int(rotation) % 360
        self.sample_aspect = Fraction(sample_aspect) if sample_aspect else Fraction(1)
        self.threads = threads
        #: the interlaced order written (None: progressive)
        self.field_order = field_order if keeps_fields(codec, field_order) else None
        self._stamps: list[Any] | None = None  # the filter graphs that set each frame's aspect and fields
        self.frames_written = 0
        self.packets_written = 0  # frames the file holds so far (the encoder keeps a few frames back)
        self._options = self._encoder_options(crf, preset, profile, options or {})
        self._atomic = atomic_output(self.path, inputs=inputs)
        self._tmp: Path = self._atomic.__enter__()
        self._container: Any = None
        self._stream: Any = None
        self._closed = False

    def _encoder_options(self, crf: int | None, preset: str, profile: str | None,
                         extra: dict[str, str]) -> dict[str, str]:
        opts = dict(self.spec.options)
        if self.spec.crf is not None:
            opts["crf"] = str(self.spec.crf if crf is None else crf)
            opts["preset"] = preset
        chosen = profile or self.spec.profile
        if chosen and self.spec.encoder == "prores_ks":
            opts["profile"] = _PRORES_PROFILES.get(chosen, chosen)
        elif chosen:
            opts["profile"] = chosen
        opts.update({k: str(v) for k, v in extra.items()})
        if self.field_order and _FIELD_CODING.get(self.spec.encoder) == "x264-params":
            _merge_params(opts, "x264-params", "tff=1" if _top_first(self.field_order) else "bff=1")
        hdr = _HDR_PARAMS.get(self.spec.encoder)
        if hdr is not None and self.color is not None and self.color.hdr10:
            key, mastering, light = hdr
            _merge_params(opts, key, *([f"{mastering}={self.color.mastering}"] if self.color.mastering else []),
                          *([f"{light}={self.color.light_level}"] if self.color.light_level else []))
        return opts

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)

    def _open(self, width: int, height: int) -> None:
        import av

        if self.pix_fmt.startswith(("yuv420", "yuvj420", "nv12")) and (width % 2 or height % 2):
            raise MediaError(f"{self.path}: {width}x{height} has an odd side, which {self.pix_fmt} cannot store",
                             hint="scale to even dimensions (prep does this with --scale/--max-size)")
        if not self.sequence and (why := size_refused(self.codec, width, height)):
            raise MediaError(f"{self.path}: {why}", hint="choose another codec (prores, ffv1), or scale the picture")
        try:
            if self.sequence:  # image2: one file a frame, numbered from start_number
                self._container = av.open(str(self._tmp), "w", format="image2",
                                          container_options={**BITEXACT, "start_number": str(self.start_number)})
            else:
                self._container = av.open(str(self._tmp), "w", container_options=BITEXACT)
            stream = self._container.add_stream(self.spec.encoder, rate=self.fps, options=self._options)
            stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
            stream.codec_context.time_base = 1 / self.fps
            stream.codec_context.thread_type = "AUTO"  # frame + slice threads where the encoder has them
            if self.threads:
                stream.codec_context.thread_count = self.threads
            if self.spec.codec_tag:
                stream.codec_tag = self.spec.codec_tag
            color = self._tags()
            if color is not None:
                ctx = stream.codec_context
                ctx.color_primaries = COLOR_CODES["primaries"].get(color.primaries or "", 2)
                ctx.color_trc = COLOR_CODES["transfer"].get(color.transfer or "", 2)
                ctx.colorspace = COLOR_CODES["matrix"].get(color.matrix or "", 2)
                ctx.color_range = COLOR_CODES["range"].get(color.range or "", 0)
            if self.rotation:
                stream.set_display_rotation(self.rotation)
            if self.sample_aspect != 1:  # the context's; FFV1 each frame's (:meth:`_stamp`): :data:`_SAR_CODING`
                stream.codec_context.sample_aspect_ratio = self.sample_aspect
            if self.field_order:
                stream.codec_context.field_order = _FIELD_CODES[self.field_order]
                if _FIELD_CODING.get(self.spec.encoder) == "flags":
                    stream.codec_context.flags |= _INTERLACED_FLAGS
            self._stream = stream
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.path}: cannot set up the {self.codec} encoder ({ffmpeg_reason(exc)})") from exc

    def _to_frame(self, frame: np.ndarray | Any) -> Any:
        import av

        if isinstance(frame, np.ndarray):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
            if self.color is None:
                self.color = DEFAULT_COLOR
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        out = self._stamp(self._convert(frame))
        tags = self._tags()
        if tags is not None:
            # Encoders such as prores_ks write the frame's tags into the bitstream.
            out.color_primaries = COLOR_CODES["primaries"].get(tags.primaries or "", 2)
            out.color_trc = COLOR_CODES["transfer"].get(tags.transfer or "", 2)
            out.colorspace = COLOR_CODES["matrix"].get(tags.matrix or "", 2)
            out.color_range = COLOR_CODES["range"].get(tags.range or "", 0)
        return out

    def _convert(self, frame: Any) -> Any:
        """``frame`` in the output's pixel format. RGB (or grey, a palette) into YUV is converted with the matrix and
        range the file is tagged with (:meth:`_tags`; untagged: swscale's default matrix, BT.601, and limited range,
        as a reader takes an untagged file), so that a reader that follows the tags gets the colours back. A YUV
        frame is read with its own matrix and range (swscale takes them from the frame: a YUV source's tags are
        the file's), and RGB into RGB needs neither."""
        name = frame.format.name
        if name == self.pix_fmt:
            return frame
        if is_rgb(self.pix_fmt) or _is_yuv(name):
            return frame.reformat(format=self.pix_fmt, threads=SWS_THREADS)
        tags = self._tags() or ColorInfo()
        return frame.reformat(format=self.pix_fmt, threads=SWS_THREADS,
                              dst_colorspace=_SWS_MATRIX.get(tags.matrix or ""),
                              dst_color_range="JPEG" if tags.range == "pc" else "MPEG")

    def _stamp(self, frame: Any) -> Any:
        """``frame`` given what an encoder reads from each frame rather than from its context: the pixel aspect
        (FFV1 codes it in every slice header: :data:`_SAR_CODING`) and the interlaced order, flagged where
        :attr:`field_order` is set. PyAV cannot set a frame's aspect or flags: FFmpeg's ``setsar`` and ``setfield``
        filters do, without touching its pixels."""
        if self._stamps is None:
            steps = []
            if self.sample_aspect != 1 and _SAR_CODING.get(self.spec.encoder) == "frame":
                num, den = self.sample_aspect.numerator, self.sample_aspect.denominator
                steps.append(("setsar", f"r={num}/{den}:max={max(num, den)}"))  # else terms of at most 100
            if self.field_order:
                steps.append(("setfield", "mode=" + ("tff" if _top_first(self.field_order) else "bff")))
            self._stamps = [frame_filter(frame, name, args, 1 / self.fps) for name, args in steps]
        for graph in self._stamps:
            frame.pts, frame.time_base = self.frames_written, 1 / self.fps
            graph.push(frame)
            frame = graph.pull()
        return frame

    def _tags(self) -> ColorInfo | None:
        """The tags written: :attr:`color`, except in two cases. An RGB pixel format (``bgr0`` for a bit-exact FFV1,
        ``gbrp``...) stores no YUV matrix and full range (``gbr``/``pc``). A YUV format made from an RGB source
        (tagged ``gbr``: PNG, DPX) states the matrix and range its pictures are converted with (:meth:`_convert`),
        :data:`DEFAULT_COLOR`'s: H.264 and H.265 allow ``gbr`` (no matrix) only in 4:4:4, and players that honour
        the tags showed such files in wrong colours. BT.709 and limited range at every size: the file says so, it
        is how the render's own RGB frames are written, and ``yuvj`` full range is for sources that are; BT.601
        would only be the better guess of a player that ignores the tags of a picture under 720 lines. Primaries
        and transfer are kept."""
        color = self.color
        if color is None:
            return None
        if is_rgb(self.pix_fmt):
            return ColorInfo(color.primaries, color.transfer, "gbr", "pc")
        if color.matrix == "gbr":
            return replace(color, matrix=DEFAULT_COLOR.matrix, range=DEFAULT_COLOR.range)
        return color

    def write(self, frame: np.ndarray | Any) -> None:
        """Append one frame: ``(H, W, 3)`` uint8 RGB, or an ``av.VideoFrame`` (any pixel format)."""
        import av

        if self._closed:
            raise ValueError("write() after close()")
        out = self._to_frame(frame)
        if self._stream is None:
            self._open(out.width, out.height)
        elif (out.width, out.height) != (self._stream.width, self._stream.height):
            raise ValueError(f"frame size {out.width}x{out.height} differs from the stream's "
                             f"{self._stream.width}x{self._stream.height}")
        out.pts = self.frames_written
        out.time_base = 1 / self.fps
        out.pict_type = 0  # a decoder's frame says I/P/B, and x264 would force its keyframes (every frame, from ProRes)
        try:
            for packet in self._stream.encode(out):
                self._container.mux(packet)
                self.packets_written += 1
        except av.error.FFmpegError as exc:
            if write_failure(exc) is not None:  # disk full, I/O error: the output's fault, not the input's
                raise write_error(self.path, exc, written=file_size(self._tmp)) from exc
            raise MediaError(f"{self.path}: encoding frame {self.frames_written} failed ({ffmpeg_reason(exc)})") from exc
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and rename it into place. Returns the final path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self._stream is None:
                raise MediaError(f"{self.path}: no frames were written")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        except BaseException as exc:
            written = file_size(self._tmp)
            self._cleanup(exc)
            if write_failure(exc) is not None:
                raise write_error(self.path, exc, written=written) from exc
            raise
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the output: close the container and delete the temporary file."""
        if self._closed and self._container is None and not self._tmp.exists():
            return
        self._closed = True
        self._cleanup(exc or MediaError(f"{self.path}: aborted"))

    def _cleanup(self, exc: BaseException) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
