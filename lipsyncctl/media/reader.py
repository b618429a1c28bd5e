"""Streaming frame reader and a constant-frame-rate conformer.

Memory is bounded: frames are decoded one at a time (plus the decoder's own small buffer); nothing
holds the clip. Times are seconds from the container's zero, as floats; source timestamps stay exact
fractions internally so that a 30000/1001 clip read at 30000/1001 maps frame ``i`` onto slot ``i``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError
from lipsyncctl.media.container import DEFAULT_SEQUENCE_FPS, ffmpeg_reason, open_input, video_stream
from lipsyncctl.media.probe import MediaInfo, probe


def rotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, multiple of 90) to ``(H, W, C)`` pixels."""
    k = (int(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


@dataclass
class Frame:
    """A decoded frame. ``time`` is in seconds; ``image`` is ``(H, W, 3)`` uint8 RGB (rotation applied
    if the reader was asked to); ``av_frame`` is the decoder's frame (stored pixels, no rotation)."""

    index: int
    time: Fraction
    av_frame: Any
    rotation: int = 0
    apply_rotation: bool = True

    @property
    def image(self) -> np.ndarray:
        rgb = self.av_frame.to_ndarray(format="rgb24")
        return rotate(rgb, self.rotation) if self.apply_rotation else rgb


class VideoReader:
    """Iterate the frames of a video file (or ``image2`` pattern) in presentation order.

    ``for frame in reader`` yields :class:`Frame`; :meth:`images` yields RGB arrays. :meth:`seek`
    positions the next read at a frame index or a time (decoding from the previous keyframe).

    Args:
        path: the video.
        apply_rotation: rotate pixels by the file's rotation metadata (default True).
        info: a :func:`probe` result to reuse (probed if not given).
        thread_type: PyAV decoder threading (``"AUTO"`` = frame + slice threads).
    """

    def __init__(self, path: str | Path, *, apply_rotation: bool = True, info: MediaInfo | None = None,
                 thread_type: str = "AUTO", sequence_fps: Fraction = DEFAULT_SEQUENCE_FPS) -> None:
        self.path = Path(path)
        self.info = info or probe(self.path, sequence_fps=sequence_fps)
        if self.info.video is None:
            raise MediaError(f"{self.path}: no video stream")
        self.video = self.info.video
        self.apply_rotation = apply_rotation
        self._container = open_input(self.path, sequence_fps=sequence_fps)
        self._stream = video_stream(self._container, self.path)
        self._stream.thread_type = thread_type
        self._tb = Fraction(self._stream.time_base) if self._stream.time_base else 1 / self.video.fps
        self._skip_before: Fraction | None = None
        self._reindex = False
        self._next_index = 0

    @property
    def rotation(self) -> int:
        return self.video.rotation

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of yielded images."""
        return self.video.display_size if self.apply_rotation else (self.video.width, self.video.height)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def seek(self, *, frame: int | None = None, time: float | Fraction | None = None) -> None:
        """Make the next frame read the first one at or after ``time`` seconds (or frame index
        ``frame``, which for VFR input is counted at the nominal rate). Frame indices after a seek
        are ``round((time - start_time) * nominal_fps)``."""
        if (frame is None) == (time is None):
            raise ValueError("seek() takes exactly one of frame= or time=")
        target = Fraction(frame) / self.video.nominal_fps + Fraction(self.video.start_time) if frame is not None \
            else Fraction(time)
        # Seek to the keyframe before target, then decode forward and drop frames before it.
        self._container.seek(max(0, int(target / self._tb)), stream=self._stream, backward=True, any_frame=False)
        # Tolerate timestamp rounding (half a tick, at most 1 ms), not a whole frame.
        self._skip_before = target - min(self._tb / 2, Fraction(1, 1000))
        self._reindex = True

    def __iter__(self) -> Iterator[Frame]:
        import av

        decoded = 0
        try:
            for av_frame in self._container.decode(self._stream):
                pts = av_frame.pts if av_frame.pts is not None else av_frame.dts
                t = Fraction(pts) * self._tb if pts is not None else Fraction(decoded) / self.video.fps
                decoded += 1
                if self._skip_before is not None and t < self._skip_before:
                    continue
                self._skip_before = None
                if self._reindex:  # after a seek: count from the frame we landed on
                    self._reindex = False
                    self._next_index = round((t - Fraction(self.video.start_time)) * self.video.nominal_fps)
                yield Frame(self._next_index, t, av_frame, self.rotation, self.apply_rotation)
                self._next_index += 1
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.path}: decoding failed after frame {self._next_index} "
                             f"({ffmpeg_reason(exc)}); the file may be truncated or corrupt") from exc

    def images(self) -> Iterator[np.ndarray]:
        """Yield ``(H, W, 3)`` uint8 RGB frames."""
        for frame in self:
            yield frame.image


def conform_cfr(frames: Iterable[Frame], fps: Fraction, *, start: float | Fraction = 0,
                count: int | None = None, tolerance: Fraction | None = None) -> Iterator[tuple[int, Frame]]:
    """Resample a (possibly VFR) frame stream onto a constant rate.

    Output frame ``k`` has time ``start + k / fps`` and shows the last source frame whose time is
    ``<= start + k / fps + tolerance`` (the first source frame for slots before it). ``tolerance``
    (default 1 ms, at most a quarter of an output frame) absorbs timestamp rounding such as 29.97 fps
    stored in a millisecond time base. Frames are repeated or dropped as needed; yields ``(k, frame)`` with the
    same :class:`Frame` object for repeated slots. With ``count`` None, output ends with the last slot at
    or before the last source frame's time; pass ``count`` (usually ``round(duration * fps)``) to fix
    the length.

    Args:
        frames: source frames in presentation order (e.g. a :class:`VideoReader`).
        fps: output rate.
        start: time (seconds) of output frame 0.
        count: number of output frames; the last source frame is held if the source ends early.
    """
    fps = Fraction(fps)
    start = Fraction(start)
    tol = Fraction(tolerance) if tolerance is not None else min(Fraction(1, 1000), 1 / (4 * fps))
    step = 1 / fps
    k = 0
    current: Frame | None = None
    for frame in frames:
        if count is not None and k >= count:
            return
        # Emit every slot whose time is before this frame (they show the current frame).
        while current is not None and frame.time > start + k * step + tol:
            if count is not None and k >= count:
                return
            yield k, current
            k += 1
        if current is None:
            # First frame: earlier slots (source starts late) show it too.
            while frame.time > start + k * step + tol and (count is None or k < count):
                yield k, frame
                k += 1
        current = frame
    if current is None:
        return
    if count is None:
        # The last source frame fills a slot only if one falls on its own time.
        if start + k * step - tol <= current.time:
            yield k, current
        return
    while k < count:
        yield k, current
        k += 1
