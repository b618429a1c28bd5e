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

from lipsyncctl.errors import DecodeError, MediaError
from lipsyncctl.media.container import (
    DEFAULT_SEQUENCE_FPS,
    SWS_THREADS,
    ffmpeg_reason,
    frame_filter,
    is_image_sequence,
    open_input,
    video_stream,
)
from lipsyncctl.media.probe import MediaInfo, probe
from lipsyncctl.media.rates import exact, time_tolerance


def rotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, multiple of 90) to ``(H, W, C)`` pixels."""
    k = (int(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


@dataclass
class Frame:
    """A decoded frame. ``time`` is in seconds; ``image`` is ``(H, W, 3)`` uint8 RGB (rotation applied
    if the reader was asked to); ``av_frame`` is the decoder's frame (stored pixels, no rotation), or the
    progressive picture made of it (:func:`deinterlace`), which then keeps the decoder's frame as ``stored``."""

    index: int
    time: Fraction
    av_frame: Any
    rotation: int = 0
    apply_rotation: bool = True
    #: the decoder's own frame where ``av_frame`` is a filtered copy of it (deinterlaced), else None
    stored: Any = None

    @property
    def image(self) -> np.ndarray:
        return self._rgb(self.av_frame)

    @property
    def source(self) -> Any:
        """The decoder's frame, both fields as stored (what an output keeps: :mod:`lipsyncctl.media.splice`)."""
        return self.av_frame if self.stored is None else self.stored

    def source_image(self, image: np.ndarray | None = None) -> np.ndarray:
        """:attr:`source` as RGB: ``image`` (:attr:`image`, already converted) when that is the same picture."""
        if self.stored is None:
            return self.image if image is None else image
        return self._rgb(self.stored)

    def _rgb(self, av_frame: Any) -> np.ndarray:
        rgb = to_rgb24(av_frame)
        return rotate(rgb, self.rotation) if self.apply_rotation else rgb


def to_rgb24(av_frame: Any) -> np.ndarray:
    """``av_frame`` as ``(H, W, 3)`` uint8 RGB (its own matrix and range). A chroma-subsampled frame deeper than 8 bits
    (10-bit 4:2:2 ProRes, 4:2:0 HEVC) has its chroma upsampled to 16-bit 4:4:4 first: swscale's direct conversion
    of those to 8-bit RGB comes out about two levels dark (128 grey read 126; 4:4:4 and RGB sources convert exactly),
    which the networks saw and a picture written back from RGB (a quarter-turned 4:2:2 source) kept on every pixel."""
    parts = av_frame.format.components
    if len(parts) >= 3 and parts[0].bits > 8 and (parts[1].width, parts[1].height) != (parts[0].width, parts[0].height):
        full = av_frame.reformat(format="yuv444p16le", threads=SWS_THREADS)
        full.colorspace, full.color_range = av_frame.colorspace, av_frame.color_range  # read with its own
        return full.to_ndarray(format="rgb24", threads=SWS_THREADS)
    return av_frame.to_ndarray(format="rgb24", threads=SWS_THREADS)


class VideoReader:
    """Iterate the frames of a video file (or ``image2`` pattern) in presentation order.

    ``for frame in reader`` yields :class:`Frame`; :meth:`images` yields RGB arrays. :meth:`seek`
    positions the next read at a frame index or a time (decoding from the previous keyframe).

    Args:
        path: the video.
        apply_rotation: rotate pixels by the file's rotation metadata (default True).
        info: a :func:`probe` result to reuse (probed if not given).
        thread_type: PyAV decoder threading (``"AUTO"`` = frame + slice threads).
        sequence_fps: the rate of an image sequence (its files state none); default: the rate ``info`` was
            probed at, else :data:`~lipsyncctl.media.container.DEFAULT_SEQUENCE_FPS`.
    """

    def __init__(self, path: str | Path, *, apply_rotation: bool = True, info: MediaInfo | None = None,
                 thread_type: str = "AUTO", sequence_fps: Fraction | None = None) -> None:
        self.path = Path(path)
        if sequence_fps is None:  # an image sequence plays at the rate it was probed at (its files state none)
            probed = info is not None and info.video is not None and is_image_sequence(self.path)
            sequence_fps = info.video.fps if probed else DEFAULT_SEQUENCE_FPS  # type: ignore[union-attr]
        self.info = info or probe(self.path, sequence_fps=sequence_fps)
        if self.info.video is None:
            raise MediaError(f"{self.path}: no video stream")
        self.video = self.info.video
        self.apply_rotation = apply_rotation
        self._container = open_input(self.path, sequence_fps=sequence_fps)
        self._stream = video_stream(self._container, self.path)
        self._stream.thread_type = thread_type
        self._tb = Fraction(self._stream.time_base) if self._stream.time_base else 1 / self.video.fps
        self._thread_type = thread_type
        self._sequence_fps = sequence_fps
        self._skip_before: Fraction | None = None
        self._landing: Fraction | None = None  # where the last container seek was asked to land
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
        are ``round((time - start_time) * nominal_fps)``.

        Decoding resumes at the keyframe before the target and drops the frames before it. Demuxers
        without an index (MPEG-TS, some MPEG-PS and raw streams) may land on the keyframe *after* the
        target; the first decoded frame shows that, and the read then seeks further back (1, 2, 4 ...
        seconds), at last decoding from the start, so that no frame is skipped."""
        if (frame is None) == (time is None):
            raise ValueError("seek() takes exactly one of frame= or time=")
        target = Fraction(frame) / self.video.nominal_fps + Fraction(self.video.start_time) if frame is not None \
            else Fraction(time)
        # Tolerate timestamp rounding (half a tick, at most 1 ms), not a whole frame.
        self._skip_before = target - self._tolerance
        self._reindex = True
        self._seek_container(target)

    @property
    def _tolerance(self) -> Fraction:
        return min(self._tb / 2, Fraction(1, 1000))

    def _seek_container(self, landing: Fraction) -> None:
        """Seek the demuxer to the keyframe before ``landing`` (or reopen the file at or before its start)."""
        if landing <= Fraction(self.video.start_time) + self._tolerance:
            self._reopen()
            self._landing = None  # decoding starts at the first frame: nothing earlier to find
            return
        self._container.seek(max(0, int(landing / self._tb)), stream=self._stream, backward=True, any_frame=False)
        self._landing = landing

    def _reopen(self) -> None:
        self._container.close()
        self._container = open_input(self.path, sequence_fps=self._sequence_fps)
        self._stream = video_stream(self._container, self.path)
        self._stream.thread_type = self._thread_type

    def _overshot(self, t: Fraction | None) -> bool:
        """After a seek, True (and a further-back seek made) when the first decoded frame at ``t`` is past
        the requested landing time, or none came (``t`` None): the demuxer skipped the keyframe before it."""
        landing, self._landing = self._landing, None
        if landing is None or (t is not None and t <= landing + self._tolerance):
            return False
        assert self._skip_before is not None
        target = self._skip_before + self._tolerance
        back = max(Fraction(1), 2 * (target - landing))
        self._seek_container(target - back)
        return True

    def __iter__(self) -> Iterator[Frame]:
        import av

        decoded = 0
        try:
            while True:
                for av_frame in self._container.decode(self._stream):
                    pts = av_frame.pts if av_frame.pts is not None else av_frame.dts
                    t = Fraction(pts) * self._tb if pts is not None else Fraction(decoded) / self.video.fps
                    decoded += 1
                    if self._landing is not None and self._overshot(t):
                        break  # sought again, further back: decode from there
                    if self._skip_before is not None and t < self._skip_before:
                        continue
                    self._skip_before = None
                    if self._reindex:  # after a seek: count from the frame we landed on
                        self._reindex = False
                        self._next_index = round((t - Fraction(self.video.start_time)) * self.video.nominal_fps)
                    yield Frame(self._next_index, t, av_frame, self.rotation, self.apply_rotation)
                    self._next_index += 1
                else:
                    if self._landing is not None and self._overshot(None):
                        continue  # the seek landed past the last keyframe: nothing decoded
                    return
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{self.path}: decoding failed after frame {self._next_index} "
                              f"({ffmpeg_reason(exc)}); the file may be truncated or corrupt",
                              frame=self._next_index) from exc

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
    tol = Fraction(tolerance) if tolerance is not None else time_tolerance(fps)
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


def deinterlace(frames: Iterable[Frame]) -> Iterator[Frame]:
    """``frames`` (decoded in order, two fields each) made progressive by FFmpeg's ``bwdif`` filter, one frame per
    frame (``mode=send_frame``: the first field's time, the same count and timestamps; the field order from each
    frame's flags). Each picture depends on its frame and the frames either side of it only, so reads that
    start a little before the frames they want (:data:`SEEK_MARGIN`) give the pictures of a read from the start.
    Each :class:`Frame` keeps the decoder's frame as :attr:`Frame.stored`. Streams: the filter holds a frame
    or two, flushed at the end."""
    graph: Any = None
    waiting: list[Frame] = []  # in order; bwdif gives frame i once it has seen frame i + 1

    def ready() -> Iterator[Frame]:
        while True:
            try:
                out = graph.pull()
            except (BlockingIOError, EOFError):  # it needs the next frame; or it is flushed
                return
            frame = waiting.pop(0)
            yield Frame(frame.index, frame.time, out, frame.rotation, frame.apply_rotation, stored=frame.source)

    for frame in frames:
        if graph is None:
            graph = frame_filter(frame.av_frame, "bwdif", "mode=send_frame:parity=auto:deint=all",
                                 frame.av_frame.time_base or Fraction(1, 1000))
        waiting.append(frame)
        graph.push(frame.av_frame)
        yield from ready()
    if graph is not None:
        graph.push(None)
        yield from ready()


def index_runs(indices: Iterable[int], max_gap: int = 24) -> list[tuple[int, int]]:
    """Group frame indices into inclusive ``(lo, hi)`` runs, each read with at most one seek.

    Sorted unique indices are split wherever two neighbours are more than ``max_gap`` apart, so a
    set of frames that wraps around (a loop) or skips ahead never decodes everything in between.
    """
    runs: list[tuple[int, int]] = []
    for idx in sorted(set(indices)):
        if runs and idx - runs[-1][1] <= max_gap:
            runs[-1] = (runs[-1][0], idx)
        else:
            runs.append((idx, idx))
    return runs


#: How far before a seek target decoding resumes, so that the slot at the target shows the frame on
#: screen then (for VFR input, possibly a frame that started well before the target).
SEEK_MARGIN = Fraction(1)


class IndexedReader:
    """Frames of a video by index on a constant-rate grid, streamed forward with bounded memory.

    Frame ``i`` is the picture on screen at ``start_time + i / fps`` by the :func:`conform_cfr` rule
    (the last source frame at or before that time), so VFR input reads as CFR at ``fps`` (default: the
    nominal rate; for CFR input that is the exact rate and frame ``i`` is the ``i``-th frame). Indices
    past the last frame hold the last frame, so :meth:`range` always yields ``stop - first`` frames.

    Reading continues the decoder while requests move forward by at most ``max_gap`` frames; going
    back or jumping further seeks (decoding resumes at the keyframe before). Only requested frames are
    converted to RGB; between calls nothing but the last frame is kept.

    Args:
        path: the video.
        fps: the grid rate (None = the probed nominal rate); an image sequence without ``info`` is read at it
            (its files state no rate).
        info: a :func:`probe` result to reuse.
        apply_rotation: turn pixels upright by the file's rotation tag (default True).
        max_gap: frames that may be decoded and dropped instead of seeking.
        deinterlace: an interlaced source's images made progressive (:func:`deinterlace`; a progressive
            source is read as it is), each :class:`Frame` keeping the decoder's frame (:attr:`Frame.stored`).
            A frame's picture is the same whichever way it was reached (in sequence, after a seek).
    """

    def __init__(self, path: str | Path, fps: Fraction | None = None, *, info: MediaInfo | None = None,
                 apply_rotation: bool = True, max_gap: int = 48, deinterlace: bool = False) -> None:
        rate = Fraction(fps) if fps is not None and info is None and is_image_sequence(path) else None
        self._reader = VideoReader(path, info=info, apply_rotation=apply_rotation, sequence_fps=rate)
        #: the images are deinterlaced pictures (asked for, and the source is interlaced)
        self.deinterlaced = deinterlace and self._reader.video.interlaced
        self.path = self._reader.path
        self.video = self._reader.video
        self.fps = Fraction(fps) if fps is not None else self.video.nominal_fps
        self.max_gap = max_gap
        self._origin = exact(self.video.start_time)
        self._slots: Iterator[tuple[int, Frame]] | None = None
        self._base = 0       # grid index of slot 0 of the current stream
        self._pos = 0        # grid index of the next slot the stream yields
        self._used = False   # the decoder has been read (index 0 then needs a seek as well)
        self._prev: tuple[int, Frame] | None = None  # the last slot the stream yielded
        self._tail: tuple[int, Frame] | None = None  # the file's last slot, once the end was reached
        self._rgb_cache: tuple[Frame, np.ndarray] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of yielded images."""
        return self._reader.size

    @property
    def last_decoded(self) -> int | None:
        """The grid index of the file's last frame once reading reached the end of the stream (indices past
        it hold that frame), else None."""
        return self._tail[0] if self._tail is not None else None

    def __enter__(self) -> IndexedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._slots = None
        self._reader.close()

    def range(self, first: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, (H, W, 3) uint8 RGB)`` for grid frames ``first .. stop - 1``, in order."""
        for index, rgb, _ in self.pictures(first, stop):
            yield index, rgb

    def pictures(self, first: int, stop: int) -> Iterator[tuple[int, np.ndarray, Frame]]:
        """As :meth:`range`, with the decoded :class:`Frame` each image was converted from (its stored pixels:
        :class:`~lipsyncctl.media.splice.Splicer`)."""
        if first < 0:
            raise ValueError(f"frame index must be >= 0, got {first}")
        if stop <= first:
            return
        past_end = self._tail is not None and first >= self._tail[0]
        again = self._prev is not None and self._prev[0] == first
        if not (past_end or again or (self._slots is not None and self._pos <= first <= self._pos + self.max_gap)):
            self._restart(first)
        for wanted in range(first, stop):
            frame = self._slot(wanted)
            yield wanted, self._rgb(frame), frame

    def read(self, indices: Iterable[int]) -> dict[int, np.ndarray]:
        """The frames at ``indices`` (any order, repeats allowed), decoded run by run."""
        return {i: rgb for i, (rgb, _) in self.read_sources(indices).items()}

    def read_sources(self, indices: Iterable[int]) -> dict[int, tuple[np.ndarray, Frame]]:
        """As :meth:`read`, each image with its decoded :class:`Frame` (:meth:`pictures`)."""
        need = set(indices)
        out: dict[int, tuple[np.ndarray, Frame]] = {}
        for lo, hi in index_runs(need, max_gap=self.max_gap):
            for idx, rgb, frame in self.pictures(lo, hi + 1):
                if idx in need:
                    out[idx] = (rgb, frame)
        return out

    # -- internals -------------------------------------------------------------------------------
    def _restart(self, index: int) -> None:
        start = self._origin + Fraction(index) / self.fps
        if index > 0:
            self._reader.seek(time=max(self._origin, start - SEEK_MARGIN))
        elif self._used:
            self._reader.seek(time=self._origin)
        self._used = True
        frames = deinterlace(self._reader) if self.deinterlaced else self._reader
        self._slots = conform_cfr(frames, self.fps, start=start)
        self._base = self._pos = index
        self._prev = None

    def _slot(self, wanted: int) -> Frame:
        while True:
            if self._tail is not None and wanted >= self._tail[0]:
                return self._tail[1]  # at or past the end: hold the last frame
            if self._prev is not None and self._prev[0] == wanted:
                return self._prev[1]
            item = next(self._slots, None) if self._slots is not None else None
            if item is not None:
                k, frame = item
                self._prev = (self._base + k, frame)
                self._pos = self._base + k + 1
                continue
            self._slots = None
            if self._prev is not None:
                self._tail = self._prev
            elif self._base > 0:
                self._restart(0)  # the file ends before the seek target: walk from the start
            else:
                raise MediaError(f"{self.path}: no decodable frame")

    def _rgb(self, frame: Frame) -> np.ndarray:
        if self._rgb_cache is None or self._rgb_cache[0] is not frame:
            self._rgb_cache = (frame, frame.image)  # repeated slots reuse one conversion
        return self._rgb_cache[1]


def read_range(path: str | Path, first: int, count: int, fps: Fraction | None = None, *,
               sources: bool = False, deinterlace: bool = False) -> Iterator[Any]:
    """RGB frames ``first .. first + count - 1`` of ``path`` on its ``fps`` grid (None: the nominal rate),
    streamed: past the end the last frame is held, so exactly ``count`` frames come out (none for
    ``count <= 0``). ``functools.partial(read_range, path, first, count)`` is a replayable frame source
    (:data:`lipsyncctl.scoring.lse.FrameSource`). ``sources``: ``(image, Frame)`` pairs (:meth:`IndexedReader.pictures`).
    ``deinterlace``: an interlaced file's progressive pictures (:class:`IndexedReader`)."""
    if count <= 0:
        return
    with IndexedReader(path, fps, deinterlace=deinterlace) as reader:
        for _, rgb, frame in reader.pictures(first, first + count):
            yield (rgb, frame) if sources else rgb
