"""media.thumbnails: the one JPEG data-URI helper of the HTML reports (timeline QC, curate)."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from lipsyncctl.media.thumbnails import thumbnail_uri


def _decode(uri: str) -> np.ndarray:
    head, _, data = uri.partition(",")
    assert head == "data:image/jpeg;base64"
    return cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_height_scales_and_max_side_only_shrinks() -> None:
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[..., 0] = 200  # red, to check the channel order survives
    assert _decode(thumbnail_uri(rgb, height=120)).shape == (120, 213, 3)
    assert _decode(thumbnail_uri(rgb, max_side=160)).shape == (90, 160, 3)
    small = _decode(thumbnail_uri(rgb[:50, :80], max_side=160))
    assert small.shape == (50, 80, 3) and abs(int(small[..., 0].mean()) - 200) < 6 and small[..., 2].mean() < 6
    with pytest.raises(ValueError):
        thumbnail_uri(rgb)
