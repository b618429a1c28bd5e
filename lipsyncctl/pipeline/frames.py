"""Frame and audio I/O of the sync pipeline on PyAV: indexed reading with seek, encoding, muxing.

Kept small and specific to what the pipeline needs (random access to a few frames by index with
bounded memory; one encoder per output; the new audio muxed at its own rate and channels).

Frames are RGB ``uint8`` ``(H, W, 3)`` arrays. Frame ``i`` is the one whose presentation time is
nearest to ``start_time + i / fps``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import ConfigError, MediaError
from lipsyncctl.pipeline.plan import read_runs

#: codec name of the config -> (encoder, pix_fmt, options)
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {}),
    "h265": ("libx265", "yuv420p", {}),
    "prores_hq": ("prores_ks", "yuv422p10le", {"profile": "3"}),
    "prores_4444": ("prores_ks", "yuv444p10le", {"profile": "4"}),
    "dnxhr_hq": ("dnxhd", "yuv422p", {"profile": "dnxhr_hq"}),
    # RGB planes: lossless for the RGB frames we hand over, so untouched pixels stay bit-exact.
    "ffv1": ("ffv1", "bgr0", {}),
}
#: 4:2:0/4:2:2 source formats that x264/x265 may keep.
_KEEP_PIX = {"yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"}


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, av.error.InvalidDataError)


class FrameReader:
    """Random access to the frames of a video file by index, decoding forward from the nearest seek.

    Memory: only the frames asked for are kept (a window's worth)."""

    def __init__(self, path: Path, fps: Fraction, start_time: float = 0.0) -> None:
        import av

        self.path = Path(path)
        self.fps = Fraction(fps)
        self.start_time = start_time
        try:
            self._container = av.open(str(path))
        except _av_errors() as exc:
            raise MediaError(f"{path}: cannot open ({exc})") from exc
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._iter: Iterator[Any] | None = None
        self._next = 0  # index of the next frame the decoder will produce (valid if _iter)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _index(self, frame: Any) -> int:
        t = frame.time if frame.time is not None else 0.0
        return round((t - self.start_time) * self.fps)

    def _seek(self, index: int) -> None:
        tb = self._stream.time_base
        seconds = self.start_time + float(Fraction(index) / self.fps)
        target = int((seconds - 0.5 / float(self.fps)) / float(tb)) if tb else 0
        self._container.seek(max(target, 0), stream=self._stream, backward=True, any_frame=False)
        self._iter = self._container.decode(self._stream)
        self._next = -1  # unknown until the first frame

    def iter_range(self, first: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames ``first .. stop-1`` in order, each exactly once (a missing index repeats the previous
        frame, and a file that ends early holds its last frame, so the count is always ``stop - first``)."""
        if self._iter is None and first == 0:
            self._iter = self._container.decode(self._stream)
            self._next = 0
        elif self._iter is None or not (0 <= self._next <= first <= self._next + 48):
            self._seek(first)
        wanted = first
        prev: Any = None  # the last decoded frame before `wanted` (av frame) or its RGB array
        try:
            for frame in self._iter:  # type: ignore[union-attr]
                idx = self._index(frame)
                self._next = idx + 1
                if idx < wanted:
                    prev = frame
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                while wanted <= idx and wanted < stop:
                    if wanted < idx and prev is not None:
                        if not isinstance(prev, np.ndarray):
                            prev = prev.to_ndarray(format="rgb24")
                        yield wanted, prev
                    else:
                        yield wanted, rgb
                    wanted += 1
                prev = rgb
                if wanted >= stop:
                    return
        except _av_errors() as exc:
            raise MediaError(f"{self.path}: decoding failed near frame {wanted} ({exc})") from exc
        self._iter = None
        if prev is None:
            raise MediaError(f"{self.path}: no frame at index {first} (the file is shorter than probed)")
        if not isinstance(prev, np.ndarray):
            prev = prev.to_ndarray(format="rgb24")
        while wanted < stop:
            yield wanted, prev
            wanted += 1

    def read(self, indices: list[int]) -> dict[int, np.ndarray]:
        """The frames at ``indices`` (any order, repeats allowed), decoded run by run."""
        out: dict[int, np.ndarray] = {}
        need = set(indices)
        for lo, hi in read_runs(indices):
            for idx, rgb in self.iter_range(lo, hi + 1):
                if idx in need:
                    out[idx] = rgb
        return out


@dataclass
class VideoSpec:
    """What an output video stream looks like."""

    width: int
    height: int
    fps: Fraction
    codec: str = "h264"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None
    source_pix_fmt: str | None = None
    color: Any = None  # lipsyncctl.media.probe.ColorInfo


def _color_codes(color: Any) -> dict[str, int]:
    """ffmpeg colour names -> AVCodecContext codes (only the tags that are set)."""
    if color is None:
        return {}
    from lipsyncctl.media import probe as pr

    tables = {
        "color_primaries": (getattr(pr, "_PRIMARIES", {}), color.primaries),
        "color_trc": (getattr(pr, "_TRANSFER", {}), color.transfer),
        "colorspace": (getattr(pr, "_MATRIX", {}), color.matrix),
        "color_range": (getattr(pr, "_RANGE", {}), color.range),
    }
    out = {}
    for attr, (table, name) in tables.items():
        code = next((k for k, v in table.items() if v == name), None)
        if name is not None and code is not None:
            out[attr] = int(code)
    return out


class VideoWriter:
    """Encodes RGB frames into a video-only file."""

    def __init__(self, path: Path, spec: VideoSpec) -> None:
        import av

        if spec.codec not in CODECS:
            raise ConfigError(f"output.codec: unknown codec {spec.codec!r}")
        encoder, pix_fmt, options = CODECS[spec.codec]
        if spec.pix_fmt:
            pix_fmt = spec.pix_fmt
        elif spec.codec in ("h264", "h265") and spec.source_pix_fmt in _KEEP_PIX:
            pix_fmt = spec.source_pix_fmt
        opts = dict(options)
        if spec.codec in ("h264", "h265"):
            opts.update({"crf": str(spec.crf), "preset": spec.preset})
            if spec.codec == "h265":
                opts["x265-params"] = "log-level=error"
        self.path = path
        self._container = av.open(str(path), "w")
        try:
            self._stream = self._container.add_stream(encoder, rate=spec.fps, options=opts)
        except (ValueError, *_av_errors()) as exc:
            self._container.close()
            raise MediaError(f"{path}: cannot encode {spec.codec} into this container ({exc})",
                             hint="use .mov or .mkv for ProRes/DNxHR/FFV1, .mp4 for H.264/H.265") from exc
        ctx = self._stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = spec.width, spec.height, pix_fmt
        ctx.time_base = Fraction(1) / spec.fps
        self._stream.time_base = Fraction(1) / spec.fps
        self._codes = _color_codes(spec.color)
        for attr, code in self._codes.items():
            setattr(ctx, attr, code)
        if spec.codec == "h265" and path.suffix.lower() in (".mp4", ".mov"):
            ctx.codec_tag = "hvc1"
        self.frames = 0
        self._failed = False

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        if "colorspace" in self._codes:
            frame.colorspace = self._codes["colorspace"]
        if "color_range" in self._codes:
            frame.color_range = self._codes["color_range"]
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except _av_errors() as exc:
            self._failed = True
            raise MediaError(f"{self.path}: encoding failed ({exc})") from exc
        self.frames += 1

    def close(self) -> None:
        try:
            if not self._failed:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()


def read_audio(path: Path, rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream: float32 ``(channels, samples)`` at ``rate`` (None = native)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: no audio stream", hint="give a WAV/FLAC/AAC file with the new dialogue")
            stream = container.streams.audio[0]
            rate = rate or stream.codec_context.sample_rate
            channels = channels or stream.codec_context.channels
            layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except _av_errors() as exc:
        raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: the audio stream is empty")
    return np.concatenate(chunks, axis=1).astype(np.float32), int(rate)


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or pad with silence (zeros) to ``samples`` along the last axis."""
    if audio.shape[-1] >= samples:
        return audio[..., :samples]
    pad = np.zeros((*audio.shape[:-1], samples - audio.shape[-1]), dtype=audio.dtype)
    return np.concatenate([audio, pad], axis=-1)


def mux(video_only: Path, audio: np.ndarray | None, rate: int, out: Path, codec: str = "aac") -> None:
    """Copy the video packets of ``video_only`` into ``out`` and encode ``audio`` ``(ch, n)`` beside them."""
    import av

    with av.open(str(video_only)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        astream = None
        if audio is not None:
            ch = audio.shape[0]
            layout = "mono" if ch == 1 else "stereo" if ch == 2 else f"{ch}c"
            name = "aac" if codec == "aac" else "pcm_s16le"
            try:
                astream = dst.add_stream(name, rate=rate, layout=layout)
            except (ValueError, *_av_errors()) as exc:
                raise MediaError(f"{out}: cannot store {codec} audio in this container ({exc})",
                                 hint="use .mov or .mkv for PCM audio") from exc
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        if astream is not None and audio is not None:
            fmt = "fltp" if astream.codec_context.name == "aac" else "s16"
            block = 1024
            for i in range(0, audio.shape[1], block):
                part = np.ascontiguousarray(audio[:, i : i + block])
                if fmt == "s16":
                    part = (np.clip(part, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(part, format=fmt, layout=astream.layout.name)
                frame.sample_rate = rate
                frame.pts = i
                for packet in astream.encode(frame):
                    dst.mux(packet)
            for packet in astream.encode(None):
                dst.mux(packet)
