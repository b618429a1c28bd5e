"""Reduced precision against fp32, held to the budgets of lipsyncctl.runner.precision (issue 9, part 2).

Fast (CPU bf16): the UNet forward, the VAE round trip and the whisper features within budget; fp16 range
of the VAE decoder; the budget table in the README is the one the module generates; the dtype each
setting resolves to. Slow (-m slow): the 20-step guided window in bf16, every component in fp16 (torch's
CPU half kernels), and the full-width sd-vae-ft-mse decoder / UNet activations at 256 and 512 px.
"""

from __future__ import annotations

import pytest
import torch

from lipsyncctl.checks import precision as measure
from lipsyncctl.errors import ConfigError
from lipsyncctl.runner import precision
from lipsyncctl.runner.devices import resolve_dtype
from tests.conftest import REPO

CPU = torch.device("cpu")
#: fp16 must keep this much headroom below its largest value (65504 / 8 = 8188) on random weights.
HEADROOM = 8.0


def _report(r: measure.PrecisionResult) -> str:
    return (f"{r.dtype} {r.component}: max_rel {r.stats.max_rel:.4g} (budget {r.budget.max_rel:g}), "
            f"mean_rel {r.stats.mean_rel:.4g} (budget {r.budget.mean_rel:g}), finite {r.stats.finite}")


@pytest.mark.parametrize("component", ["unet", "vae", "whisper"])
def test_bf16_within_budget(component: str) -> None:
    r = measure.MEASUREMENTS[component]("bf16", CPU)
    assert r.stats.finite and r.within, _report(r)
    assert r.stats.max_rel > 0  # bf16 really ran (an fp32 copy would be exact)


@pytest.mark.slow
def test_bf16_window_within_budget() -> None:
    r = measure.measure_window("bf16", CPU)
    assert r.within, _report(r)


@pytest.mark.slow
@pytest.mark.parametrize("component", ["unet", "window", "vae", "whisper"])
def test_fp16_within_budget(component: str) -> None:
    r = measure.MEASUREMENTS[component]("fp16", CPU)
    assert r.within, _report(r)
    # fp16 carries 3 more mantissa bits than bf16: its error must be well below bf16's budget
    assert r.stats.mean_rel < precision.budget("bf16", component).mean_rel / 2, _report(r)


# --------------------------------------------------------------------------------------------------
# fp16 range: no NaN/Inf at 256 or 512 px


@pytest.mark.parametrize("size", [256, pytest.param(512, marks=pytest.mark.slow)])
def test_vae_decoder_in_fp16_is_finite(size: int) -> None:
    from diffusers import AutoencoderKL

    from lipsyncctl.checkpoints.tiny import TINY_VAE_CONFIG

    vae = measure._init(AutoencoderKL(**TINY_VAE_CONFIG), torch.Generator().manual_seed(0))
    maxima, images = measure.vae_decoder_maxima(vae, size, torch.float16, CPU)
    assert images.shape == (1, 3, size, size) and bool(torch.isfinite(images).all())
    assert max(maxima.values()) < precision.FP16_MAX / HEADROOM, max(maxima.items(), key=lambda kv: kv[1])


def test_narrow_sd_vae_decoder_activations_fit_fp16() -> None:
    """The sd-vae-ft-mse layout (quarter width), fp32, at 256 px: every activation far below 65504."""
    vae = measure.build_vae(torch.Generator().manual_seed(0), widths=(32, 64, 128, 128), groups=8)
    maxima, images = measure.vae_decoder_maxima(vae, 256, torch.float32, CPU)
    name, peak = max(maxima.items(), key=lambda kv: kv[1])
    assert peak < precision.FP16_MAX / HEADROOM, (name, peak)


@pytest.mark.slow
@pytest.mark.parametrize("size", [256, 512])
def test_full_sd_vae_decoder_activations_fit_fp16(size: int) -> None:
    """The real sd-vae-ft-mse widths (seeded random weights), fp32 activation maxima, then fp16 at 256."""
    vae = measure.build_vae(torch.Generator().manual_seed(0))
    maxima, _ = measure.vae_decoder_maxima(vae, size, torch.float32, CPU)
    name, peak = max(maxima.items(), key=lambda kv: kv[1])
    print(f"\nsd-vae-ft-mse decoder, {size} px, fp32: max |activation| {peak:.4g} at {name}")
    assert peak < precision.FP16_MAX / HEADROOM, (name, peak)


@pytest.mark.slow
@pytest.mark.parametrize("latent", [32, 64])
def test_unet_in_fp16_is_finite(latent: int) -> None:
    """The narrow stage2-layout UNet of the ``cpu`` setup in fp16 at 256 px (latent 32) and 512 px (64)."""
    s = measure.SETUPS["cpu"]["unet"]
    gen = torch.Generator().manual_seed(0)
    unet = measure.build_unet(gen, widths=s["widths"], layers=s["layers"], heads=s["heads"]).half()
    x, audio = measure._unet_inputs(gen, 2, 2, latent)
    out: list[torch.Tensor] = []
    maxima = measure.activation_maxima(unet, lambda: out.append(unet(x.half(), 501, audio.half())))
    name, peak = max(maxima.items(), key=lambda kv: kv[1])
    print(f"\nUNet (narrow stage2), latent {latent}, fp16: max |activation| {peak:.4g} at {name}")
    assert bool(torch.isfinite(out[0]).all())
    assert peak < precision.FP16_MAX / HEADROOM, (name, peak)


# --------------------------------------------------------------------------------------------------
# One place: the budgets, the README, the dtype rule


def test_budgets_are_measured_times_margin() -> None:
    for key, (mx, mean) in precision.MEASURED.items():
        b = precision.BUDGETS[key]
        assert mx * precision.MARGIN <= b.max_rel <= mx * precision.MARGIN * 1.1, key
        assert mean * precision.MARGIN <= b.mean_rel <= mean * precision.MARGIN * 1.1, key
    assert {c for _, c in precision.BUDGETS} == set(precision.COMPONENTS)
    with pytest.raises(KeyError, match="no precision budget"):
        precision.budget("fp8", "unet")


def test_readme_shows_the_budget_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert precision.budget_table() in readme, "README budget table is stale: paste precision.budget_table()"


def test_compare_metric() -> None:
    ref = torch.tensor([0.0, 1.0, 2.0, 3.0])
    stats = precision.compare(ref + torch.tensor([0.0, 0.0, 0.0, 0.5]), ref)
    std = float(ref.double().std())
    assert stats.max_rel == pytest.approx(0.5 / std) and stats.mean_rel == pytest.approx(0.125 / std)
    bad = precision.compare(torch.tensor([0.0, float("inf"), 2.0, 3.0]), ref)
    assert not bad.finite and not bad.within(precision.Budget(1e9, 1e9))


@pytest.mark.parametrize("setting", ["auto", "fp32", "fp16", "bf16"])
def test_resolved_dtype_matches_the_runner_on_cpu(setting: str) -> None:
    name = precision.resolved_dtype(setting, "cpu")
    if name is None:
        with pytest.raises(ConfigError):
            resolve_dtype(setting, CPU)
    else:
        assert resolve_dtype(setting, CPU) == getattr(torch, measure.DTYPES[name])


def test_resolved_dtype_on_gpus() -> None:
    assert precision.resolved_dtype("auto", "cuda", (8, 0)) == "fp16"
    assert precision.resolved_dtype("auto", "cuda", (7, 5)) == "fp32"
    assert precision.resolved_dtype("fp16", "cuda", (7, 5)) == "fp16"
    assert precision.resolved_dtype("bf16", "cpu") == "bf16"
    assert set(precision.DTYPE_REASONS) == {"auto", "fp32", "fp16", "bf16"}
