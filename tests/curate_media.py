"""Clips generated at test time for the curate tests: H.264 at 25 fps with a 16 kHz mono tone, from RGB frames
(real faces from the bundled sample: tests/sync_media.sample_frames)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.mediagen import _encode_audio, tone


def write_talking_clip(path: Path, frames: list[np.ndarray], fps: int = 25, audio: np.ndarray | None = None,
                       sample_aspect: Fraction | None = None, x264_params: str | None = None) -> Path:
    """``frames`` (RGB uint8, one size) as H.264 at ``fps`` with mono 16 kHz AAC: ``audio`` (float32 samples)
    or a tone exactly as long as the picture. ``sample_aspect``: an anamorphic pixel aspect to store;
    ``x264_params`` e.g. ``tff=1`` (interlaced coding)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps, options={"x264-params": x264_params} if x264_params else None)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if sample_aspect is not None:
            vs.codec_context.sample_aspect_ratio = sample_aspect
        aus = c.add_stream("aac", rate=16000, layout="mono")
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        _encode_audio(c, aus, tone(len(frames) / fps, 16000, 1) if audio is None else audio)
    return path


def grey_frames(like: np.ndarray, count: int, level: int = 40) -> list[np.ndarray]:
    """``count`` flat grey frames of ``like``'s size (a faceless shot after a hard cut)."""
    return [np.full(like.shape, level, np.uint8)] * count


def flat_frames(count: int, size: int = 64, level: int = 100) -> list[np.ndarray]:
    """``count`` flat ``size`` x ``size`` frames (a picture for tests about the audio)."""
    return [np.full((size, size, 3), level, np.uint8)] * count


def write_lossless_rgb(path: Path, frames: np.ndarray) -> Path:
    """``frames`` ``(n, H, W, 3)`` RGB as an FFV1 ``bgr0`` .mkv at 25 fps, video only (decodes back bit-exact)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="bgr0")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    return path
