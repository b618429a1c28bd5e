"""Face crops for sync scoring and the scores of a run of frames.

Crops: the detector's box around the chosen (largest) face, squared and enlarged by ``CROP_SCALE``
(1.3), resized to 224x224 BGR like syncnet_python's crops. Note: this is not the official evaluation's
S3FD track + 2.8x crop, so these LSE numbers are not on the official scale.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from lipsyncctl.errors import MediaError
from lipsyncctl.scoring.lse import lse_scores

CROP_SCALE = 1.3


def face_crops(frames: list[np.ndarray], detector: Any, min_found: float = 0.5) -> list[np.ndarray]:
    """224x224 BGR crops of the largest face, one per frame (frames without a detection use the nearest
    earlier box, or the first box before any detection, so crop ``i`` stays aligned with frame ``i``);
    empty when fewer than ``min_found`` of the frames have a face."""
    import cv2

    boxes: list[Any] = []
    found = 0
    for rgb in frames:
        faces = detector.detect(rgb)
        found += bool(faces)
        boxes.append(max(faces, key=lambda f: f.area).box if faces else (boxes[-1] if boxes else None))
    first = next((b for b in boxes if b is not None), None)
    if first is None or found < len(frames) * min_found:
        return []
    crops = []
    for rgb, box in zip(frames, boxes, strict=True):
        box = first if box is None else box
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1]) * CROP_SCALE / 2
        h, w = rgb.shape[:2]
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
        crop = cv2.resize(rgb[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_LINEAR)
        crops.append(crop[..., ::-1].copy())
    return crops


def sync_scores(model: Any, frames: list[np.ndarray], audio_16k: np.ndarray, fps: Fraction,
                detector: Any) -> Any | None:
    """:class:`~lipsyncctl.scoring.LseScores` (LSE-D, LSE-C, offset) of ``frames`` (RGB) against mono
    16 kHz ``audio_16k`` aligned with frame 0; None when too short or without a face in half the frames."""
    crops = face_crops(frames, detector)
    if not crops:
        return None
    try:
        return lse_scores(model, crops, audio_16k, fps)
    except MediaError:
        return None
