"""The approximate (NOT official) sync scale: a fallback when the official measurement's face detector
(``sfd-face``) is not installed.

Crops: the detector's box around the chosen (largest) face, squared and enlarged by ``CROP_SCALE``
(1.3), resized to 224x224 BGR like syncnet_python's crops. This is not the official evaluation's
S3FD track + 2.8x crop (:mod:`.official`), so these LSE numbers are not on the official scale: results
carry ``scale="approximate (not official)"``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError
from lipsyncctl.scoring.lse import (
    EVAL_FPS,
    VSHIFT,
    WINDOW_FRAMES,
    FrameSource,
    SyncStream,
    eval_frame_count,
    eval_frame_indices,
    picked,
    replayable,
    window_count,
)
from lipsyncctl.scoring.official import SCALE_APPROXIMATE, SyncScores, TrackSync

CROP_SCALE = 1.3


def face_boxes(frames: FrameSource, detector: Any, min_found: float = 0.5, *,
               count: int | None = None) -> list[Any] | None:
    """The detector's box of the largest face in each frame (a frame without a detection takes the nearest earlier
    box, or the first box before any detection, so box ``i`` stays frame ``i``'s); None when fewer than
    ``min_found`` of the frames have a face. ``frames``: a sequence or a callable source of ``count`` frames
    (:data:`~lipsyncctl.scoring.lse.FrameSource`), read once here, never held."""
    open_frames, n = replayable(frames, count)
    boxes: list[Any] = []
    found = 0
    for rgb in open_frames():
        faces = detector.detect(rgb)
        found += bool(faces)
        boxes.append(max(faces, key=lambda f: f.area).box if faces else (boxes[-1] if boxes else None))
    first = next((b for b in boxes if b is not None), None)
    if first is None or found < n * min_found:
        return None
    return [first if b is None else b for b in boxes]


def face_crop(rgb: np.ndarray, box: Any) -> np.ndarray:
    """The 224x224 BGR crop of ``rgb`` around ``box``: squared, enlarged by :data:`CROP_SCALE`, clipped to the
    frame, resized bilinearly (syncnet_python's crop size and channel order)."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * CROP_SCALE / 2
    h, w = rgb.shape[:2]
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
    crop = cv2.resize(rgb[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_LINEAR)
    return crop[..., ::-1].copy()


def sync_scores(model: Any, frames: FrameSource, audio_16k: np.ndarray, fps: Fraction,
                detector: Any, *, count: int | None = None) -> Any | None:
    """:class:`~lipsyncctl.scoring.LseScores` (LSE-D, LSE-C, offset) of ``frames`` (RGB; a sequence or a
    callable source of ``count`` frames) against mono 16 kHz ``audio_16k`` aligned with frame 0; None when too
    short or without a face in half the frames. The frames are read twice (boxes, then crops at 25 fps, each
    measured as it is made: :class:`~lipsyncctl.scoring.lse.SyncStream`), never held."""
    open_frames, n = replayable(frames, count)
    boxes = face_boxes(open_frames, detector, count=n)
    if boxes is None:
        return None
    index = eval_frame_indices(n, fps)
    try:
        stream = SyncStream(model, audio_16k, len(index))
    except MediaError:
        return None
    for rgb, box in picked(zip(open_frames(), boxes, strict=True), index):
        stream.feed(face_crop(rgb, box))
    return stream.finish().scores


def approximate_sync(model: Any, frames: FrameSource, audio_16k: np.ndarray, fps: Fraction,
                     detector: Any, *, count: int | None = None) -> SyncScores:
    """:func:`sync_scores` as a :class:`~lipsyncctl.scoring.official.SyncScores` labelled
    ``scale="approximate (not official)"`` (one pseudo-track over the whole run of frames)."""
    _, n = replayable(frames, count)
    # so few windows that most of the offsets searched pair only the silence past both ends (offset k pairs real
    # sound for 2n - 1 of the 2 VSHIFT + 1 offsets): their equal distances made the median, LSE-C 0.0 at 10 frames
    # with the offset at the search's end; not measured
    windows = window_count(eval_frame_count(n, fps), len(audio_16k))
    least = VSHIFT // 2 + 2  # the fewest windows with 2n - 1 > VSHIFT: more than half the offsets pair real sound
    if 0 < windows < least:
        need = least + WINDOW_FRAMES
        return SyncScores(SCALE_APPROXIMATE, reason=f"too short: {windows + WINDOW_FRAMES} frames at 25 fps, where "
                          f"the offset search (±{VSHIFT} frames) needs {need} ({float(need / EVAL_FPS):.2f} s)")
    scores = sync_scores(model, frames, audio_16k, fps, detector, count=count)
    if scores is None:
        return SyncScores(SCALE_APPROXIMATE, reason="too short or no face in half of the frames")
    track = TrackSync(0, n, float(scores.lse_d), float(scores.lse_c), int(scores.offset))
    return SyncScores(SCALE_APPROXIMATE, (track,))
