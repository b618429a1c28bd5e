"""Face tracking over time: detect every k frames, refit landmarks in between, smooth.

- :class:`FaceTracker` runs the detector on key frames (every ``detect_every`` frames, batched through
  :meth:`FaceDetector.detect_batch`) and, in between, refits the landmarks inside each track's box
  (cheap for every backend) and moves the box with the landmarks. It also looks on any frame where a
  refit loses a face (a cut, a face leaving) and on every frame while it follows none (a face entering
  is found on the frame it is found, not at the next key frame). Key-frame detections are matched
  to tracks by IoU; a track unmatched for more than ``max_missed`` key frames ends. Each track has an
  id that stays stable while it lives.
- Landmarks and boxes of each track go through a One-Euro filter (Casiry, Roussel, Vogel, CHI 2012),
  with speeds measured in face sizes per second so that the defaults do not depend on resolution.
- Which track to follow (``faces.select``) is :mod:`lipsyncctl.faces.speaker`.
- :func:`crossfade_weights` gives per-frame blend weights so the generated face fades in (and out)
  where the chosen face comes back after (or leaves for) frames without a face.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lipsyncctl import progress
from lipsyncctl.errors import ConfigError
from lipsyncctl.faces.detect import Face, FaceDetector

#: what the tracker computes, in the keys of stored faces only where it changes them (``detect_every`` > 1: detection
#: on every frame is the same): 2 looks again on a frame where it loses a face and on every frame while it follows none
TRACKER_VERSION = 2


def tracker_key(detect_every: int) -> dict[str, int]:
    """The tracker's part of a stored-faces key: its version where it changes the result (``detect_every`` > 1),
    nothing for detection on every frame (the keys of before stand)."""
    return {"tracker": TRACKER_VERSION} if detect_every > 1 else {}


@dataclass(frozen=True)
class TrackOptions:
    """Tracking and smoothing settings.

    ``detect_every``: run the detector every k frames (1 = every frame). ``iou_match``: minimum IoU
    to match a detection to a track. ``max_missed``: key frames a track may go unmatched (refitted
    meanwhile) before it ends. ``smooth``: One-Euro filter on; ``min_cutoff`` (Hz) and ``beta``
    (per face-size/second) set its jitter/lag trade-off. ``max_jump``: a refit whose landmark
    centroid moves more than this fraction of the face size in one frame is rejected as lost, and so
    is one whose box no longer looks like the face (normalised cross-correlation of a 32x32 grey
    thumbnail with the last one below ``min_similarity``: a cut, an occluder, a flat frame).
    """

    detect_every: int = 5
    iou_match: float = 0.3
    max_missed: int = 1
    smooth: bool = True
    min_cutoff: float = 1.0
    beta: float = 5.0
    d_cutoff: float = 1.0
    max_jump: float = 0.35
    min_similarity: float = 0.5
    batch_size: int = 8

    def __post_init__(self) -> None:  # (a run's faces.detect_every is checked by the config schema)
        if self.detect_every < 1:
            raise ConfigError(f"TrackOptions.detect_every must be >= 1, got {self.detect_every}",
                              hint="a run's faces.detect_every: 1 to 250")
        if not 0 <= self.iou_match <= 1:
            raise ConfigError(f"TrackOptions.iou_match must be in [0, 1], got {self.iou_match}", hint="")


class OneEuroFilter:
    """One-Euro low-pass filter over an array of coordinates, one call per frame.

    ``scale`` (px) converts speeds to face sizes per second before the adaptive cutoff."""

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0) -> None:
        self.fps = float(fps)
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * self.fps)

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) * self.fps
        a_d = self._alpha(self.d_cutoff)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / max(scale, 1e-6)
        a = self._alpha(cutoff)
        self._x = a * x + (1 - a) * self._x
        return self._x.copy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def thumbnail(frame: np.ndarray, box: np.ndarray, size: int = 32) -> np.ndarray | None:
    """Zero-mean, unit-norm grey ``size x size`` thumbnail of ``box``; ``None`` if flat or outside."""
    import cv2

    h, w = frame.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    patch = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (size, size), interpolation=cv2.INTER_AREA)
    grey = patch.astype(np.float64).mean(axis=2).ravel()
    grey -= grey.mean()
    norm = np.linalg.norm(grey)
    return grey / norm if norm > 1e-3 * size else None


def _spread(landmarks: np.ndarray) -> float:
    return float(np.sqrt(((landmarks - landmarks.mean(0)) ** 2).sum(1).mean()))


@dataclass
class _Track:
    id: int
    face: Face  # last raw (unsmoothed) observation
    look: np.ndarray | None = None  # thumbnail() of the last accepted box
    missed: int = 0
    filt_lmk: OneEuroFilter | None = None
    filt_box: OneEuroFilter | None = None
    age: int = 0


@dataclass
class FaceTracker:
    """Online tracker; feed frames in order with :meth:`update` or a whole sequence with :meth:`track`.

    Call :meth:`reset` at a scene cut (tracks and smoothing restart)."""

    detector: FaceDetector
    fps: float = 25.0
    options: TrackOptions = field(default_factory=TrackOptions)
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next_id: int = field(default=0, init=False, repr=False)
    _index: int = field(default=0, init=False, repr=False)

    def reset(self) -> None:
        self._tracks = []
        self._index = 0

    def is_key_frame(self, index: int | None = None) -> bool:
        i = self._index if index is None else index
        return i % self.options.detect_every == 0

    def update(self, frame: np.ndarray, detections: list[Face] | None = None) -> list[Face]:
        """Faces of this frame with ``track_id`` set and smoothed landmarks/boxes.

        ``detections`` may be given for a key frame (precomputed in a batch); otherwise the detector
        runs here when this is a key frame, when no face is followed, or when a refit loses one."""
        if self.is_key_frame() or not self._tracks:  # no face to follow: look on every frame until one comes
            if detections is None:
                detections = self.detector.detect(frame)
            self._associate(frame, detections)
        else:
            following = len(self._tracks)
            self._refit(frame)
            if len(self._tracks) < following:  # a face lost between key frames (a cut, a face leaving): look now
                self._associate(frame, self.detector.detect(frame), scheduled=False)
        self._index += 1
        return [self._smoothed(t) for t in self._tracks]

    @property
    def span(self) -> int:
        """Frames :meth:`track` takes in before it yields the faces of the first of them (``detect_every``, times
        ``batch_size`` for a detector that batches): a frame's faces come out at most this many frames later."""
        return self.options.detect_every * (max(1, self.options.batch_size) if self.detector.batches else 1)

    def track(self, frames: Iterable[np.ndarray]) -> Iterator[list[Face]]:
        """Yield the faces of each frame; for a detector that :attr:`~FaceDetector.batches`, key-frame detections
        are batched ``batch_size`` key frames at a time (the frames in between are buffered meanwhile). The faces
        are the same either way (each detection sees its frame alone)."""
        span = self.span
        buffer: list[np.ndarray] = []
        for frame in frames:
            buffer.append(frame)
            if len(buffer) == span:
                yield from self._flush(buffer)
                buffer = []
        if buffer:
            yield from self._flush(buffer)

    def _flush(self, frames: list[np.ndarray]) -> Iterator[list[Face]]:
        keys = [i for i in range(len(frames)) if self.is_key_frame(self._index + i)]
        found = dict(zip(keys, self.detector.detect_batch([frames[i] for i in keys]), strict=True))
        for i, frame in enumerate(frames):
            yield self.update(frame, found.get(i))

    # -- internals -------------------------------------------------------------------------------
    def _new_track(self, face: Face, look: np.ndarray | None) -> _Track:
        o = self.options
        track = _Track(self._next_id, face, look)
        if o.smooth:
            track.filt_lmk = OneEuroFilter(self.fps, o.min_cutoff, o.beta, o.d_cutoff)
            track.filt_box = OneEuroFilter(self.fps, o.min_cutoff, o.beta, o.d_cutoff)
        self._next_id += 1
        return track

    def _associate(self, frame: np.ndarray, detections: list[Face], scheduled: bool = True) -> None:
        """Match ``detections`` to the tracks (IoU), start tracks for the others. A track no detection matches misses
        a key frame (refitted, or ended past ``max_missed``); not on a look between key frames (``scheduled``
        False), where the tracks left were refitted on this frame already."""
        pairs = sorted(
            (
                (iou(t.face.box, d.box), ti, di)
                for ti, t in enumerate(self._tracks)
                for di, d in enumerate(detections)
            ),
            reverse=True,
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        for score, ti, di in pairs:
            if score < self.options.iou_match or ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._tracks[ti].face = detections[di]
            self._tracks[ti].look = thumbnail(frame, detections[di].box)
            self._tracks[ti].missed = 0
            self._tracks[ti].age += 1
        kept = []
        for ti, t in enumerate(self._tracks):
            if ti in used_t or not scheduled:
                kept.append(t)
                continue
            t.missed += 1
            if t.missed <= self.options.max_missed and self._refit_track(frame, t):
                kept.append(t)
        for di, d in enumerate(detections):
            if di not in used_d:
                kept.append(self._new_track(d, thumbnail(frame, d.box)))
        self._tracks = kept

    def _refit(self, frame: np.ndarray) -> None:
        self._tracks = [t for t in self._tracks if self._refit_track(frame, t)]

    def _refit_track(self, frame: np.ndarray, track: _Track) -> bool:
        """Landmarks inside the track's box; move/scale the box with them. False = lost."""
        old = track.face
        new = self.detector.refit(frame, [old.box])[0]
        size = np.sqrt(max(old.area, 1.0))
        shift = new.landmarks.mean(0) - old.landmarks.mean(0)
        ratio = _spread(new.landmarks) / max(_spread(old.landmarks), 1e-6)
        if np.linalg.norm(shift) > self.options.max_jump * size or not 0.7 < ratio < 1.4:
            return False
        c = old.center + shift
        half = (old.box[2:] - old.box[:2]) * ratio / 2
        box = np.concatenate([c - half, c + half])
        look = thumbnail(frame, box)
        if look is None or track.look is None or float(look @ track.look) < self.options.min_similarity:
            return False
        track.face = Face(box, old.score, new.landmarks)
        track.look = look
        track.age += 1
        return True

    def _smoothed(self, track: _Track) -> Face:
        face = track.face
        if track.filt_lmk is None or track.filt_box is None:
            return face.with_track(track.id)
        size = np.sqrt(max(face.area, 1.0))
        lmk = track.filt_lmk(face.landmarks, scale=size)
        box = track.filt_box(face.box, scale=size)
        return replace(face, landmarks=lmk, box=box, track_id=track.id)


def track_faces(
    detector: FaceDetector,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    options: TrackOptions | None = None,
    total: int | None = None,
) -> list[list[Face]]:
    """Run a :class:`FaceTracker` over ``frames`` with progress reporting; one list of faces per frame."""
    tracker = FaceTracker(detector, fps=fps, options=options or TrackOptions())
    return list(progress.track(tracker.track(frames), f"faces ({detector.name})", total=total))


def crossfade_weights(selected: Sequence[object | None], fade_in: int = 5, fade_out: int = 5) -> np.ndarray:
    """Per-frame weight of the generated face, ``(N,)`` float in [0, 1].

    0 where ``selected[i] is None`` (frame passed through); ramps ``1/(n+1) .. n/(n+1)`` over the
    first ``fade_in`` frames after a gap and the last ``fade_out`` frames before one; 1 elsewhere,
    including at the clip's start and end (no gap there, so nothing to fade from).
    """
    present = np.array([s is not None for s in selected], dtype=bool)
    n = len(present)
    weights = present.astype(np.float64)
    i = 0
    while i < n:
        if not present[i]:
            i += 1
            continue
        j = i
        while j < n and present[j]:
            j += 1
        run = np.ones(j - i)
        pos = np.arange(j - i)
        if i > 0 and fade_in > 0:
            run = np.minimum(run, (pos + 1) / (fade_in + 1))
        if j < n and fade_out > 0:
            run = np.minimum(run, (j - i - pos) / (fade_out + 1))
        weights[i:j] = run
        i = j
    return weights


def crossfade_weight_at(window: Sequence[object | None], index: int, fade_in: int = 5, fade_out: int = 5) -> float:
    """``crossfade_weights(selected, fade_in, fade_out)[i]`` from a window of ``selected`` around ``i`` (for a
    pass that has not reached the clip's end): ``window = selected[lo:hi]`` with ``lo = max(0, i - fade_in - 1)``,
    ``hi = min(N, i + fade_out + 2)`` and ``index = i - lo``. Exact: where the window's edge cuts the run of
    frame ``i`` inside the clip, the true ramp at ``i`` is >= 1 and so is no ramp at all."""
    return float(crossfade_weights(window, fade_in=fade_in, fade_out=fade_out)[index])
