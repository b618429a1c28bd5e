"""Golden vector 4 (official alignment and paste-back) and the align -> restore round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsyncctl.faces import warp
from lipsyncctl.faces.align import (
    FaceAligner,
    crop_size,
    points3_from_68,
    points3_from_106,
    points3_from_landmarks,
)
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(shared_path("golden", "face_align_restore.safetensors")))


def _assert_u8_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
    same = float((diff == 0).mean())
    assert diff.max() <= 1 and same >= 0.99, f"{what}: max diff {diff.max()}, identical {same:.4%}"


def test_three_points_round_half_even(golden):
    pts = points3_from_106(golden["landmarks_106"])
    assert np.array_equal(pts, golden["landmarks3"])
    # the nose x mean is an exact .5 tie with an even integer part: half-up would differ
    raw = golden["landmarks_106"][[74, 77, 83, 86]].mean(0)
    assert raw[0] % 1 == 0.5 and pts[2, 0] == np.floor(raw[0])
    for i in range(5):
        assert np.array_equal(
            points3_from_106(golden["seq_frames_landmarks_106"][i]), golden["seq_landmarks3"][i]
        )
    # integer landmarks dispatch to the official rounding, float ones keep sub-pixel precision
    assert np.array_equal(points3_from_landmarks(golden["landmarks_106"]), pts)
    assert not np.array_equal(points3_from_landmarks(golden["landmarks_106"] + 0.25), pts + 0.25)


def test_crop_sizes():
    assert crop_size(256) == (210, 280)
    assert crop_size(512) == (420, 560)


@pytest.mark.parametrize("res", [256, 512])
def test_matrix_and_aligned_face(golden, res):
    aligner = FaceAligner(resolution=res)
    face, matrix = aligner.align(golden["frame"], golden["landmarks3"])
    np.testing.assert_allclose(matrix, golden[f"affine_matrix_{res}"], atol=2e-4, rtol=0)
    assert face.shape == (res, res, 3) and face.dtype == np.uint8
    _assert_u8_close(face, golden[f"aligned_{res}"].transpose(1, 2, 0), f"aligned_{res}")


def test_crop_before_squeeze(golden):
    crop = FaceAligner(256).warp_crop(golden["frame"], golden["affine_matrix_256"])
    _assert_u8_close(crop, golden["crop_warped_256"], "crop_warped_256")


def test_temporal_smoothing_sequence(golden):
    aligner = FaceAligner(256)
    for i in range(5):
        m = aligner.matrix(golden["seq_landmarks3"][i])
        np.testing.assert_allclose(
            m, golden["seq_affine_matrices_256"][i], atol=2e-4, rtol=0, err_msg=f"frame {i}"
        )
    # without the carried bias, frames after the first differ from the official sequence
    fresh = FaceAligner(256).matrix(golden["seq_landmarks3"][1])
    assert np.abs(fresh - golden["seq_affine_matrices_256"][1]).max() > 1e-3


def _generated(golden) -> torch.Tensor:
    g = torch.from_numpy(golden["generated_face_u8"]).permute(2, 0, 1).to(torch.float32) / 255
    return (g - 0.5) / 0.5


@pytest.mark.parametrize("roi", [True, False])
def test_restore(golden, roi):
    out = FaceAligner(256).restore(golden["frame"], _generated(golden), golden["affine_matrix_256"], roi=roi)
    _assert_u8_close(out, golden["restored_frame_256"], f"restored_frame_256 roi={roi}")


def test_roi_restore_is_bit_identical_on_a_large_frame(golden):
    frame = np.zeros((700, 900, 3), np.uint8)
    frame[200:552, 300:620] = golden["frame"]
    m = golden["affine_matrix_256"].copy()
    m[:, 2] -= m[:, :2] @ np.array([300.0, 200.0], np.float32)  # same face, shifted by (300, 200)
    aligner = FaceAligner(256)
    fast = aligner.restore(frame, _generated(golden), m, roi=True)
    full = aligner.restore(frame, _generated(golden), m, roi=False)
    assert np.array_equal(fast, full)
    assert np.array_equal(fast[:150], frame[:150])  # far from the face: source pixels


@pytest.mark.parametrize(("shape", "size"), [((1, 1, 300, 260), 51), ((2, 3, 64, 80), 11), ((1, 1, 20, 30), 31)])
def test_the_blur_is_the_convolution_up_to_float_rounding(shape, size):
    """The feather's blur runs through OpenCV on the CPU (7-13x faster than torch's convolution): the same kernel and
    reflected border, values equal up to the order of the float32 sums; a plane smaller than the kernel's reach
    takes torch's path (as before)."""
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    fast = warp.gaussian_blur(image, size, sigma)
    exact = warp.gaussian_blur(image, size, sigma, exact=True)
    assert fast.shape == exact.shape == image.shape and fast.dtype == torch.float32
    assert float((fast - exact).abs().max()) <= 1e-6


def test_warp_helpers():
    img = torch.arange(20, dtype=torch.float32).view(1, 1, 4, 5)
    ident = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(warp.warp_affine(img, ident, (4, 5)), img, atol=1e-5, rtol=0)
    shifted = warp.warp_affine(img, torch.tensor([[1.0, 0, 1], [0, 1.0, 0]]), (4, 5), fill=7.0)
    torch.testing.assert_close(shifted[..., 1:], img[..., :-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[..., 0], torch.full((1, 1, 4), 7.0), atol=1e-5, rtol=0)
    m = torch.tensor([[1.1, 0.2, -3.0], [-0.2, 1.1, 5.0]])
    back = warp.to_homogeneous(warp.invert_affine(m)) @ warp.to_homogeneous(m)
    torch.testing.assert_close(back, torch.eye(3), atol=1e-6, rtol=0)
    eroded = warp.erode_2x2(torch.tensor([[[[1.0, 1, 1], [1, 0, 1], [1, 1, 1]]]]))
    assert eroded[0, 0].tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]


def test_points_from_68_layout():
    lmk = np.zeros((68, 2))
    lmk[17:22] = [[10, 20], [12, 18], [14, 17], [16, 18], [18, 20]]
    lmk[22:27] = [[30, 20], [32, 18], [34, 17], [36, 18], [38, 20]]
    lmk[28:31] = [[24, 30], [24, 34], [24, 38]]
    pts = points3_from_68(lmk)
    np.testing.assert_allclose(pts, [[14, 18.6], [34, 18.6], [24, (30 + 34 + 38 + 38) / 4]])
    assert np.array_equal(points3_from_landmarks(lmk), pts)
    with pytest.raises(ValueError):
        points3_from_landmarks(np.zeros((5, 2)))
