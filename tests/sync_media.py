"""Clips and sounds generated at test time for the sync tests (PyAV; real face frames from the bundled sample)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl import paths

SAMPLE = paths.DATA_DIR / "sample.mp4"
SAMPLE_DUB = paths.DATA_DIR / "sample_dub.wav"


@contextlib.contextmanager
def tiny_models(models_dir: Path, *sets: str) -> Iterator[tuple[cfg.Config, object]]:
    """``(config, models)``: the tiny preset (guidance 1.0, detection on every frame, plus ``sets``) and its
    models, generated into ``models_dir`` and loaded through the real loaders (``LIPSYNCCTL_MODELS`` points
    there while the context is open)."""
    from lipsyncctl.pipeline.networks import load_networks

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(models_dir))
        config = cfg.resolve("tiny", ["inference.guidance=1.0", "faces.detect_every=1", *sets])
        yield config, load_networks(config)


def with_sets(base: cfg.Config, *sets: str) -> cfg.Config:
    """``base`` with ``--set``-style overrides applied."""
    return cfg.resolve(base.to_dict(), list(sets))


def sample_frames(n: int, scale: float = 0.5, first: int = 0) -> list[np.ndarray]:
    """``n`` RGB frames of the bundled sample (a real face), resized by ``scale`` (even sizes)."""
    import av
    import cv2

    out = []
    with av.open(str(SAMPLE)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i < first:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
            out.append(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
            if len(out) == n:
                break
    return out


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: Fraction, codec: str = "ffv1",
               pix_fmt: str = "yuv420p", times: list[float] | None = None, bt709: bool = False,
               tags: dict[str, str] | None = None, sample_aspect: Fraction | None = None) -> Path:
    """Encode RGB frames (a list or a generator; a lossless FFV1 .mkv by default) at ``fps``.

    ``times`` (seconds per frame) writes a VFR clip (1/90000 time base); ``bt709`` converts with the
    BT.709 matrix and tags primaries/transfer/matrix bt709, limited range. ``tags``: stream metadata
    (e.g. ``{"timecode": "01:00:00:00"}``). ``sample_aspect``: an anamorphic pixel aspect to store."""
    import itertools

    import av

    it = iter(frames)
    first = next(it)
    frames = itertools.chain([first], it)
    h, w = first.shape[:2]
    tb = Fraction(1, 90000) if times is not None else 1 / Fraction(fps)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.codec_context.time_base = tb
        s.time_base = tb
        for key, value in (tags or {}).items():
            s.metadata[key] = value
        if sample_aspect is not None:
            s.codec_context.sample_aspect_ratio = sample_aspect
        if bt709:
            ctx = s.codec_context
            ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = 1, 1, 1, 1
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if bt709:
                f = f.reformat(format=pix_fmt, dst_colorspace="itu709", dst_color_range="MPEG")
                f.color_primaries, f.color_trc, f.colorspace, f.color_range = 1, 1, 1, 1
            f.pts = int(round(Fraction(times[i]) / tb)) if times is not None else i
            f.time_base = tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def two_face_frames(n: int, first: int = 0) -> list[np.ndarray]:
    """``n`` frames 660 x 480 with two real faces side by side: a larger one left of x = 400 (the bundled
    sample at full size, cropped; box about 90 px) and a smaller one right of it (other frames of the
    sample at 0.6, cropped; box about 75 px, centre near (537, 175))."""
    big = sample_frames(n, scale=1.0, first=first)
    small = sample_frames(n, scale=0.6, first=first + 20)
    out = []
    for a, b in zip(big, small, strict=True):
        canvas = np.full((480, 660, 3), 60, np.uint8)
        canvas[:, :400] = a[120:600, 60:460]
        canvas[:360, 400:] = b[60:420, 40:300]
        out.append(canvas)
    return out


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1, freq: float = 220.0) -> Path:
    """A tone with a syllable-like envelope, PCM16 WAV."""
    import av

    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    tone = 0.3 * np.sin(2 * np.pi * freq * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    data = np.repeat(tone[None], channels, axis=0).astype(np.float32)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout=layout)
        for i in range(0, n, 1024):
            part = (data[:, i : i + 1024] * 32767).astype(np.int16).T.reshape(1, -1)
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="s16", layout=layout)
            f.sample_rate = rate
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def decode_rgb(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def video_rate(path: Path) -> Fraction:
    import av

    with av.open(str(path)) as c:
        return Fraction(c.streams.video[0].average_rate)


def audio_info(path: Path) -> tuple[int, int, int]:
    """(sample rate, channels, decoded samples) of the first audio stream."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(s))
        return s.codec_context.sample_rate, s.codec_context.channels, n


SOUND_RATE = 16000
SOUND_BURST = (0.1, 0.16)  # a 1 kHz burst at this time of the dub's own sound (seconds from its first sample)


def burst_sound(seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz mono silence with a 1 kHz burst over :data:`SOUND_BURST` (a sound whose place is measured)."""
    t = np.arange(int(seconds * SOUND_RATE)) / SOUND_RATE
    return np.where((t >= SOUND_BURST[0]) & (t < SOUND_BURST[1]), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)


def write_sound(path: Path, fmt: str, codec: str, sound: np.ndarray, *, audio_at: float = 0.0,
                 frames: list[np.ndarray] | None = None, video_at: int = 0) -> Path:
    """``sound`` (mono, 16 kHz) as ``codec`` in a ``fmt`` file whose audio stream starts ``audio_at`` seconds into
    the file's timeline; with ``frames``, a 25 fps picture beside it from frame time ``video_at`` (0: from 0)."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        if frames is not None:
            vs = c.add_stream("mpeg4", rate=25)
            vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        a = c.add_stream(codec, rate=SOUND_RATE, layout="mono")
        size = a.codec_context.frame_size or 1024
        fmt_name = a.codec_context.format.name
        pts = round(audio_at * SOUND_RATE)
        for i in range(0, len(sound), size):
            part = sound[i:i + size]
            if len(part) < size and a.codec_context.frame_size:
                part = np.pad(part, (0, size - len(part)))
            data = (part * 32767).astype(np.int16) if fmt_name.startswith("s16") else part
            frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt_name.rstrip("p") if
                                               not fmt_name.endswith("p") else fmt_name, layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SOUND_RATE, pts, Fraction(1, SOUND_RATE)
            pts += len(part)
            for packet in a.encode(frame):
                c.mux(packet)
        for packet in a.encode(None):
            c.mux(packet)
        if frames is not None:
            for i, rgb in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                vf.pts, vf.time_base = video_at + i, Fraction(1, 25)
                for packet in vs.encode(vf):
                    c.mux(packet)
            for packet in vs.encode(None):
                c.mux(packet)
    return path


def burst_at(samples: np.ndarray) -> float:
    """Seconds from the start of ``samples`` (16 kHz mono) to the burst's first loud sample."""
    return float(np.argmax(np.abs(samples) > 0.1)) / SOUND_RATE
