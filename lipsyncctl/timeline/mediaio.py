"""The few media operations the timeline job needs, on :mod:`lipsyncctl.media` (one seam to adapt)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError


def read_audio(path: Path, rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Float32 ``(channels, n)`` of the first audio stream at ``rate`` (None = the file's own rate and channels),
    in memory (a shot's cut)."""
    from lipsyncctl.media.audio import read_audio as _read

    rate = int(rate or _own_rate(path))
    x = _read(path, rate, channels)  # channels None: the file's own
    x = x[None] if x.ndim == 1 else x.T
    return np.ascontiguousarray(x, dtype=np.float32), rate


def spool_audio(path: Path, rate: int | None = None, channels: int | None = None, *,
                folder: Path | None = None, start: Fraction | float = 0) -> tuple[np.ndarray, int]:
    """:func:`read_audio`'s ``(channels, n)`` for a whole dub or M&E (from ``start`` of its timeline): decoded once
    into an unnamed file in ``folder`` and mapped (:func:`lipsyncctl.media.audio.spool_audio`), so a feature-length
    dub per language costs disk, not memory."""
    from lipsyncctl.media.audio import spool_audio as _spool

    samples, rate = _spool(path, rate or _own_rate(path), channels, folder=folder, start=start)
    return samples.T, rate


def scratch_mix(channels: int, samples: int, folder: Path | None = None) -> np.ndarray:
    """Writable float32 zeros ``(channels, samples)`` on disk (:func:`lipsyncctl.media.audio.scratch_samples`)."""
    from lipsyncctl.media.audio import scratch_samples

    return scratch_samples(samples, channels, folder=folder).T


def _own_rate(path: Path) -> int:
    """The sample rate of ``path``'s first audio stream (its header's)."""
    from lipsyncctl.media.probe import probe

    info = probe(path)
    if not info.audio:
        raise MediaError(f"{path}: no audio stream", hint="give a WAV/FLAC/AAC file with the dub")
    return int(info.audio[0].sample_rate)


def read_frames(path: Path, first: int, count: int, deinterlace: bool = False,
                fps: Fraction | None = None) -> Iterator[np.ndarray]:
    """RGB frames ``first .. first + count - 1`` of ``path`` on its nominal-rate grid, streamed (past the
    end the last frame is held, so exactly ``count`` frames come out). The clip pipeline reads the same
    way (:class:`~lipsyncctl.media.reader.IndexedReader`), so a shot's frame ``i`` means the same picture
    in the render, the QC and the conform. ``deinterlace``: an interlaced file's progressive pictures (the QC's
    measurements). ``fps``: the grid (default the nominal rate; an image sequence's rate, which its files do not
    state: :attr:`~lipsyncctl.timeline.segments.Segment.media_fps`)."""
    from lipsyncctl.media.reader import read_range

    return read_range(path, first, count, fps, deinterlace=deinterlace)


def read_pictures(path: Path, first: int, count: int, fps: Fraction | None = None) -> Iterator[tuple[np.ndarray, Any]]:
    """As :func:`read_frames`, each RGB frame with the decoded :class:`~lipsyncctl.media.reader.Frame` it came from
    (its stored samples: :mod:`lipsyncctl.media.splice`)."""
    from lipsyncctl.media.reader import read_range

    return read_range(path, first, count, fps, sources=True)


def video_writer(path: Path, fps: Fraction, config: Any, *, color: Any = None,
                 source_pix_fmt: str | None = None, sample_aspect: Fraction | None = None,
                 field_order: str | None = None) -> Any:
    """A :class:`lipsyncctl.media.writer.VideoWriter` for the run's ``output`` settings, exactly as the clip
    pipeline opens it (:func:`lipsyncctl.pipeline.output.open_writer`; a context manager, written under a
    temporary name, renamed on success)."""
    from lipsyncctl.pipeline.output import open_writer

    return open_writer(path, fps, config.output, color=color, source_pix_fmt=source_pix_fmt,
                       sample_aspect=sample_aspect, field_order=field_order)


def mux(video_only: Path, samples: np.ndarray | Iterable[np.ndarray], rate: int, out: Path, codec: str = "aac",
        inputs: tuple[Path, ...] = (), timecode: str | None = None) -> Path:
    """``out`` = the video stream of ``video_only`` + ``samples`` ``(ch, n)`` at ``rate`` (or an iterable of such
    blocks, streamed) (atomic), starting at ``timecode`` where its container keeps one
    (:data:`~lipsyncctl.media.mux.TIMECODE_CONTAINERS`)."""
    from lipsyncctl.media.mux import TIMECODE_CONTAINERS, mux_audio

    if out.suffix.lower() not in TIMECODE_CONTAINERS:
        timecode = None
    blocks = [samples] if isinstance(samples, np.ndarray) else samples
    return mux_audio(video_only, (block.T for block in blocks), out, rate=rate, codec=codec, inputs=inputs,
                     timecode=timecode)


def stamp_timecode(path: Path, timecode: str, reel: str | None, inputs: tuple[Path, ...] = ()) -> Path:
    """Write the start ``timecode`` and ``reel`` name into the finished render ``path`` (streams copied)."""
    from lipsyncctl.media.mux import stamp_timecode as _stamp

    return _stamp(path, timecode, reel=reel, inputs=inputs)
