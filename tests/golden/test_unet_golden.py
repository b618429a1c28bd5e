"""Golden vector 1: forward pass of the tiny stage2 / stage2_efficient / stage1 UNets against the official
implementation (shared/golden/unet_forward*), plus properties of the forward (audio layout, caching)."""

from __future__ import annotations

import json

import pytest
import torch

from lipsyncctl.nets.motion import sinusoidal_position_table
from lipsyncctl.nets.unet import UNet3DConditionModel, UNetFeatureCache
from lipsyncctl.nets.unet_config import UNetConfig
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"
pytestmark = pytest.mark.skipif(
    not (GOLDEN / "unet_forward_io.safetensors").is_file(), reason=f"golden vectors not found under {GOLDEN}"
)

VARIANTS = {
    # name in unet_forward.json -> (output key, rule for keys of the shared weights file to drop)
    "unet_stage2_tiny": ("noise_pred_stage2", lambda k: False),
    "unet_stage2_efficient_tiny": (
        "noise_pred_stage2_efficient", lambda k: k.startswith("down_blocks.") and ".motion_modules." in k
    ),
    "unet_stage1_tiny": ("noise_pred_stage1", lambda k: "motion_modules." in k),
}


def _load(name: str) -> UNet3DConditionModel:
    from safetensors.torch import load_file

    meta = json.loads((GOLDEN / "unet_forward.json").read_text())
    model = UNet3DConditionModel(UNetConfig.from_dict(meta["variants"][name]["config"])).eval()
    drop = VARIANTS[name][1]
    weights = {
        k: (v.float() if v.dtype == torch.float16 else v)
        for k, v in load_file(GOLDEN / "unet_tiny_weights.safetensors").items() if not drop(k)
    }
    model.load_state_dict(weights, strict=True)
    return model


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    data = load_file(GOLDEN / "unet_forward_io.safetensors")
    chunks = load_file(GOLDEN / "whisper_features.safetensors")["chunks_0_15"]
    # The layout the pipeline passes under guidance: 3-D, row = b*16 + f, batch order [uncond, cond].
    data["encoder_hidden_states"] = torch.cat([torch.zeros_like(chunks), chunks])
    return data


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_matches_official(name: str, io: dict[str, torch.Tensor]) -> None:
    model = _load(name)
    with torch.no_grad():
        out = model(io["sample"], io["timestep"], io["encoder_hidden_states"])
    ref = io[VARIANTS[name][0]]
    assert out.shape == ref.shape == (2, 4, 16, 16, 16)
    err = (out - ref).abs()
    assert torch.all(err <= 1e-4 + 1e-4 * ref.abs()), f"max abs error {err.max().item():.3g}"


def test_position_tables_equal_the_checkpoint() -> None:
    from safetensors.torch import load_file

    weights = load_file(GOLDEN / "unet_tiny_weights.safetensors")
    pes = {k: v for k, v in weights.items() if k.endswith("pos_encoder.pe")}
    assert len(pes) == 24
    for k, v in pes.items():
        assert v.dtype == torch.float32
        assert torch.equal(sinusoidal_position_table(v.shape[1], v.shape[2]), v), k


def test_audio_layouts_and_effect(io: dict[str, torch.Tensor]) -> None:
    model = _load("unet_stage2_tiny")
    sample, t, ehs = io["sample"], io["timestep"], io["encoder_hidden_states"]
    with torch.no_grad():
        flat = model(sample, t, ehs)
        four_d = model(sample, int(t.item()), ehs.reshape(2, 16, 50, 384))
        no_audio = model(sample, t, None)
    torch.testing.assert_close(four_d, flat, rtol=0, atol=1e-6)
    # Batch 0 has all-zero audio; batch 1 the real chunks: dropping the audio changes batch 1 a lot.
    assert (no_audio[1] - flat[1]).abs().max() > 0.5


def test_frame_count_limit() -> None:
    cfg = UNetConfig.from_dict(json.loads((GOLDEN / "unet_forward.json").read_text())
                               ["variants"]["unet_stage2_tiny"]["config"])
    model = UNet3DConditionModel(cfg).eval()
    with pytest.raises(ValueError, match="24"):
        model(torch.zeros(1, 13, 25, 8, 8), 1, torch.zeros(25, 50, 384))


def test_feature_cache_partial_step_equals_full_step(io: dict[str, torch.Tensor]) -> None:
    """With the cache filled from the same inputs, a partial pass must reproduce the full pass; with a
    different timestep it must differ from a full pass (deep features are reused)."""
    model = _load("unet_stage2_tiny")
    sample, t, ehs = io["sample"], io["timestep"], io["encoder_hidden_states"]
    cache = UNetFeatureCache()
    with torch.no_grad():
        full = model(sample, t, ehs, cache=cache)
        assert cache.feature is not None and not cache.refresh
        partial = model(sample, t, ehs, cache=cache)
        assert cache.partial_steps == 1
        torch.testing.assert_close(partial, full, rtol=0, atol=1e-5)
        other_full = model(sample, 901, ehs)
        other_partial = model(sample, 901, ehs, cache=cache)
    assert (other_partial - other_full).abs().max() > 1e-3
    cache.clear()
    assert cache.feature is None and cache.refresh


def _tiny_random(seed: int = 0) -> UNet3DConditionModel:
    cfg = UNetConfig.from_dict(json.loads((GOLDEN / "unet_forward.json").read_text())
                               ["variants"]["unet_stage2_tiny"]["config"])
    model = UNet3DConditionModel(cfg)
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():  # the zero-initialised convs/proj_out would hide every branch
        torch.nn.init.normal_(p, std=0.05, generator=gen)
    return model


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = _tiny_random().train()
    x = torch.randn(1, 13, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    audio = torch.randn(4, 50, 384, generator=torch.Generator().manual_seed(2))

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(x, 10, audio).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)


def test_bfloat16_forward_is_close_to_float32() -> None:
    model = _tiny_random().eval()
    x = torch.randn(1, 13, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    audio = torch.randn(4, 50, 384, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x, 500, audio)
        low = model.to(torch.bfloat16)(x, 500, audio)
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05, f"relative error {rel:.3g}"
