"""Quality checks of rendered shots: thumbnails and SyncNet confidence before/after.

Sync confidence (LSE-C, higher = better in sync) needs the evaluation SyncNet (``syncnet-v2`` in the
model registry; ``lipsyncctl models fetch syncnet-v2``). Without it the scores are ``None`` and the
report says so. Face crops for scoring: the detector's box around the chosen (largest) face, squared
and enlarged by 1.3, resized to 224x224 BGR like syncnet_python's crops.
"""

from __future__ import annotations

import base64
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import LipsyncError, MediaError

CROP_SCALE = 1.3


def load_eval_syncnet(device: str = "cpu") -> Any | None:
    """The evaluation SyncNet if its weights are installed, else None (never downloads)."""
    from lipsyncctl.checkpoints.registry import load_registry

    try:
        path = load_registry().resolve("syncnet-v2")
    except LipsyncError:
        return None
    from lipsyncctl.checkpoints.loaders import load_syncnet_eval

    return load_syncnet_eval(path, device=device)


def read_frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    """RGB frames ``first .. first + count - 1`` of ``path``."""
    from lipsyncctl.timeline.mediaio import read_frames

    return list(read_frames(path, first, count))


def face_crops(frames: list[np.ndarray], detector: Any) -> list[np.ndarray]:
    """224x224 BGR crops of the largest face per frame (the previous box where detection misses)."""
    import cv2

    crops, box = [], None
    for rgb in frames:
        faces = detector.detect(rgb)
        if faces:
            box = max(faces, key=lambda f: f.area).box
        if box is None:
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1]) * CROP_SCALE / 2
        h, w = rgb.shape[:2]
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
        crop = cv2.resize(rgb[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_LINEAR)
        crops.append(crop[..., ::-1].copy())
    return crops


def sync_confidence(model: Any, frames: list[np.ndarray], audio_16k: np.ndarray, fps: Fraction,
                    detector: Any) -> float | None:
    """LSE-C of ``frames`` against mono 16 kHz ``audio_16k`` (None when too short or no face)."""
    from lipsyncctl.scoring import lse_scores

    crops = face_crops(frames, detector)
    if len(crops) < len(frames) * 0.5:
        return None
    try:
        return float(lse_scores(model, crops, audio_16k, fps).lse_c)
    except MediaError:
        return None


def thumbnail_uri(rgb: np.ndarray, height: int = 120) -> str:
    """A JPEG data URI of ``rgb`` scaled to ``height`` pixels."""
    import cv2

    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
