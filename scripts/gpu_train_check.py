#!/usr/bin/env python
"""Training step time and peak VRAM on a lent GPU, beside the estimate (issue 11): one JSON.

For each preset (default stage2, stage2_efficient, stage2_512), with and without gradient checkpointing:
full-size networks with random weights and no files (:func:`lipsyncctl.training.memory.random_train_networks`:
the UNet in fp32 with the preset's trainable rule, the VAE and the weighted loss networks frozen in the run's
half dtype), AdamW on the trained parameters, and ``--steps`` training steps of the real step function
(:func:`lipsyncctl.training.step.unet_micro_step` under CUDA autocast, backward, clipping, AdamW; GradScaler
in fp16) on synthetic batches, after one warm-up step. Each row records the step time, samples/s,
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` (GiB) and the estimate
(:func:`~lipsyncctl.training.memory.estimate_training_memory`) with their ratio. An out-of-memory or any other
error is recorded in its row and the next row runs. The JSON is rewritten after every row, so a run cut
short keeps what it measured.

    .venv/bin/python scripts/gpu_train_check.py [-o $OUT/train_check.json] [--steps 3] [--presets stage2,...]
    .venv/bin/python scripts/gpu_train_check.py --smoke      # CPU, tiny presets, fp32: checks the script

Exit status 0 when every row ran, 1 when a row failed, 2 without a GPU (and without --smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lipsyncctl.training import memory, noise  # noqa: E402
from lipsyncctl.training.config import TrainConfig, resolve_train_config  # noqa: E402
from lipsyncctl.training.step import Draws, unet_micro_step  # noqa: E402

GiB = 2**30


def _draws(cfg: TrainConfig, gen: torch.Generator) -> Draws:
    b, f, h = cfg.data.batch_size, cfg.data.num_frames, cfg.model.resolution // 8
    return Draws(torch.randn(3, b, f, 4, h, h, generator=gen), torch.randn(b, 4, f, h, h, generator=gen),
                 torch.randint(0, noise.NUM_TRAIN_TIMESTEPS, (b,), generator=gen))


def run_row(cfg: TrainConfig, device: torch.device, dtype: torch.dtype | None, steps: int) -> dict[str, Any]:
    """Warm-up + ``steps`` optimizer steps of ``cfg`` with random networks; the row's measurements."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator().manual_seed(0)
    nets = memory.random_train_networks(cfg, device, dtype or torch.float32)
    params = [p for p in nets.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cuda and dtype == torch.float16 else None
    alphas = noise.alphas_cumprod().to(device)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def step(k: int) -> float:
        batch = memory.synthetic_unet_batch(cfg, device, gen, first_index=k)
        losses = unet_micro_step(nets, batch, cfg, alphas=alphas, device=device, autocast=autocast,
                                 draws=_draws(cfg, gen))
        loss = losses.total
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    row: dict[str, Any] = {"trainable_params": sum(p.numel() for p in params)}
    try:
        row["first_loss"] = step(0)  # warm-up: kernels, cuDNN autotuning, AdamW state
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for k in range(1, steps + 1):
            row["last_loss"] = step(k * cfg.data.batch_size)
        if cuda:
            torch.cuda.synchronize(device)
        row["step_s"] = (time.perf_counter() - start) / steps
        row["samples_per_s"] = cfg.data.batch_size / row["step_s"]
        row["status"] = "ok"
    except torch.cuda.OutOfMemoryError as exc:
        row.update(status="oom", error=str(exc).splitlines()[0])
    except Exception as exc:  # recorded in the row: the next configuration still runs
        row.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
    if cuda:
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GiB
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GiB
    return row  # the networks go with this frame: main() collects them before the next row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ["OUT"]) / "train_check.json" if os.environ.get("OUT") else Path("train_check.json")
    ap.add_argument("-o", "--output", type=Path, default=default_out)
    ap.add_argument("--presets", default="stage2,stage2_efficient,stage2_512")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", choices=["auto", "fp16", "bf16"], default="auto")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny presets (tiny, tiny-stage1), fp32, 1 step")
    args = ap.parse_args(argv)
    if args.smoke:
        device, dtype, presets, steps = torch.device("cpu"), None, ["tiny", "tiny-stage1"], 1
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: this script is for a GPU (--smoke runs it on the CPU)", file=sys.stderr)
            return 2
        device, presets, steps = torch.device("cuda", 0), args.presets.split(","), args.steps
        from lipsyncctl.training.loop import resolve_precision

        name = resolve_precision(args.dtype, device)  # auto: what train's auto resolves to (the official fp16)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
    precision = {None: "no", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    doc: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                           "torch": torch.__version__, "cuda": torch.version.cuda, "precision": precision,
                           "steps": steps, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": []}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        doc.update(free_gib=free / GiB, total_gib=total / GiB)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    failed = False
    for preset in presets:
        for ckpt in (True, False):
            cfg = resolve_train_config(preset, [f"run.grad_checkpointing={str(ckpt).lower()}"],
                                       {"run.mixed_precision": precision, "run.device": str(device)})
            est = memory.estimate_training_memory(cfg)
            row = {"preset": preset, "checkpointing": ckpt, "batch_size": cfg.data.batch_size,
                   "resolution": cfg.model.resolution, "estimate_gib": est.total_gb,
                   "estimate": est.configured.to_dict()}
            row.update(run_row(cfg, device, dtype, steps))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if "peak_allocated_gib" in row:
                row["measured_over_estimate"] = row["peak_allocated_gib"] / est.total_gb
            failed |= row["status"] != "ok"
            doc["rows"].append(row)
            args.output.write_text(json.dumps(doc, indent=1))
            short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                     if k not in ("estimate", "traceback")}
            print(json.dumps(short), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
