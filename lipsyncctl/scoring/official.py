"""LSE-C / LSE-D on the official scale: LatentSync's ``eval/eval_sync_conf.py`` measurement, i.e.
syncnet_python's pipeline (``eval/syncnet_detect.py``) + ``SyncNetEval.evaluate``.

Numbered as the official run:

1. Frames at 25 fps (other rates: the nearest source frame for each 25 fps time, as :mod:`.lse`).
2. S3FD faces on every frame (``sfd_face.pth``; image scale 0.25, score above 0.9, NMS 0.1; see
   :class:`~lipsyncctl.faces.detect_sfd.SfdFaceDetector`).
3. Shots (PySceneDetect ``ContentDetector()``), shots under 50 frames skipped, IoU face tracks
   (:mod:`.facetrack`).
4. Crop of each track (:func:`crop_tracks`): box size ``s`` (half the larger side) and centre median-filtered
   (kernel 13, zero padded as ``scipy.signal.medfilt``); the frame padded by ``int(1.8 s)`` with value
   110; the window rows ``[cy - s, cy + 1.8 s)`` and columns ``[cx - 1.4 s, cx + 1.4 s)`` (a 2.8 s square
   whose top is the box centre minus ``s``: crop_scale 0.4), resized to 224x224 (bilinear).
5. The track's audio (``first / 25 .. (last + 1) / 25`` s) and crops through the evaluation SyncNet
   (:func:`~lipsyncctl.scoring.lse.sync_distances`'s arithmetic, fed crop by crop:
   :class:`~lipsyncctl.scoring.lse.SyncStream`).
6. Per clip: ``offset = int(mean of the tracks' offsets)`` (truncated toward 0), ``LSE-C = mean of the
   confidences``, ``LSE-D = mean of the minimum distances``.

Not reproduced: the lossy steps around it (``ffmpeg -qscale:v 2`` re-encode and JPEG frames before the
detection, the mp4v crop video and AAC audio before SyncNet). Their effect is small next to the crop
and track choices this module pins, but the numbers are not bit-identical to an official run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from statistics import fmean
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.audio import MODEL_AUDIO_RATE
from lipsyncctl.scoring.facetrack import Detection, FaceTrack, scene_spans, shot_tracks
from lipsyncctl.scoring.lse import (
    CROP_SIZE,
    EVAL_FPS,
    FrameSource,
    SyncStream,
    eval_frame_indices,
    picked,
    replayable,
)

if TYPE_CHECKING:
    from pathlib import Path

    from lipsyncctl.faces.detect_sfd import SfdFaceDetector

SCALE_OFFICIAL = "official"
SCALE_APPROXIMATE = "approximate (not official)"
CROP_SCALE = 0.4
PAD_VALUE = 110
MEDIAN_KERNEL = 13
SFD_MODEL = "sfd-face"


@dataclass(frozen=True)
class TrackSync:
    """Scores of one face track: ``first`` (25 fps frame) and ``frames`` long; ``lse_d`` lower is better,
    ``lse_c`` higher is better, ``offset`` in 25 fps frames (positive: the audio is early)."""

    first: int
    frames: int
    lse_d: float
    lse_c: float
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "frames": self.frames, "lse_d": self.lse_d, "lse_c": self.lse_c,
                "offset": self.offset}


@dataclass(frozen=True)
class SyncScores:
    """Sync scores of one clip and the scale they are on.

    ``scale``: :data:`SCALE_OFFICIAL` (the official measurement) or :data:`SCALE_APPROXIMATE` (the
    fallback centred face crop of :mod:`.crops`, not comparable with published numbers or the official
    LSE-C >= 3 threshold). ``tracks``: per face track (one pseudo-track for the approximate scale);
    empty when nothing could be measured, ``reason`` then says why.
    """

    scale: str
    tracks: tuple[TrackSync, ...] = ()
    reason: str | None = None
    skipped_shots: tuple[tuple[int, int], ...] = field(default=())

    @property
    def measured(self) -> bool:
        return bool(self.tracks)

    @property
    def lse_c(self) -> float | None:
        """Mean confidence over the tracks (``eval_sync_conf.py``: ``fmean(conf_list)``)."""
        return fmean(t.lse_c for t in self.tracks) if self.tracks else None

    @property
    def lse_d(self) -> float | None:
        return fmean(t.lse_d for t in self.tracks) if self.tracks else None

    @property
    def offset(self) -> int | None:
        """``int(fmean(offsets))``: the mean truncated toward zero, as the official script."""
        return int(fmean(t.offset for t in self.tracks)) if self.tracks else None

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "lse_c": self.lse_c, "lse_d": self.lse_d, "offset": self.offset,
                "tracks": [t.to_dict() for t in self.tracks], "reason": self.reason,
                "skipped_shots": [list(s) for s in self.skipped_shots]}


# --------------------------------------------------------------------------------------------------
# Crop geometry


def medfilt(values: np.ndarray, kernel: int = MEDIAN_KERNEL) -> np.ndarray:
    """``scipy.signal.medfilt`` (zero padded at both ends), float64."""
    from scipy.signal import medfilt as scipy_medfilt

    return scipy_medfilt(np.asarray(values, dtype=np.float64), kernel_size=kernel)


@dataclass(frozen=True)
class CropWindows:
    """Smoothed track geometry: ``s`` (half box size), ``x``/``y`` (box centre), all ``(n,)`` float64."""

    s: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def window(self, i: int, crop_scale: float = CROP_SCALE) -> tuple[int, int, int, int, int]:
        """``(pad, row0, row1, col0, col1)`` of frame ``i`` in the frame padded by ``pad`` on each side
        (``int()`` truncation as upstream: the window can be 1 px off square)."""
        bs = self.s[i]
        pad = int(bs * (1 + 2 * crop_scale))
        my, mx = self.y[i] + pad, self.x[i] + pad
        return (pad, int(my - bs), int(my + bs * (1 + 2 * crop_scale)),
                int(mx - bs * (1 + crop_scale)), int(mx + bs * (1 + crop_scale)))


def smooth_track(boxes: np.ndarray) -> CropWindows:
    """Half size and centre of each ``(x1, y1, x2, y2)`` box, median-filtered over the track."""
    boxes = np.asarray(boxes, dtype=np.float64)
    s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    return CropWindows(medfilt(s), medfilt(x), medfilt(y))


def crop_frame(image: np.ndarray, windows: CropWindows, i: int, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """The 224x224 crop of track frame ``i`` from ``image`` ``(H, W, 3)`` uint8 (channel order kept)."""
    import cv2

    pad, r0, r1, c0, c1 = windows.window(i, crop_scale)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=PAD_VALUE)
    return cv2.resize(padded[r0:r1, c0:c1], (CROP_SIZE, CROP_SIZE))


def crop_tracks(frames: Iterable[np.ndarray], tracks: Sequence[FaceTrack],
                sinks: Sequence[Callable[[np.ndarray], None]]) -> None:
    """Every track's crops from one pass over the 25 fps ``frames`` (a stream), each handed to its track's sink
    as it is made (:meth:`~lipsyncctl.scoring.lse.SyncStream.feed`: nothing is kept here)."""
    windows = [smooth_track(t.boxes) for t in tracks]
    at = [{int(f): i for i, f in enumerate(t.frames)} for t in tracks]
    last = max((int(t.frames[-1]) for t in tracks), default=-1)
    for k, image in enumerate(frames):
        if k > last:
            break
        for t, where in enumerate(at):
            if k in where:
                sinks[t](crop_frame(image, windows[t], where[k]))


# --------------------------------------------------------------------------------------------------
# The measurement


@dataclass
class OfficialScorer:
    """The two networks of the official measurement (both strictly loaded) and their provenance."""

    detector: SfdFaceDetector
    syncnet: Any  # lipsyncctl.nets.syncnet_eval.SyncNetEval
    detector_path: Path | None = None

    def _detect(self, rgb: np.ndarray, k: int) -> list[Detection]:
        """S3FD faces of 25 fps frame ``k``, as the official ``detect_face``."""
        return [Detection(k, tuple(float(v) for v in b[:4]), float(b[4]))  # type: ignore[arg-type]
                for b in self.detector.detect_faces(rgb)]

    def score(self, frames_rgb: FrameSource, audio_16k: np.ndarray, fps: Fraction | int | float = EVAL_FPS, *,
              count: int | None = None) -> SyncScores:
        """The official sync scores of a clip: ``frames_rgb`` (RGB uint8, at ``fps``; a sequence, or a callable
        that opens a fresh pass over ``count`` frames: :data:`~lipsyncctl.scoring.lse.FrameSource`) and its mono
        16 kHz audio aligned with frame 0. A callable source is read twice (faces and shots, then the crops)
        and never held: memory stays flat in the clip's length."""
        open_frames, n = replayable(frames_rgb, count)
        index = eval_frame_indices(n, fps)  # 1. 25 fps
        if not index:
            return SyncScores(SCALE_OFFICIAL, reason="no frames")

        def at25() -> Iterator[np.ndarray]:
            return picked(open_frames(), index)

        dets: list[list[Detection]] = []

        def detected() -> Iterator[np.ndarray]:  # 2. faces, in the same pass as 3.
            for k, rgb in enumerate(progress.track(at25(), "S3FD faces", total=len(index))):
                dets.append(self._detect(rgb, k))
                yield rgb

        shots = scene_spans(detected(), len(index))  # 3.
        tracks, skipped = shot_tracks(dets, shots)
        if not tracks:
            why = ("every shot is shorter than 50 frames (2 s), which the official evaluation skips"
                   if len(skipped) == len(shots) else "no face track (S3FD score > 0.9, > 50 frames, > 100 px)")
            return SyncScores(SCALE_OFFICIAL, reason=why, skipped_shots=tuple(skipped))
        # 4. SyncNet consumes BGR (cv2.imread of the crops); one more pass measures every track as its crops come
        # (5.: SyncStream holds a batch of them, never the track's)
        spf = MODEL_AUDIO_RATE // int(EVAL_FPS)
        streams = [SyncStream(self.syncnet, np.asarray(audio_16k)[t.first * spf: (t.first + len(t)) * spf], len(t))
                   for t in tracks]
        frames_bgr = (f[..., ::-1] for f in progress.track(at25(), "sync score", total=len(index)))
        crop_tracks(frames_bgr, tracks, [s.feed for s in streams])
        scores = []
        for track, stream in zip(tracks, streams, strict=True):
            d = stream.finish()
            scores.append(TrackSync(track.first, len(track), d.min_dist, d.conf, d.offset))
        return SyncScores(SCALE_OFFICIAL, tuple(scores), skipped_shots=tuple(skipped))  # 6.


def load_official_scorer(syncnet: Any, device: Any = "cpu", models_dir: Path | None = None) -> OfficialScorer | None:
    """The official scorer when ``sfd-face`` is installed (``syncnet``: the loaded evaluation SyncNet),
    else None. Never downloads."""
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.checkpoints.sfd import load_sfd_face
    from lipsyncctl.errors import LipsyncError
    from lipsyncctl.faces.detect_sfd import SfdFaceDetector

    try:
        path = load_registry().resolve(SFD_MODEL, models_dir=models_dir)
    except LipsyncError:
        return None
    net = load_sfd_face(path, device=device)
    return OfficialScorer(SfdFaceDetector(net), syncnet, path)


def aggregate(tracks: Sequence[TrackSync], scale: str = SCALE_OFFICIAL) -> SyncScores:
    """A clip's result from its tracks (the official per-clip aggregation)."""
    return SyncScores(scale, tuple(tracks), reason=None if tracks else "no face track")
