"""What the QC report shows of a rendered shot besides its scores: frames and thumbnails.

Sync confidence (LSE-C, higher = better in sync) and distance (LSE-D, lower = better) come from
:mod:`lipsyncctl.scoring` (the evaluation SyncNet, ``lipsyncctl models fetch syncnet-v2``; on the official
scale when ``sfd-face`` is installed too, else on the labelled approximate one). Without the SyncNet the
scores are ``None`` and the report says so.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np


def read_frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    """RGB frames ``first .. first + count - 1`` of ``path``."""
    from lipsyncctl.timeline.mediaio import read_frames

    return list(read_frames(path, first, count))


def thumbnail_uri(rgb: np.ndarray, height: int = 120) -> str:
    """A JPEG data URI of ``rgb`` scaled to ``height`` pixels."""
    import cv2

    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
