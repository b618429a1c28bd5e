"""Test clips generated on the fly with PyAV: odd and variable frame rates, stereo 44.1 kHz, no audio,
rotation tags, ProRes/MJPEG/HEVC, image sequences, and broken files (empty, truncated, garbage).

Every frame carries its index as 8 black/white blocks along the top edge (bit 0 on the left), plus a
red square in the top-left corner, so tests can tell which source frame ended up where and which way up
it is, even after lossy coding.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.conftest import SHARED

BLOCK = 8  # pixels per index bit
FIXTURE = SHARED / "fixtures" / "demo1_video.mp4"


def frame_image(index: int, width: int = 96, height: int = 64) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB: grey background, index bits on top, red marker top-left."""
    img = np.full((height, width, 3), 96, np.uint8)
    img[BLOCK:, :, 1] = (np.arange(width) * 255 // max(1, width - 1)).astype(np.uint8)[None, :]  # a ramp
    for bit in range(8):
        value = 255 if (index >> bit) & 1 else 0
        img[:BLOCK, BLOCK * (bit + 1): BLOCK * (bit + 2)] = value
    img[:BLOCK, :BLOCK] = (255, 0, 0)
    return img


def read_index(img: np.ndarray) -> int:
    """The frame index drawn by :func:`frame_image` (image in its upright orientation)."""
    bits = [img[2:BLOCK - 2, BLOCK * (b + 1) + 2: BLOCK * (b + 2) - 2].mean() > 128 for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def has_marker_top_left(img: np.ndarray) -> bool:
    """True when the red marker is in the top-left corner (the picture is upright)."""
    r, g, b = img[2:BLOCK - 2, 2:BLOCK - 2].reshape(-1, 3).mean(axis=0)
    return r > 150 and g < 100 and b < 100


def tone(seconds: float, rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    """``(n, channels)`` float32 sine; channel c at ``freq * (c + 1)``."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1).astype(np.float32)


def make_clip(path: Path, *, fps: Fraction | int = 25, frames: int = 25, size: tuple[int, int] = (96, 64),
              codec: str = "libx264", pix_fmt: str = "yuv420p", times: Sequence[float] | None = None,
              time_base: Fraction | None = None, rotation: int = 0, audio_rate: int | None = 44100,
              audio_channels: int = 2, audio_seconds: float | None = None, audio_codec: str = "aac",
              options: dict[str, str] | None = None, sample_aspect: Fraction | None = None) -> Path:
    """Write a clip. ``times`` (seconds per frame) makes it VFR; ``time_base`` sets the stream's tick
    (e.g. 1/1000 as in MKV, 1/90000 as phones write); ``rotation`` stores a display-matrix tag
    (counter-clockwise degrees) over upright-drawn... no: over pixels drawn *rotated back*, so that a
    player applying the tag shows the picture upright. ``audio_rate=None`` writes no audio."""
    import av

    fps = Fraction(fps)
    w, h = size
    k = (rotation // 90) % 4
    if times is None:
        times = [i / fps for i in range(frames)]
    tb = time_base or (Fraction(1, 90000) if times is not None and time_base is None and _irregular(times)
                       else 1 / fps)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=fps, options=options or {})
        # Stored pixels are the upright picture turned clockwise by the tag's angle.
        vs.width, vs.height = (h, w) if k % 2 else (w, h)
        vs.pix_fmt = pix_fmt
        vs.codec_context.time_base = tb
        vs.time_base = tb
        if rotation:
            vs.set_display_rotation(rotation)
        if sample_aspect is not None:
            vs.codec_context.sample_aspect_ratio = sample_aspect
        aus = None
        if audio_rate:
            aus = c.add_stream(audio_codec, rate=audio_rate, layout=f"{audio_channels}c" if audio_channels > 2
                               else ("mono" if audio_channels == 1 else "stereo"))
        for i, t in enumerate(times):
            img = np.ascontiguousarray(np.rot90(frame_image(i, w, h), -k))
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt, dst_colorspace="itu709")
            f.pts = int(round(Fraction(t) / tb))
            f.time_base = tb
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if aus is not None:
            seconds = audio_seconds if audio_seconds is not None else float(times[-1] + 1 / fps)
            _encode_audio(c, aus, tone(seconds, audio_rate, audio_channels))
    return path


def _irregular(times: Sequence[float]) -> bool:
    d = np.diff(np.asarray(times, dtype=float))
    return bool(len(d) and np.ptp(d) > 1e-6)


def _encode_audio(container, stream, samples: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    import av

    rate = stream.codec_context.sample_rate
    layout = stream.codec_context.layout.name
    fmt = stream.codec_context.format.name
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate,
                                  frame_size=stream.codec_context.frame_size or 1024)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1)), format="flt", layout=layout)
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    n = 0
    for out in [*resampler.resample(frame), *resampler.resample(None)]:
        out.pts = n
        n += out.samples
        for p in stream.encode(out):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def vfr_times(frames: int, rate: float = 30.0, seed: int = 0) -> list[float]:
    """Phone-like timestamps: mostly 1/rate apart, some frames 1.5-2.5x late (dropped frames)."""
    rng = np.random.default_rng(seed)
    steps = np.where(rng.random(frames) < 0.25, rng.uniform(1.5, 2.5, frames), rng.uniform(0.97, 1.03, frames))
    times = np.concatenate([[0.0], np.cumsum(steps[:-1] / rate)])
    return [round(float(t), 5) for t in times]


def make_image_sequence(folder: Path, frames: int = 10, size: tuple[int, int] = (96, 64)) -> Path:
    """PNG files ``folder/img_0001.png``...; returns the ``img_%04d.png`` pattern."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        Image.fromarray(frame_image(i, *size)).save(folder / f"img_{i + 1:04d}.png")
    return folder / "img_%04d.png"


def make_wav(path: Path, seconds: float, rate: int = 48000, channels: int = 2) -> Path:
    import wave

    pcm = (tone(seconds, rate, channels) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def make_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_garbage(path: Path, size: int = 4096) -> Path:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def make_truncated(src: Path, path: Path, keep: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def cut_fixture(path: Path, seconds: float = 2.0) -> Path:
    """The first ``seconds`` of the shared fixture, stream-copied (HEVC 1080x1920 + AAC 44.1k stereo)."""
    import av

    with av.open(str(FIXTURE)) as src, av.open(str(path), "w") as dst:
        outs = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        for packet in src.demux(*[src.streams[i] for i in outs]):
            if packet.dts is None:
                continue
            if packet.pts is not None and packet.pts * packet.time_base >= seconds:
                continue
            packet.stream = outs[packet.stream.index]
            dst.mux(packet)
    return path
