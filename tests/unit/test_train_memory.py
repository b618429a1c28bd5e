"""The training VRAM estimate (lipsyncctl.training.memory) and ``doctor --preset <training preset>``.

How the estimate is held to account, without a GPU:
1. the counting method: saved-for-backward bytes counted on the meta device equal those of a real CPU
   forward of the tiny UNet (two resolutions, with and without checkpointing, fp32 and half rules);
2. the formula against that count for the official UNets and for the whole training step;
3. the official README figures, once the official script's own extra memory is taken out;
4. the 24 GB / 40 GB presets fit their cards by the estimate.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lipsyncctl.checks import doctor as checks
from lipsyncctl.runner import gpus as gpu
from lipsyncctl.training import memory
from lipsyncctl.training.config import TrainConfig, list_train_presets, resolve_train_config

GiB = gpu.GiB
STAGE2_RULE = ("motion_modules.", "attentions.")


def _estimate(preset: str, *sets: str, **flags: Any) -> memory.TrainMemory:
    return memory.estimate_training_memory(resolve_train_config(preset, sets, flags or None))


def _unet(config: str, rule: tuple[str, ...], device: str) -> torch.nn.Module:
    from lipsyncctl.checkpoints import archs
    from lipsyncctl.nets.unet import UNet3DConditionModel
    from lipsyncctl.training.trainable import select_trainable

    torch.manual_seed(0)
    with torch.device(device):
        model = UNet3DConditionModel(archs.load_unet_config(config))
    model.train()
    select_trainable(model, rule)
    return model


def _unet_saved(model: torch.nn.Module, res: int, batch: int, half: torch.dtype | None, device: str,
                frames: int = 16) -> int:
    h = res // 8
    x = torch.randn(batch, 13, frames, h, h, device=device)
    ctx = torch.randn(batch, frames, 50, 384, device=device)
    t = torch.full((batch,), 500, device=device)
    return memory.measure_saved_bytes(lambda: model(x, t, ctx), [model], half=half)


# ----------------------------------------------------------------------------------------------------
# 1. the counting method


@pytest.mark.parametrize("half", [pytest.param(None, marks=pytest.mark.slow), torch.float16],
                         ids=["fp32", "fp16-rules"])
def test_meta_count_equals_a_real_cpu_forward_of_the_tiny_unet(half: torch.dtype | None) -> None:
    cpu, meta = _unet("tiny", STAGE2_RULE, "cpu"), _unet("tiny", STAGE2_RULE, "meta")
    for res in (64, 128):
        for ckpt in (False, True):
            cpu.enable_gradient_checkpointing(ckpt)
            meta.enable_gradient_checkpointing(ckpt)
            real = _unet_saved(cpu, res, 1, half, "cpu", frames=4)
            counted = _unet_saved(meta, res, 1, half, "meta", frames=4)
            assert counted == pytest.approx(real, rel=1e-3), (res, ckpt)
    # checkpointing keeps far less; the activations grow with the latent positions (4x pixels: ~4x)
    meta.enable_gradient_checkpointing(False)
    small, large = _unet_saved(meta, 64, 1, half, "meta"), _unet_saved(meta, 128, 1, half, "meta")
    assert 2.5 < large / small < 4.1


def test_cuda_autocast_rules_keep_norms_in_fp32() -> None:
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    norm = torch.nn.GroupNorm(4, 8)
    conv = torch.nn.Conv2d(8, 8, 1)
    as_is = memory.measure_saved_bytes(lambda: conv(torch.nn.functional.silu(norm(x))), [norm, conv])
    rules = memory.measure_saved_bytes(lambda: conv(torch.nn.functional.silu(norm(x))), [norm, conv],
                                       half=torch.float16)
    # fp32: x, norm out, silu out (4 B each); fp16 rules: x, norm out in fp32, silu out cast to half for the
    # conv (+ the conv's half weight copy)
    assert as_is == 3 * x.numel() * 4 + 2 * 8 * 4  # + group-norm mean/rstd
    assert rules == 2 * x.numel() * 4 + x.numel() * 2 + 2 * 8 * 4 + 8 * 8 * 2


# ----------------------------------------------------------------------------------------------------
# 2. the formula against the count


@pytest.mark.parametrize("config,rule", [("stage2", STAGE2_RULE), ("stage2_efficient", ("motion_modules.", "attn2.")),
                                         ("stage1", ())])
@pytest.mark.parametrize("bits", [16, pytest.param(32, marks=pytest.mark.slow)])
def test_unet_formula_matches_the_meta_count(config: str, rule: tuple[str, ...], bits: int) -> None:
    model = _unet(config, rule, "meta")
    half = torch.float16 if bits == 16 else None
    for ckpt in (False, True):
        model.enable_gradient_checkpointing(ckpt)
        counted = _unet_saved(model, 256, 1, half, "meta")
        est = memory.unet_activation_bytes(config, rule, resolution=256, frames=16, batch=1, bits=bits)
        assert (est.checkpointed if ckpt else est.full) == pytest.approx(counted, rel=0.05), ckpt
        if ckpt:
            assert est.recompute < est.full / 10


def _measure_step(cfg: TrainConfig, half: torch.dtype | None, monkeypatch: pytest.MonkeyPatch) -> int:
    """Saved bytes of the real UNet micro-step on the meta device (full-size random networks)."""
    from lipsyncctl.training import noise, step

    b, f, r = cfg.data.batch_size, cfg.data.num_frames, cfg.model.resolution
    draws = step.Draws(torch.zeros(3, b, f, 4, r // 8, r // 8), torch.zeros(b, 4, f, r // 8, r // 8),
                       torch.full((b,), 500))
    monkeypatch.setattr(step, "sample_draws", lambda *a, **k: draws)
    nets = memory.random_train_networks(cfg, "meta", half or torch.float32)
    batch = memory.synthetic_unet_batch(cfg, "meta")
    modules = [nets.model, nets.vae, *nets.aux.values()]
    return memory.measure_saved_bytes(
        lambda: step.unet_micro_step(nets, batch, cfg, alphas=noise.alphas_cumprod(), device=torch.device("meta"),
                                     autocast=contextlib.nullcontext), modules, half=half)


@pytest.mark.parametrize("preset", [pytest.param("stage2", marks=pytest.mark.slow), "stage2_efficient"])
def test_estimate_matches_the_counted_training_step(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for ckpt in (True, False):
        cfg = resolve_train_config(preset, [f"run.grad_checkpointing={str(ckpt).lower()}"],
                                   {"run.mixed_precision": "fp16"})
        kept = _measure_step(cfg, torch.float16, monkeypatch)
        parts = memory.estimate_training_memory(cfg).configured
        assert (parts.activations + parts.vae_decode + parts.loss_networks) * GiB == pytest.approx(kept, rel=0.05)


# ----------------------------------------------------------------------------------------------------
# 3. sizes, ordering and the official figures


def test_counts_of_the_networks() -> None:
    m = _estimate("stage2")
    assert m.trained_params == 1_267_099_844 and m.trainable_params == 674_792_320
    assert m.networks == {"unet": 1_267_099_844, "vae": 83_653_863, "syncnet": 401_306_080,
                          "lpips": 14_716_160, "videomae": 1_011_855_918}
    parts = m.configured
    assert parts.gradients * GiB == 4 * 674_792_320 and parts.optimizer * GiB == 8 * 674_792_320
    frozen = 2 * (83_653_863 + 401_306_080 + 1_011_855_918) + 4 * 14_716_160  # LPIPS in float32 (official)
    assert parts.weights * GiB == 4 * 1_267_099_844 + frozen
    assert _estimate("stage2_efficient").trainable_params == 284_660_480
    assert set(_estimate("stage2_efficient").networks) == {"unet", "vae", "syncnet", "lpips"}  # no TREPA
    assert set(_estimate("stage1").networks) == {"unet", "vae"}  # no pixel supervision
    fp32 = _estimate("stage2", **{"run.mixed_precision": "no"})
    assert fp32.precision == "fp32" and fp32.configured.weights * GiB == 4 * (1_267_099_844 + 83_653_863 + 401_306_080
                                                                                   + 1_011_855_918 + 14_716_160)


def test_ordering_and_checkpointing() -> None:
    eff, s2, s512 = _estimate("stage2_efficient"), _estimate("stage2"), _estimate("stage2_512")
    assert eff.total_gb < s2.total_gb < s512.total_gb
    for m in (eff, s2, s512, _estimate("stage1")):
        assert m.checkpointing and m.configured == m.checkpointed
        assert m.checkpointed.activations < m.full.activations / 10
        assert m.checkpointed.total < m.full.total
    for m in (eff, s2, s512):
        assert m.checkpointed.vae_decode < m.full.vae_decode / 5
        assert m.checkpointed.recompute > m.checkpointed.activations  # the VAE's last up block dominates
    off = _estimate("stage2", "run.grad_checkpointing=false")
    assert off.configured == off.full and off.total_gb == pytest.approx(s2.full.total)
    two = _estimate("stage2", "data.batch_size=2")
    assert two.configured.activations == pytest.approx(2 * s2.configured.activations, rel=0.15)  # + weights
    assert two.configured.recompute == pytest.approx(2 * s2.configured.recompute)
    assert two.configured.weights == s2.configured.weights


#: What the official train_unet.py holds that this package's loop does not (LATENTSYNC.md §3.1): the
#: DDP reducer's fp32 copy of the gradients (torchrun, even on one GPU) and the validation-only networks
#: resident the whole run: whisper tiny in fp32 (37.2 M), SyncNet v2 (52.5 MB file) and S3FD (89.8 MB).
VALIDATION_NETWORKS_GIB = (37_184_640 * 4 + 52.5e6 + 89.8e6) / GiB


@pytest.mark.parametrize("preset,official_gb", [("stage2", 30.0), ("stage2_efficient", 20.0)])
def test_agrees_with_the_official_figures_without_their_waste(preset: str, official_gb: float) -> None:
    m = _estimate(preset)
    waste = 4 * m.trainable_params / GiB + VALIDATION_NETWORKS_GIB
    assert abs(m.total_gb / (official_gb - waste) - 1) < 0.35, (m.total_gb, official_gb - waste)


# ----------------------------------------------------------------------------------------------------
# 4. the presets for smaller cards


@pytest.mark.parametrize("preset,card_gib", [("stage2-24gb", 24), ("stage2_512-40gb", 40)])
def test_small_card_presets_fit(preset: str, card_gib: int) -> None:
    assert preset in list_train_presets()
    m = _estimate(preset)
    # a card's free memory is ~1 GiB under its size (display, driver); the CUDA context is in the estimate
    assert memory.estimate_training_memory(resolve_train_config(preset), free_gb=card_gib - 1).fits
    assert m.checkpointing and m.batch_size == 1 and m.precision == "16-bit"
    assert f"{m.total_gb:.1f} GiB" in resolve_train_config(preset).description
    assert not _estimate(preset.split("-")[0]).total_gb < card_gib - 1  # the official preset does not fit


def test_tiny_presets_are_small() -> None:
    for preset in ("tiny", "tiny-stage1", "tiny-syncnet"):
        assert _estimate(preset).total_gb < 1.5
    sync = _estimate("syncnet_16_pixel_attn")
    assert sync.kind == "syncnet" and sync.trainable_params == 401_306_080
    assert sync.full.activations > 20  # batch 256
    assert sync.checkpointing and sync.configured == sync.checkpointed
    assert sync.checkpointed.activations < sync.full.activations / 5
    assert sync.checkpointed.total < sync.full.total / 2


@pytest.mark.parametrize("preset", ["tiny-syncnet", "tiny-syncnet-25"])
def test_syncnet_estimate_equals_a_real_cpu_training_step(preset: str) -> None:
    """The trained StableSyncNet's activations in the estimate (measured on the meta device) equal what a real
    CPU step keeps for backward, with and without checkpointing; the recompute peak is one block's share."""
    from types import SimpleNamespace

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.nets.syncnet import StableSyncNet
    from lipsyncctl.training import step
    from lipsyncctl.training.data import mel_columns

    for ckpt in (False, True):
        cfg = resolve_train_config(preset, [f"run.grad_checkpointing={str(ckpt).lower()}"])
        est = memory.estimate_training_memory(cfg)
        b, f, res = cfg.data.batch_size, cfg.data.num_frames, cfg.model.resolution
        torch.manual_seed(0)
        net = StableSyncNet(archs.load_syncnet_config(cfg.model.syncnet_config)).train()
        net.enable_gradient_checkpointing(ckpt)
        batch = {"frames": torch.randn(b, 3 * f, res // 2 if cfg.data.lower_half else res, res),
                 "mel": torch.randn(b, 1, 80, mel_columns(f)), "label": torch.ones(b)}
        kept = memory.measure_saved_bytes(
            lambda net=net, batch=batch: step.syncnet_micro_step(
                SimpleNamespace(model=net), batch, device=torch.device("cpu"), autocast=contextlib.nullcontext)[0],
            [net])
        assert est.checkpointing is ckpt
        assert est.configured.activations * GiB == pytest.approx(kept, rel=0.02), ckpt
        if ckpt:
            assert 0 < est.configured.recompute < est.full.activations
            assert est.configured.total < est.full.total


# ----------------------------------------------------------------------------------------------------
# doctor --preset <training preset>


def test_doctor_row_without_gpu() -> None:
    (row,) = checks.check_train_preset(resolve_train_config("stage2"), gpu.GpuProbe([], "test", None))
    assert row.status == "ok" and not row.required
    assert row.detail.startswith("needs about 29.0 GiB") and row.detail.endswith("no GPU: estimate only")
    assert row.data["estimate"]["total_gb"] == pytest.approx(29.0, abs=0.05)


def test_doctor_row_of_a_trainable_typo_is_a_failed_row() -> None:
    """A model.trainable part that names no parameter stopped the whole doctor report (exit 3): one row now."""
    config = resolve_train_config("stage2", ["model.trainable=[motion_modules.,atention.]"])
    (row,) = checks.check_train_preset(config, gpu.GpuProbe([], "test", None))
    assert row.status == "fail" and "'atention.' matches no parameter" in row.detail and row.hint


@pytest.mark.parametrize("free_gib,status", [(80.0, "ok"), (20.0, "warn")])
def test_doctor_row_against_free_memory(free_gib: float, status: str) -> None:
    card = gpu.GpuInfo(0, "Fake", (8, 6), int(24 * GiB), int(free_gib * GiB), "nvml")
    (row,) = checks.check_train_preset(resolve_train_config("stage2"), gpu.GpuProbe([card], None, "1"))
    assert row.status == status and not row.required and "gpu 0 has" in row.detail
    assert bool(row.hint) == (status == "warn")


def test_cli_resolves_a_training_preset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lipsyncctl import api
    from lipsyncctl.cli.main import main

    seen: dict[str, Any] = {}

    def fake(config: Any = None, **kwargs: Any) -> checks.DoctorResult:
        seen.update(config=config, **kwargs)
        return checks.DoctorResult(checks=[], preset="x")

    monkeypatch.setattr(api, "doctor", fake)
    assert main(["--json", "doctor", "--preset", "stage2", "--set", "loss.trepa=0", "-o", str(tmp_path)]) == 0
    assert seen["config"] is None and seen["train_config"].name == "stage2"
    assert seen["train_config"].loss.trepa == 0
    assert main(["--json", "doctor", "--preset", "tiny", "-o", str(tmp_path)]) == 0  # a run preset wins
    assert seen["config"].name == "tiny" and seen["train_config"] is None


# ----------------------------------------------------------------------------------------------------
# scripts/gpu_train_check.py


@pytest.mark.slow
def test_gpu_train_check_smoke_on_cpu(tmp_path: Path) -> None:
    """The GPU script's --smoke mode: tiny presets on the CPU through the real step function (~30 s)."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "scripts" / "gpu_train_check.py"
    spec = importlib.util.spec_from_file_location("gpu_train_check", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "check.json"
    assert script.main(["--smoke", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {(r["preset"], r["checkpointing"]): r for r in doc["rows"]}
    assert set(rows) == {(p, c) for p in ("tiny", "tiny-stage1") for c in (True, False)}
    for r in rows.values():
        assert r["status"] == "ok" and r["step_s"] > 0 and r["samples_per_s"] > 0
        assert r["estimate_gib"] == pytest.approx(r["estimate"]["total"], abs=1e-3)
        assert math.isfinite(r["first_loss"]) and math.isfinite(r["last_loss"])
