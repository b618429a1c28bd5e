"""Small JPEG thumbnails as ``data:`` URIs, for self-contained HTML reports (the timeline QC report and the
curate report): no file beside the page, nothing fetched."""

from __future__ import annotations

import base64

import numpy as np


def thumbnail_uri(rgb: np.ndarray, *, height: int | None = None, max_side: int | None = None,
                  quality: int = 80) -> str:
    """``rgb`` ``(H, W, 3)`` uint8 as a JPEG data URI, scaled to ``height`` pixels (aspect kept), or shrunk
    so that its longer side is at most ``max_side`` (never enlarged). Give exactly one of the two."""
    import cv2

    if (height is None) == (max_side is None):
        raise ValueError("give either height or max_side")
    h, w = rgb.shape[:2]
    scale = height / h if height is not None else min(1.0, max_side / max(h, w))  # type: ignore[operator]
    if scale != 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding of a {w}x{h} frame failed")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")
