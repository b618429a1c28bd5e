"""Golden vector train/2: ``DDIMScheduler.add_noise`` and ``one_step_sampling`` of the official training
step (``scripts/train_unet.py`` L342/L364), float32 within the suggested tolerance and float16 bit for bit
(same op order), through :mod:`lipsyncctl.training.noise`."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lipsyncctl.training import noise
from tests.conftest import SHARED

VECTOR = SHARED / "golden" / "train" / "noise_sampling.safetensors"

pytestmark = pytest.mark.skipif(not VECTOR.is_file(), reason=f"golden vector not found: {VECTOR}")


@pytest.fixture(scope="module")
def v() -> dict[str, torch.Tensor]:
    return load_file(VECTOR)


def test_alphas_cumprod(v: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(noise.alphas_cumprod(), v["alphas_cumprod"], atol=1e-7, rtol=0)


def test_float32(v: dict[str, torch.Tensor]) -> None:
    a = noise.alphas_cumprod()
    t = v["timesteps"]
    noisy = noise.add_noise(v["x0"], v["noise"], t, a)
    torch.testing.assert_close(noisy, v["noisy_f32"], atol=1e-5, rtol=1e-5)
    x0 = noise.one_step_x0(v["pred_noise"], t, v["noisy_f32"], a)
    torch.testing.assert_close(x0, v["pred_x0_f32"], atol=1e-5, rtol=1e-5)


def test_float16_bit_exact(v: dict[str, torch.Tensor]) -> None:
    a = noise.alphas_cumprod()
    t = v["timesteps"]
    noisy = noise.add_noise(v["x0_f16"], v["noise_f16"], t, a)
    assert noisy.dtype == torch.float16 and torch.equal(noisy, v["noisy_f16"])
    x0 = noise.one_step_x0(v["pred_noise_f16"], t, v["noisy_f16"], a)
    assert torch.equal(x0, v["pred_x0_f16"])


def test_mixed_noise_statistics() -> None:
    """α = 1: both parts have variance 0.5; frames share half the variance (correlation 0.5)."""
    g = torch.Generator().manual_seed(0)
    n = torch.stack([noise.mixed_noise((4, 16, 8, 8), 1.0, g) for _ in range(64)])
    assert abs(n.var().item() - 1.0) < 0.05
    corr = torch.corrcoef(torch.stack([n[:, :, 0].flatten(), n[:, :, 5].flatten()]))[0, 1].item()
    assert abs(corr - 0.5) < 0.05
    iid = torch.stack([noise.mixed_noise((4, 16, 8, 8), 0.0, g) for _ in range(64)])
    corr0 = torch.corrcoef(torch.stack([iid[:, :, 0].flatten(), iid[:, :, 5].flatten()]))[0, 1].item()
    assert abs(corr0) < 0.05
