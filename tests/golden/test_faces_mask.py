"""Golden vector 5: mouth mask, reference/masked images and the latent mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsyncctl.errors import MissingModelError
from lipsyncctl.faces.mask import latent_mask, mouth_mask, mouth_mask_u8, prepare_masked_images
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(shared_path("golden", "masks.safetensors")))


@pytest.fixture(scope="module")
def aligned() -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(shared_path("golden", "face_align_restore.safetensors")))["aligned_256"]


@pytest.mark.parametrize("res", [256, 512])
def test_mask_exact(golden, res):
    assert np.array_equal(mouth_mask_u8(res), golden[f"mask_{res}_u8"])
    assert np.array_equal(mouth_mask(res), golden[f"mask_{res}_u8"] / 255.0)


def test_bundled_mask_is_the_official_file():
    import hashlib

    from lipsyncctl.faces.mask import mask_path

    digest = hashlib.sha256(mask_path().read_bytes()).hexdigest()
    assert digest.startswith("aa233251b9ff5691")
    assert hashlib.sha256(shared_path("fixtures", "mask.png").read_bytes()).hexdigest() == digest


def test_masked_and_reference_images(golden, aligned):
    ref, masked, masks = prepare_masked_images(aligned[None], mouth_mask(256))
    torch.testing.assert_close(ref, torch.from_numpy(golden["ref_pixel_values_256"]), atol=1e-7, rtol=0)
    torch.testing.assert_close(masked, torch.from_numpy(golden["masked_pixel_values_256"]), atol=1e-7, rtol=0)
    assert masks.shape == (1, 1, 256, 256)
    assert torch.equal(masks[0, 0], torch.from_numpy(golden["mask_256_u8"] / 255.0).float())


@pytest.mark.parametrize("res", [256, 512])
def test_latent_mask_exact(golden, res):
    masks = torch.from_numpy(mouth_mask(res))[None, None]
    lat = latent_mask(masks).to(torch.float32)
    assert lat.shape == (1, 1, res // 8, res // 8)
    assert torch.equal(lat, torch.from_numpy(golden[f"latent_mask_{res}"]))


def test_masked_512_matches_recipe(golden):
    faces = np.random.default_rng(0).integers(0, 256, (2, 3, 512, 512), dtype=np.uint8)
    ref, masked, _ = prepare_masked_images(faces, mouth_mask(512), dtype=torch.float64)
    expected = (golden["mask_512_u8"] / 255.0) * ((faces.astype(np.float32) / 255 - 0.5) / 0.5).astype(
        np.float64
    )
    np.testing.assert_allclose(masked.numpy(), expected, atol=1e-7, rtol=0)


def test_bad_inputs():
    with pytest.raises(MissingModelError):
        mouth_mask(256, "no-such-mask.png")
    with pytest.raises(ValueError):
        prepare_masked_images(np.zeros((1, 3, 128, 128), np.uint8), mouth_mask(256))
