"""float32 precision of the UNet at every latent size: our float32 run against our own float64 run.

The golden README (shared/golden/README.md, vectors 1 and 2) gives the official implementation's float32
error against float64: UNet forward 2.4e-6 .. 2.7e-6 max abs on outputs of std ~0.57, and 1.0e-5 max abs
for the 4-step loop at guidance 1.5 (latents up to ~21). Issue 9 adds the official figures at an 8x8
latent (forward ~1.6e-5, 5-step loop at guidance 2.0 ~4e-5) and asks for at most about twice those.

The forward error is measured as the README does (max abs) and divided by the output std, so that a
random model whose outputs have another scale is held to the same standard; the loop error is max abs
on the latents (their scale is set by the scheduler, not by the model).

Each layout is the golden's tiny config (stage2, stage2_efficient, stage1) or a wider one with two layers
per block and mixed widths, random-initialised from a seeded generator. The default run uses 4 frames and
latents 8-32; the slow variant 16 frames and latents up to 64.

Module note: in the golden tiny stage2 / stage2_efficient configs the deepest level has 32 channels and
motion modules, whose GroupNorm has 32 groups. At an 8x8 latent that level is 1x1, so each group holds one
value: its variance is exactly 0 and the scale is weight / sqrt(1e-6) = 1000 x weight. torch's fused
GroupNorm (``x * scale + (bias - mean * scale)``) leaves about ``ulp(1000 * |x|)`` (~2e-4) there, as does the
official op sequence; our motion modules compute it in two passes (``nets.motion.TwoPassGroupNorm``), which
is exact there, so every layout is held to the bound at every size
(:func:`test_degenerate_groups_are_within_the_bound` pins the case).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lipsyncctl.nets.unet import UNet3DConditionModel
from lipsyncctl.nets.unet_config import UNetConfig
from lipsyncctl.pipeline.denoise import denoise, make_scheduler
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"
pytestmark = pytest.mark.skipif(
    not (GOLDEN / "unet_forward.json").is_file(), reason=f"golden configs not found under {GOLDEN}"
)

#: Official float32 forward error (max abs, issue 9 at 8x8: ~1.6e-5) over the golden output std (0.57), x2.
FORWARD_REL_BOUND = 2 * 1.6e-5 / 0.57
#: Official 5-step guided loop at guidance 2.0 (issue 9: ~4e-5 max abs at 8x8), rounded up as the issue does.
LOOP_ABS_BOUND = 5e-5

GOLDEN_VARIANTS = {"stage2": "unet_stage2_tiny", "stage2_efficient": "unet_stage2_efficient_tiny",
                   "stage1": "unet_stage1_tiny"}
LAYOUTS = [*GOLDEN_VARIANTS, "wide"]


def layout_config(layout: str) -> UNetConfig:
    variants = json.loads((GOLDEN / "unet_forward.json").read_text())["variants"]
    if layout in GOLDEN_VARIANTS:
        return UNetConfig.from_dict(variants[GOLDEN_VARIANTS[layout]]["config"])
    # Two layers per block (as the real configs) and a different width at every level but the last.
    base = UNetConfig.from_dict(variants["unet_stage2_tiny"]["config"])
    return replace(base, block_out_channels=(32, 64, 96, 96), layers_per_block=2)


def random_unet(config: UNetConfig, seed: int) -> UNet3DConditionModel:
    """A UNet whose every parameter is drawn from ``generator`` (the zero-initialised conv_in, conv_out and
    motion proj_out included, so that every branch contributes): matrices/kernels ~ N(0, 1/fan_in), norm
    scales ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2). Position tables keep their exact sinusoids."""
    model = UNet3DConditionModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith(".weight"):  # GroupNorm / LayerNorm scale
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model


def _inputs(size: int, frames: int, seed: int, batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, 1, frames, size, size)
    mask[..., size // 2:, :] = 0  # the official mouth mask: lower half regenerated
    return {
        "sample": torch.randn(batch, 13, frames, size, size, generator=gen),
        "audio": torch.randn(batch * frames, 50, 384, generator=gen),
        "latents": torch.randn(1, 4, 1, size, size, generator=gen).repeat(1, 1, frames, 1, 1),
        "mask_latents": mask,
        "masked_image_latents": torch.randn(1, 4, frames, size, size, generator=gen),
        "ref_latents": torch.randn(1, 4, frames, size, size, generator=gen),
    }


def forward_error(model: UNet3DConditionModel, size: int, frames: int, batch: int, seed: int = 0) -> tuple[float, float]:
    """(max abs error of float32 against float64, std of the float64 output)."""
    x = _inputs(size, frames, seed, batch)
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        out32 = model(x["sample"], 501, x["audio"])
        out64 = model64(x["sample"].double(), 501, x["audio"].double())
    return (out32.double() - out64).abs().max().item(), out64.std().item()


def loop_error(model: UNet3DConditionModel, size: int, frames: int, seed: int = 0) -> float:
    """Max abs error of the 5-step DDIM loop at guidance 2.0 (UNet batch 2), float32 against float64."""
    x = _inputs(size, frames, seed)
    outs = []
    for net, dtype in ((model, torch.float32), (copy.deepcopy(model).double(), torch.float64)):
        with torch.no_grad():
            outs.append(denoise(
                net, make_scheduler(), latents=x["latents"].to(dtype), mask_latents=x["mask_latents"].to(dtype),
                masked_image_latents=x["masked_image_latents"].to(dtype), ref_latents=x["ref_latents"].to(dtype),
                audio_embeds=x["audio"][frames:].to(dtype), steps=5, guidance_scale=2.0,
            ))
    return (outs[0].double() - outs[1]).abs().max().item()


def degenerate_groups(layout: str, size: int) -> bool:
    """True where a motion-module GroupNorm group holds a single value: a level of 1x1 pixels carrying motion
    modules whose width equals the 32 groups (the golden tiny configs at an 8x8 latent). See the module note."""
    cfg = layout_config(layout)
    levels = len(cfg.block_out_channels)
    deepest = size // 2 ** (levels - 1)
    return cfg.use_motion_module and deepest == 1 and cfg.block_out_channels[-1] == 32 and \
        2 ** (levels - 1) in cfg.motion_module_resolutions


def _params(sizes: list[int], *marks: pytest.MarkDecorator) -> list:
    return [pytest.param(layout, size, marks=list(marks)) for layout in LAYOUTS for size in sizes]


def _check_forward(layout: str, size: int, frames: int, batch: int) -> None:
    err, std = forward_error(random_unet(layout_config(layout), seed=7), size, frames, batch)
    assert err / std <= FORWARD_REL_BOUND, (
        f"{layout} at {size}x{size}: float32 error {err:.3g} = {err / std:.3g} x output std {std:.3g} "
        f"(bound {FORWARD_REL_BOUND:.3g})")


def _check_loop(layout: str, size: int, frames: int) -> None:
    err = loop_error(random_unet(layout_config(layout), seed=7), size, frames)
    assert err <= LOOP_ABS_BOUND, f"{layout} at {size}x{size}: 5-step loop float32 error {err:.3g}"


# Default run: 2 frames (the motion modules still attend across frames), forward with batch 1 (the
# per-frame reshapes are views then), the loop with the CFG batch of 2 (they are copies); the loop of
# stage2 (motion modules) runs in test_degenerate_groups_are_the_only_excess. The slow variants cover
# every layout with 16 frames.
@pytest.mark.parametrize(("layout", "size"), [*_params([8, 16]), *_params([24, 32], pytest.mark.slow)])
def test_forward_float32_error(layout: str, size: int) -> None:
    _check_forward(layout, size, frames=2, batch=1)


@pytest.mark.parametrize("layout", ["stage1", pytest.param("wide", marks=pytest.mark.slow)])
def test_guided_loop_float32_error(layout: str) -> None:
    _check_loop(layout, 8, frames=2)


def test_degenerate_groups_are_within_the_bound() -> None:
    """stage2 at 8x8, where every motion-module GroupNorm group holds one value (the case torch's fused kernel
    and the official code get ~10x past the bound): the two-pass GroupNorm keeps the forward and the 5-step
    guided loop within the bounds, and the fused kernel would not."""
    assert degenerate_groups("stage2", 8)
    model = random_unet(layout_config("stage2"), seed=7)
    err, std = forward_error(model, 8, frames=2, batch=1)
    assert err / std <= FORWARD_REL_BOUND, f"forward {err:.3g} (std {std:.3g})"
    assert loop_error(model, 8, frames=2) <= LOOP_ABS_BOUND
    fused = random_unet(layout_config("stage2"), seed=7)
    for name, mod in fused.named_modules():
        if name.endswith("temporal_transformer.norm"):
            mod.__class__ = torch.nn.GroupNorm  # torch's fused kernel, as upstream
    err_fused, _ = forward_error(fused, 8, frames=2, batch=1)
    assert err_fused / std > FORWARD_REL_BOUND  # the defect this guards against is real


def test_two_pass_group_norm_equals_torch_on_ordinary_groups() -> None:
    from lipsyncctl.nets.motion import TwoPassGroupNorm

    gen = torch.Generator().manual_seed(0)
    norm = TwoPassGroupNorm(32, 64, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=gen)
    torch.nn.init.normal_(norm.bias, generator=gen)
    x = torch.randn(3, 64, 5, generator=gen, dtype=torch.float64)
    ref = F.group_norm(x, 32, norm.weight.double(), norm.bias.double(), 1e-6)
    assert torch.allclose(norm.double()(x), ref, atol=1e-12)
    narrow = TwoPassGroupNorm(32, 32, eps=1e-6)
    torch.nn.init.normal_(narrow.bias, generator=gen)
    one = torch.randn(2, 32, 1, 1, generator=gen)  # one value per group: exactly the bias
    assert torch.equal(narrow(one), narrow.bias.detach().view(1, 32, 1, 1).expand(2, 32, 1, 1))
    assert set(norm.state_dict()) == {"weight", "bias"}


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "size"), _params([8, 16, 24, 32, 64]))
def test_forward_float32_error_16_frames(layout: str, size: int) -> None:
    _check_forward(layout, size, frames=16, batch=2)


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "size"), _params([8, 16, 24, 32]))
def test_guided_loop_float32_error_16_frames(layout: str, size: int) -> None:
    _check_loop(layout, size, frames=16)
