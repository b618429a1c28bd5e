"""Put an audio track (a file or a sample array) beside a video stream that is copied untouched."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError
from lipsyncctl.media.atomic import atomic_output, file_size, write_error, write_failure
from lipsyncctl.media.audio import _audio_stream, iter_audio, layout_name, truncate_frame
from lipsyncctl.media.container import ffmpeg_reason, opened, video_stream
from lipsyncctl.media.writer import BITEXACT

#: Audio codecs for :func:`mux_audio`: name -> (encoder, sample format). ``pcm24`` is 24-bit (in 32-bit
#: samples, as libavcodec takes it).
AUDIO_CODECS = {"aac": ("aac", "fltp"), "pcm": ("pcm_s16le", "s16"), "pcm24": ("pcm_s24le", "s32")}
#: Containers that hold PCM audio (``codec="pcm"``/``"pcm24"``); .mp4 does not.
PCM_CONTAINERS = (".mov", ".mkv", ".avi", ".wav", ".mxf")
#: Containers whose sound must be PCM at one rate (FFmpeg's MXF writer: 48 kHz, no AAC): container -> its rate.
FIXED_AUDIO = {".mxf": 48000}
#: Video codecs delivered with PCM sound (mastering/intermediate codecs): ``codec="auto"`` gives them 24-bit PCM.
PCM_VIDEO_CODECS = ("prores", "dnxhd")


def auto_audio_codec(video_codec: str, out: str | Path) -> str:
    """``pcm24`` for a mastering codec (:data:`PCM_VIDEO_CODECS`: ProRes, DNxHD/HR) in a container that
    holds PCM, else ``aac``: a ProRes master keeps a 24-bit PCM dub as recorded instead of AAC."""
    pcm = video_codec in PCM_VIDEO_CODECS and Path(out).suffix.lower() in PCM_CONTAINERS
    return "pcm24" if pcm else "aac"
_SAMPLE_DTYPES = {"flt": np.float32, "s16": np.int16, "s32": np.int32, "dbl": np.float64, "u8": np.uint8}


def encodable_rate(encoder: str, rate: int, out: str | Path | None = None) -> int:
    """``rate`` if the audio ``encoder`` takes it, else the nearest rate above it that it takes (its highest where
    none is: AAC holds at most 96 kHz, so a 192 kHz dub is encoded at 96 kHz); in a container of one rate
    (:data:`FIXED_AUDIO`: ``out`` an .mxf) that rate."""
    import av

    fixed = FIXED_AUDIO.get(Path(out).suffix.lower()) if out is not None else None
    if fixed is not None:
        return fixed
    rates = av.codec.Codec(encoder, "w").audio_rates
    if not rates or rate in rates:
        return rate
    above = [r for r in rates if r > rate]
    return min(above) if above else max(rates)


def _array_frames(chunks: Iterator[np.ndarray], channels: int, rate: int, fmt: str,
                  frame_size: int, out_rate: int | None = None) -> Iterator[Any]:
    """Encoder frames of float32 ``(n, channels)`` sample ``chunks`` (any lengths) at ``rate``, a slice at a time,
    resampled to ``out_rate`` (default: ``rate``)."""
    import av

    layout = layout_name(channels)
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=out_rate or rate, frame_size=frame_size)
    pts = 0
    for data in chunks:
        for i in range(0, len(data), 16 * frame_size):
            chunk = np.ascontiguousarray(data[i:i + 16 * frame_size], dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += chunk.shape[1] // channels
            yield from resampler.resample(frame)
    yield from resampler.resample(None)


def _sample_chunks(audio: np.ndarray | Iterable[np.ndarray]) -> tuple[int, Iterator[np.ndarray]]:
    """``(channels, chunks)`` of an array or an iterable of arrays, each ``(n,)`` or ``(n, channels)``."""
    def two_d(a: np.ndarray) -> np.ndarray:
        return a[:, None] if a.ndim == 1 else a

    if isinstance(audio, np.ndarray):
        audio = [audio]
    chunks = (two_d(np.asarray(a)) for a in audio)
    first = next(chunks, None)
    if first is None:
        raise ValueError("no audio samples (an empty iterable)")
    return first.shape[1], itertools.chain([first], chunks)


#: Containers a start timecode can be written to (MOV/MP4: a ``tmcd`` track; MXF: the material package's
#: timecode; Matroska: a ``TIMECODE`` tag), as ``ffmpeg -timecode`` writes them. Not .m4v: libavformat writes it
#: with its ``ipod`` muxer, which writes no ``tmcd`` track (measured: the timecode was lost in silence).
TIMECODE_CONTAINERS = (".mov", ".mp4", ".mxf", ".mkv")
_TIMECODE = re.compile(r"^\d{2}:\d{2}:\d{2}[:;]\d{2}$")
#: Containers whose video stream keeps a reel (tape) name as libavformat writes it (MOV: in the ``tmcd`` track;
#: Matroska: a tag); MP4/M4V and MXF write none (measured with ffmpeg 7: ``-metadata:s:v reel_name=...``)
REEL_CONTAINERS = (".mov", ".mkv")


def tags_not_carried(output: str | Path, timecode: str | None, reel: str | None) -> str | None:
    """A warning when the source's start ``timecode`` or ``reel`` name cannot be written into ``output``'s container
    (an NLE relinks by them); None when both are carried or there are none."""
    ext = Path(output).suffix.lower()
    lost = ([f"start timecode {timecode}"] if timecode and ext not in TIMECODE_CONTAINERS else []) + \
        ([f"reel name {reel}"] if reel and ext not in REEL_CONTAINERS else [])
    if not lost:
        return None
    keeps = ", ".join(REEL_CONTAINERS if reel else TIMECODE_CONTAINERS)
    return (f"the source's {' and '.join(lost)} {'are' if len(lost) > 1 else 'is'} not carried: "
            f"{ext or 'this output'} cannot hold "
            f"{'them' if len(lost) > 1 else 'it'} ({keeps} can; an NLE relinks by them)")


def tag_timecode(dst: Any, vout: Any, timecode: str | None, reel: str | None = None, *,
                 rate: Fraction | None = None) -> None:
    """Give the output ``dst`` (opened for writing, header not yet written) the start timecode ``timecode``
    (``HH:MM:SS:FF``, ``;`` before the frames for drop frame) of its video stream ``vout``, and the reel
    (tape) name ``reel``. libavformat's muxers turn these tags into a MOV/MP4 ``tmcd`` track (holding the
    reel name in a MOV), an MXF timecode, Matroska tags; other containers keep none (see
    :data:`TIMECODE_CONTAINERS`). ``rate``: the video's frame rate, which the MOV muxer counts the timecode in:
    a stream copied from a template has none, and without it the MOV muxer dropped the ``tmcd`` track of a ProRes
    stream without a word (an H.264 one kept it).

    Raises:
        MediaError: ``timecode`` is not ``HH:MM:SS:FF``.
    """
    if timecode is not None:
        if not _TIMECODE.match(timecode):
            raise MediaError(f"timecode {timecode!r}: expected HH:MM:SS:FF")
        dst.metadata["timecode"] = timecode
        vout.metadata["timecode"] = timecode
        if rate:
            vout.codec_context.framerate = rate
    if reel:
        vout.metadata["reel_name"] = reel


#: containers whose edit lists are counted in the movie's timescale (FFmpeg's MOV/MP4 writer: 1000 by default)
EDIT_LIST_CONTAINERS = (".mp4", ".mov", ".m4v")


def container_options(out: str | Path, audio_rate: int | None) -> dict[str, str]:
    """The options an output is opened with: bit-exact, and for an MP4/MOV with sound, the sound's rate as the movie's
    timescale. Its edit lists (an AAC encoder's priming and end padding cut off) are counted in it: in milliseconds,
    a 59.94 fps output's sound decoded up to a millisecond short or long of frames / fps (44 samples)."""
    if audio_rate and Path(out).suffix.lower() in EDIT_LIST_CONTAINERS:
        return {**BITEXACT, "movie_timescale": str(int(audio_rate))}
    return dict(BITEXACT)


def stamp_timecode(path: str | Path, timecode: str, *, reel: str | None = None, inputs: tuple | list = ()) -> Path:
    """Rewrite ``path`` (atomically, every stream copied, nothing re-encoded) with the start timecode
    ``timecode`` and reel name ``reel`` (:func:`tag_timecode`). ``path`` must be one of
    :data:`TIMECODE_CONTAINERS` and not one of ``inputs``."""
    import av

    path = Path(path)
    if path.suffix.lower() not in TIMECODE_CONTAINERS:
        raise MediaError(f"{path}: a '{path.suffix}' file holds no timecode",
                         hint=f"write one of {', '.join(TIMECODE_CONTAINERS)}")
    with atomic_output(path, inputs=inputs) as tmp, opened(path) as src:
        try:
            sound = next((s for s in src.streams if s.type == "audio"), None)
            rate = int(sound.codec_context.sample_rate) if sound is not None else None
            with av.open(str(tmp), "w", container_options=container_options(path, rate)) as dst:
                streams = [s for s in src.streams if s.type in ("video", "audio")]
                outs = {s.index: _copy_stream(dst, s) for s in streams}
                vin = video_stream(src, path)
                tag_timecode(dst, outs[vin.index], timecode, reel, rate=vin.average_rate or vin.guessed_rate)
                for packet in src.demux(streams):
                    if packet.size == 0 or packet.dts is None and packet.pts is None:
                        continue
                    packet.stream = outs[packet.stream.index]
                    dst.mux(packet)
        except av.error.FFmpegError as exc:
            if write_failure(exc) is not None:
                raise write_error(path, exc, written=file_size(tmp)) from exc
            raise MediaError(f"{path}: writing its timecode failed ({ffmpeg_reason(exc)})") from exc
    return path


def mux_audio(video: str | Path, audio: str | Path | np.ndarray | Iterable[np.ndarray], out: str | Path, *, rate: int | None = None,
              codec: str = "aac", bit_rate: int | None = None, duration: float | Fraction | None = None,
              pad: bool = False, inputs: tuple | list = (), timecode: str | None = None,
              reel: str | None = None, audio_stream: int | None = None, audio_start: Fraction | float = 0) -> Path:
    """Write ``out``: the video stream of ``video`` copied as is, plus ``audio`` encoded as ``codec``.

    Args:
        video: file whose first video stream is copied (no re-encode).
        audio: a media file (its first audio stream, at its own rate and channels) or float32 samples
            ``(n,)`` / ``(n, channels)`` at ``rate`` Hz, or an iterable of such arrays (streamed: a long
            sound never held whole).
        out: destination, written atomically; must not be ``video``, ``audio`` or one of ``inputs``.
        rate: sample rate of an array ``audio`` (required then).
        codec: ``aac`` (default), ``pcm`` (16-bit) or ``pcm24`` (24-bit; both need a .mov/.mkv output), or
            ``auto`` (:func:`auto_audio_codec` of the copied video stream).
        bit_rate: AAC bit rate (default: the encoder's, about 128 kb/s for stereo).
        duration: cut the audio to this many seconds (a Fraction for an exact sample count:
            ``round(duration * rate)``).
        pad: with ``duration``, also pad a shorter audio with silence to exactly that length.

    A rate the encoder cannot hold (AAC above 96 kHz, or an odd rate) is resampled to the nearest one it can
    (:func:`encodable_rate`); PCM keeps every rate, except in an MXF (48 kHz only: resampled to it).
        timecode, reel: the start timecode and reel name to write (:func:`tag_timecode`).
        audio_stream: the container's index of the audio stream of a file ``audio`` (None: its first).
        audio_start: the time of a file ``audio``'s timeline whose sound is written first (the output's 0):
            earlier samples are left out, a stream that starts later begins with silence (:func:`iter_audio`).
    """
    import av

    out = Path(out)
    if codec == "auto":
        with opened(video) as probe_src:
            codec = auto_audio_codec(video_stream(probe_src, video).codec_context.name, out)
    if codec not in AUDIO_CODECS:
        raise MediaError(f"unknown audio codec {codec!r}", hint=f"choose one of {', '.join(AUDIO_CODECS)}")
    if codec.startswith("pcm") and out.suffix.lower() not in PCM_CONTAINERS:
        raise MediaError(f"{out}: PCM audio needs one of {', '.join(PCM_CONTAINERS)}")
    if not codec.startswith("pcm") and out.suffix.lower() in FIXED_AUDIO:
        raise MediaError(f"{out}: {out.suffix.lower()[1:].upper()} holds PCM audio only", hint="use pcm or pcm24")
    encoder, fmt = AUDIO_CODECS[codec]
    protect = [video, *inputs] + ([audio] if isinstance(audio, (str, Path)) else [])
    with atomic_output(out, inputs=protect) as tmp, opened(video) as src:
        vin = video_stream(src, video)
        if not isinstance(audio, (str, Path)):
            if not rate:
                raise ValueError("rate= is required when audio is samples")
            out_rate = encodable_rate(encoder, rate, out)
        else:
            with opened(audio) as asrc:
                ain = _audio_stream(asrc, Path(audio), audio_stream)
                index, own = ain.index, int(ain.codec_context.sample_rate)
                channels = int(ain.codec_context.layout.nb_channels)
            a_rate = out_rate = encodable_rate(encoder, own, out)
        try:
            with av.open(str(tmp), "w", container_options=container_options(out, out_rate)) as dst:
                vout = _copy_stream(dst, vin)
                frame_rate = vin.average_rate or vin.guessed_rate
                if out.suffix.lower() == ".mxf":  # MXF's muxer takes its edit rate from the stream's frame rate
                    vout.codec_context.framerate = frame_rate
                tag_timecode(dst, vout, timecode, reel, rate=frame_rate)
                if not isinstance(audio, (str, Path)):
                    channels, chunks = _sample_chunks(audio)
                    aout = _add_audio(dst, encoder, out_rate, channels, bit_rate)
                    frames = _array_frames(chunks, channels, rate, fmt, aout.codec_context.frame_size or 1024,
                                           out_rate)
                    _interleave(src, vin, dst, vout, aout, frames, out_rate, duration, pad)
                else:
                    aout = _add_audio(dst, encoder, a_rate, channels, bit_rate)
                    # from audio_start on the file's timeline: cut there, or led by silence to where the sound starts
                    chunks = iter_audio(audio, a_rate, channels, start=float(audio_start), stream_index=index)
                    frames = _array_frames(chunks, channels, a_rate, fmt, aout.codec_context.frame_size or 1024)
                    _interleave(src, vin, dst, vout, aout, frames, a_rate, duration, pad)
        except av.error.FFmpegError as exc:
            if write_failure(exc) is not None:  # disk full, I/O error: name the output, not its temporary file
                raise write_error(out, exc, written=file_size(tmp)) from exc
            raise MediaError(f"{out}: muxing failed ({ffmpeg_reason(exc)})") from exc
    return out


def _copy_stream(dst: Any, stream: Any) -> Any:
    """A stream of ``dst`` for ``stream``'s packets as they are, with its pixel aspect: the template copies the codec
    parameters, where a MOV reader does not put the aspect of its ``pasp`` box (a ProRes or DNxHR stream, whose
    bitstream holds none, would come out square)."""
    out = dst.add_stream_from_template(stream)
    if stream.type == "video" and stream.sample_aspect_ratio:
        out.codec_context.sample_aspect_ratio = stream.sample_aspect_ratio
    if stream.type == "video" and stream.codec_context.name == "hevc" and dst.format.name in _HVC1_FORMATS:
        from lipsyncctl.media.writer import codec_spec

        # the template drops the writer's tag: the muxer wrote hev1, which Apple's players refuse
        out.codec_tag = codec_spec("h265").codec_tag
    return out


#: muxers (MP4, MOV) whose H.265 is tagged ``hvc1`` (:data:`lipsyncctl.media.writer.CODECS`' h265; M4V holds none)
_HVC1_FORMATS = frozenset({"mp4", "mov"})


def _add_audio(dst: Any, encoder: str, rate: int, channels: int, bit_rate: int | None) -> Any:

    stream = dst.add_stream(encoder, rate=rate, layout=layout_name(channels))
    if bit_rate:
        stream.codec_context.bit_rate = bit_rate
    return stream


def _interleave(src: Any, vin: Any, dst: Any, vout: Any, aout: Any, frames: Iterator[Any], rate: int,
                duration: float | Fraction | None, pad: bool = False) -> None:
    """Mux copied video packets and encoded audio in time order, so neither is buffered whole."""
    limit = None if duration is None else int(round(Fraction(duration) * rate))
    written = 0
    audio = iter(frames)
    if pad and limit is not None:
        audio = _with_silence(audio, aout.codec_context, rate)

    def push_audio(until: float) -> None:
        nonlocal written
        while written / rate <= until and (limit is None or written < limit):
            frame = next(audio, None)
            if frame is None:
                return
            if limit is not None and written + frame.samples > limit:
                frame = truncate_frame(frame, limit - written)
            frame.pts = written
            frame.time_base = Fraction(1, rate)
            written += frame.samples
            for packet in aout.encode(frame):
                dst.mux(packet)

    for packet in src.demux(vin):
        if packet.size == 0:  # the demuxer's end-of-stream marker (MKV gives real packets without dts)
            continue
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is not None:
            push_audio(float(stamp * packet.time_base))
        packet.stream = vout
        dst.mux(packet)
    push_audio(float("inf"))
    for packet in aout.encode(None):
        dst.mux(packet)


def _with_silence(frames: Iterator[Any], ctx: Any, rate: int) -> Iterator[Any]:
    """``frames``, then silent frames (of the encoder's format and layout) forever; the caller cuts."""
    import av

    yield from frames
    size = ctx.frame_size or 1024
    channels = ctx.layout.nb_channels
    fmt = ctx.format.name
    shape = (channels, size) if ctx.format.is_planar else (1, size * channels)
    zeros = np.zeros(shape, dtype=_SAMPLE_DTYPES[fmt.rstrip("p")])
    while True:
        frame = av.AudioFrame.from_ndarray(zeros, format=fmt, layout=ctx.layout.name)
        frame.sample_rate = rate
        yield frame
