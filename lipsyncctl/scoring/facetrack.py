"""Shots and face tracks of the official SyncNet evaluation (LatentSync ``eval/syncnet_detect.py``, i.e.
syncnet_python's ``run_pipeline.py``), on frames already at 25 fps.

1. Shots: PySceneDetect's ``ContentDetector()`` with its defaults (threshold 27, min scene 15 frames, HSV
   weights 1/1/1/0), cuts suppressed until 15 frames have passed (PySceneDetect 0.6.1's rule, which
   LatentSync pins), frames subsampled by ``width // 256`` as 0.6.1's automatic downscale does. No cut =
   one shot over the whole clip.
2. Shots shorter than ``min_track`` (50) frames are skipped.
3. Tracks inside a shot (:func:`track_faces`): greedy, one track at a time over the frames; a detection
   joins when at most ``num_failed_det`` (25) frames after the track's last detection and its IoU with that
   detection is above 0.5. A track needs more than ``min_track`` detections; its boxes are linearly
   interpolated over the missing frames, and it is kept when its mean box width or height is above
   ``min_face_size`` (100 px). Repeated until no detection is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_TRACK = 50
NUM_FAILED_DET = 25
MIN_FACE_SIZE = 100.0
IOU_THRESHOLD = 0.5
SCENE_THRESHOLD = 27.0  # ContentDetector() defaults
SCENE_MIN_LEN = 15
SCENE_MIN_WIDTH = 256  # PySceneDetect's DEFAULT_MIN_WIDTH for the automatic downscale


@dataclass(frozen=True)
class Detection:
    """One face box of one frame: ``bbox`` = ``(x1, y1, x2, y2)`` in pixels, ``conf`` the S3FD score."""

    frame: int
    bbox: tuple[float, float, float, float]
    conf: float


@dataclass(frozen=True)
class FaceTrack:
    """Consecutive frames ``frames`` (25 fps indices) with one interpolated box each: ``boxes`` ``(n, 4)``
    float64 ``(x1, y1, x2, y2)``."""

    frames: np.ndarray
    boxes: np.ndarray

    @property
    def first(self) -> int:
        return int(self.frames[0])

    def __len__(self) -> int:
        return len(self.frames)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (no +1 on areas, as the official code)."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / float(area_a + area_b - inter)


def scene_spans(frames_rgb: Iterable[np.ndarray], num_frames: int) -> list[tuple[int, int]]:
    """``[(first, stop), ...]`` shots covering ``0 .. num_frames`` (25 fps RGB frames)."""
    from scenedetect import ContentDetector, FrameTimecode
    from scenedetect.detector import FlashFilter

    detector = ContentDetector(threshold=SCENE_THRESHOLD, min_scene_len=SCENE_MIN_LEN,
                               filter_mode=FlashFilter.Mode.SUPPRESS)
    cuts: list[int] = []
    for i, rgb in enumerate(frames_rgb):
        factor = max(1, rgb.shape[1] // SCENE_MIN_WIDTH)
        bgr = np.ascontiguousarray(rgb[::factor, ::factor, ::-1])
        cuts += [c.frame_num for c in detector.process_frame(FrameTimecode(i, fps=25.0), bgr)]
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < num_frames), num_frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def track_faces(scene_faces: Sequence[list[Detection]], *, num_failed_det: int = NUM_FAILED_DET,
                min_track: int = MIN_TRACK, min_face_size: float = MIN_FACE_SIZE) -> list[FaceTrack]:
    """The face tracks of one shot (``scene_faces[k]`` = the detections of its ``k``-th frame).

    The loop mirrors the official ``track_face``, including what its list handling implies: a detection
    taken by a track is removed from its frame's list while that list is being walked, so the next
    detection of the same frame is not looked at in that pass (it is left for a later track), and once a
    frame lies more than ``num_failed_det`` after the track's last detection, the track is over.
    """
    from scipy.interpolate import interp1d

    pending = [list(f) for f in scene_faces]  # consumed as tracks take detections
    tracks: list[FaceTrack] = []
    while True:
        track: list[Detection] = []
        for frame_faces in pending:
            for face in frame_faces:  # noqa: B007 - mutated while walked, on purpose (see docstring)
                if not track:
                    track.append(face)
                    frame_faces.remove(face)
                elif face.frame - track[-1].frame <= num_failed_det:
                    if box_iou(face.bbox, track[-1].bbox) > IOU_THRESHOLD:
                        track.append(face)
                        frame_faces.remove(face)
                        continue
                else:
                    break
        if not track:
            break
        if len(track) > min_track:
            frame_num = np.array([f.frame for f in track])
            boxes = np.array([f.bbox for f in track], dtype=np.float64)
            frames = np.arange(frame_num[0], frame_num[-1] + 1)
            interp = np.stack([interp1d(frame_num, boxes[:, k])(frames) for k in range(4)], axis=1)
            size = max(np.mean(interp[:, 2] - interp[:, 0]), np.mean(interp[:, 3] - interp[:, 1]))
            if size > min_face_size:
                tracks.append(FaceTrack(frames, interp))
    return tracks


def shot_tracks(detections: Sequence[list[Detection]], shots: Sequence[tuple[int, int]], *,
                min_track: int = MIN_TRACK) -> tuple[list[FaceTrack], list[tuple[int, int]]]:
    """``(tracks of every shot, shots skipped as shorter than min_track)``."""
    tracks: list[FaceTrack] = []
    skipped: list[tuple[int, int]] = []
    for first, stop in shots:
        if stop - first >= min_track:
            tracks += track_faces(detections[first:stop], min_track=min_track)
        else:
            skipped.append((first, stop))
    return tracks, skipped
