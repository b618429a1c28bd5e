"""UNet step time (random weights): full passes vs DeepCache-style partial passes, one 16-frame window.

Run on demand: ``.venv/bin/python -m pytest -m bench tests/bench/test_unet_bench.py -s``.
Environment: ``LIPSYNCCTL_BENCH_UNET`` = config names (default ``tiny``; e.g. ``tiny,stage2``),
``LIPSYNCCTL_BENCH_DEVICE`` (default ``cpu``), ``LIPSYNCCTL_BENCH_DTYPE`` (``fp32`` | ``fp16`` | ``bf16``),
``LIPSYNCCTL_BENCH_LATENT`` (latent side, default 32 = 256 px).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import torch

from lipsyncctl.checkpoints.archs import load_unet_config
from lipsyncctl.nets.motion import sinusoidal_position_table
from lipsyncctl.nets.unet import UNet3DConditionModel, UNetFeatureCache

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _measure(name: str, device: torch.device, dtype: torch.dtype, side: int, gen: torch.Generator
             ) -> tuple[str, int, float, float]:
    cfg = load_unet_config(name)
    with torch.device("meta"):
        model = UNet3DConditionModel(cfg)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02, generator=gen)
    for n, b in model.named_buffers():  # to_empty left the position tables uninitialised
        if n.endswith("pos_encoder.pe"):
            b.copy_(sinusoidal_position_table(b.shape[1], b.shape[2]))
    model = model.to(device=device, dtype=dtype).eval()
    x = torch.randn(2, cfg.in_channels, 16, side, side, generator=gen).to(device, dtype)
    audio = torch.randn(32, 50, cfg.cross_attention_dim, generator=gen).to(device, dtype)
    cache = UNetFeatureCache()
    repeats = 3 if name == "tiny" else 1
    with torch.no_grad():
        full = _time(lambda: model(x, 501, audio), device, repeats)
        model(x, 501, audio, cache=cache)
        partial = _time(lambda: model(x, 501, audio, cache=cache), device, repeats)
    return name, sum(p.numel() for p in model.parameters()), full, partial


@pytest.mark.bench
def test_unet_step_time() -> None:
    names = os.environ.get("LIPSYNCCTL_BENCH_UNET", "tiny").split(",")
    device = torch.device(os.environ.get("LIPSYNCCTL_BENCH_DEVICE", "cpu"))
    dtype = DTYPES[os.environ.get("LIPSYNCCTL_BENCH_DTYPE", "fp32")]
    side = int(os.environ.get("LIPSYNCCTL_BENCH_LATENT", "32"))
    gen = torch.Generator().manual_seed(0)
    rows = [_measure(name, device, dtype, side, gen) for name in names]
    print(f"\nUNet step, batch 2 (CFG) x 16 frames, latent {side}x{side}, {device}, {dtype}")
    print(f"{'config':<18}{'params':>14}{'full s':>10}{'partial s':>11}{'speed-up':>10}")
    for name, params, full, partial in rows:
        print(f"{name:<18}{params:>14,}{full:>10.3f}{partial:>11.3f}{full / partial:>10.1f}")
    assert all(partial < full for *_, full, partial in rows)
