"""The few media operations the timeline job needs, on :mod:`lipsyncctl.media` (one seam to adapt)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError

#: config ``output.codec`` -> (media writer codec, profile)
_CODECS = {"h264": ("h264", None), "h265": ("h265", None), "prores_hq": ("prores", "hq"),
           "prores_4444": ("prores", "4444"), "dnxhr_hq": ("dnxhr", "dnxhr_hq"), "ffv1": ("ffv1", None)}


def read_audio(path: Path, rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Float32 ``(channels, n)`` of the first audio stream at ``rate`` (None = the file's own rate and channels)."""
    from lipsyncctl.media.audio import read_audio as _read
    from lipsyncctl.media.probe import probe

    if rate is None or channels is None:
        info = probe(path)
        if not info.audio:
            raise MediaError(f"{path}: no audio stream", hint="give a WAV/FLAC/AAC file with the dub")
        rate, channels = rate or info.audio[0].sample_rate, channels or info.audio[0].channels
    x = _read(path, rate, channels)
    x = x[None] if x.ndim == 1 else x.T
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def read_frames(path: Path, first: int, count: int) -> Iterator[np.ndarray]:
    """RGB frames ``first .. first + count - 1`` of ``path``, streamed (a file that ends early repeats its
    last frame, so exactly ``count`` frames come out)."""
    from lipsyncctl.media.reader import VideoReader

    if count <= 0:
        return
    made, last = 0, None
    with VideoReader(path) as reader:
        if first > 0:
            reader.seek(frame=first)
        for frame in reader:
            if frame.index < first:
                continue
            last = frame.image
            yield last
            made += 1
            if made == count:
                return
    if last is None:
        raise MediaError(f"{path}: no frame at index {first}")
    for _ in range(count - made):
        yield last


def video_writer(path: Path, fps: Fraction, config: Any, *, color: Any = None) -> Any:
    """A :class:`lipsyncctl.media.writer.VideoWriter` for the run's ``output`` settings (a context manager;
    written under a temporary name, renamed on success). FFV1 stores RGB planes (lossless for our frames)."""
    from lipsyncctl.media.writer import VideoWriter

    codec, profile = _CODECS[config.output.codec]
    pix_fmt = config.output.pix_fmt or ("bgr0" if codec == "ffv1" else None)
    crf = config.output.crf if codec in ("h264", "h265") else None
    return VideoWriter(path, fps, codec=codec, crf=crf, preset=config.output.encoder_preset, profile=profile,
                       pix_fmt=pix_fmt, color=color)


def mux(video_only: Path, samples: np.ndarray, rate: int, out: Path, codec: str = "aac",
        inputs: tuple[Path, ...] = ()) -> Path:
    """``out`` = the video stream of ``video_only`` + ``samples`` ``(ch, n)`` at ``rate`` (atomic)."""
    from lipsyncctl.media.mux import mux_audio

    return mux_audio(video_only, np.ascontiguousarray(samples.T), out, rate=rate, codec=codec, inputs=inputs)
