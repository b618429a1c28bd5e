"""Alignment and paste-back on the face's region only (issue 12): the same bytes as the whole-frame arithmetic
(the official restore, pinned by golden vector 4 in tests/golden/test_faces_align.py), for faces anywhere - partly
outside the frame, tilted, tiny (no feathering), large - at 256 and 512."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipsyncctl.faces import warp
from lipsyncctl.faces.align import FaceAligner

# (frame height, width, face centre x, y as fractions of the frame, brow half-distance px, tilt rad)
CASES = [
    (540, 720, 0.5, 0.45, 90.0, 0.1),     # a large face in the middle
    (540, 720, 0.02, 0.5, 70.0, -0.4),    # half outside on the left, tilted
    (540, 720, 0.9, 1.02, 60.0, 0.5),     # below the bottom edge
    (300, 200, 0.5, 0.5, 6.0, 0.0),       # tiny: no erosion or blur (w_edge = 0)
    (640, 360, 0.4, 0.05, 120.0, 0.25),   # large, cut by the top edge
]


def _matrix(aligner: FaceAligner, h: int, w: int, fx: float, fy: float, half: float, tilt: float) -> np.ndarray:
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    points = np.array([[fx * w, fy * h]]) + np.array([[-half, 0], [half, 0], [0, 0.6 * half]]) @ rot.T
    return aligner.matrix(points)


@pytest.mark.parametrize("res", [256, 512])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_region_equals_whole_frame(res: int, case: tuple) -> None:
    h, w, *face = case
    rng = np.random.default_rng(res + int(face[2]))
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    aligner = FaceAligner(res, smooth=False)
    m = _matrix(aligner, h, w, *face)
    crop = aligner.warp_crop(frame, m)
    np.testing.assert_array_equal(crop, aligner.warp_crop(frame, m, roi=False))
    assert crop.std() > 0 or face[0] > 1  # a real crop, not only the fill
    generated = torch.from_numpy(rng.uniform(-1, 1, (3, res, res)).astype(np.float32))
    np.testing.assert_array_equal(aligner.restore(frame, generated, m), aligner.restore(frame, generated, m, roi=False))
    delta = generated * 0.2
    np.testing.assert_array_equal(aligner.restore_delta(frame, delta, m),
                                  aligner.restore_delta(frame, delta, m, roi=False))


def test_warp_crop_scratch_keeps_no_trace_of_earlier_frames() -> None:
    """The per-thread float frame holds other frames' pixels outside the box: never read."""
    aligner = FaceAligner(256, smooth=False)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(3)]
    mats = [_matrix(aligner, 480, 640, fx, 0.5, 60.0, 0.2) for fx in (0.2, 0.8, 0.5)]
    for frame, m in zip(frames, mats, strict=True):
        np.testing.assert_array_equal(aligner.warp_crop(frame, m), aligner.warp_crop(frame, m, roi=False))


def test_erode_2x2_is_the_kornia_erosion() -> None:
    mask = torch.rand(2, 1, 37, 53)
    mask[mask < 0.3] = 0
    padded = F.pad(mask, (1, 0, 1, 0), mode="constant", value=float("inf"))
    torch.testing.assert_close(warp.erode_2x2(mask), -F.max_pool2d(-padded, kernel_size=2, stride=1), rtol=0, atol=0)


def test_anamorphic_frames_align_the_face_as_shown() -> None:
    """A frame stored squeezed (pixel aspect 4:3) and aligned with ``pixel_aspect`` gives the crop of the
    square-pixel picture: the same matrix on the same points, nearly the same pixels; without it the face
    comes out squeezed. The paste puts it back in the stored grid."""
    import cv2

    rng = np.random.default_rng(0)
    shown = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    stored = cv2.resize(shown, (240, 240), interpolation=cv2.INTER_AREA)  # 320 wide shown, 240 stored: 4:3
    points_shown = np.float32([[140, 100], [190, 100], [165, 140]])
    points_stored = points_shown * np.float32([0.75, 1])
    square, anamorphic = FaceAligner(smooth=False), FaceAligner(smooth=False, pixel_aspect=4 / 3)
    m_shown, m_stored = square.matrix(points_shown), anamorphic.matrix(points_stored)
    homog = np.c_[points_stored, np.ones(3, np.float32)]
    np.testing.assert_allclose(homog @ m_stored.T, np.c_[points_shown, np.ones(3)] @ m_shown.T, atol=1e-3)
    want = square.face(shown, m_shown).astype(float)
    got = anamorphic.face(stored, m_stored).astype(float)
    squeezed = FaceAligner(smooth=False).face(stored, FaceAligner(smooth=False).matrix(points_stored)).astype(float)
    err, squeezed_err = np.abs(got - want).mean(), np.abs(squeezed - want).mean()
    assert err < 1.0 and squeezed_err > 5 * err, (err, squeezed_err)
    face = torch.from_numpy(got.transpose(2, 0, 1) / 127.5 - 1).float()
    pasted = anamorphic.restore(stored, face, m_stored)
    assert pasted.shape == stored.shape and np.abs(pasted.astype(float) - stored).mean() < 2.0
