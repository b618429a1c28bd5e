#!/usr/bin/env python
"""Where a UNet denoising step spends its time on a lent GPU (issue 12): one JSON.

``gpu_sync_bench.py`` found the full-size latentsync-1.5 UNet at 256 px giving about 11 frames/s in fp16 and
bf16 alike, with channels-last changing nothing and 512 px (4x the arithmetic) only 2.9x slower: the marks of
a step bound by the CPU's kernel launches rather than by the GPU. This script settles it on one UNet forward
of a guided 16-frame window (batch 2), random weights, timing each variant over ``--iters`` calls after
warm-up with CUDA events:

* ``eager``: as the renderer runs it; plus the FLOPs of one forward (``FlopCounterMode``) and the TFLOP/s
  they give, and a ``torch.profiler`` table of the top kernels with the CPU and CUDA totals;
* ``eager_cudnn_benchmark``: ``torch.backends.cudnn.benchmark = True``;
* ``batch4``: two windows in one call (batch 4): launch-bound when it costs about what batch 2 does;
* ``cuda_graph``: the same forward captured once in a CUDA graph and replayed (no launch cost at all);
* ``graphed``: the same through the project's ``inference.cuda_graphs`` (:mod:`lipsyncctl.nets.graphs`: input
  copies into the graph's buffers, the output cloned), with its largest difference from the eager output;
* ``compile`` / ``compile_reduce_overhead``: ``torch.compile`` (default mode; with CUDA graphs), last since
  their compilation may not finish in a short call.

    python3 scripts/gpu_unet_profile.py -o $OUT/unet_profile.json [--variants eager,cuda_graph,...]
    .venv/bin/python scripts/gpu_unet_profile.py --smoke     # CPU, tiny UNet: checks the script

The JSON is rewritten after every variant. Exit status 0 when every variant ran, 1 when one failed, 2 without
a GPU (and without --smoke).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsyncctl import config as cfg  # noqa: E402

VARIANTS = "eager,eager_cudnn_benchmark,batch4,cuda_graph,graphed,compile,compile_reduce_overhead"


def _timed(fn: Callable[[], Any], iters: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``iters`` calls (after the caller's warm-up)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("unet_profile.json"))
    ap.add_argument("--preset", default="latentsync-1.5")
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--variants", default=VARIANTS)
    ap.add_argument("--smoke", action="store_true", help="CPU, the tiny preset's UNet, fp32")
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU (use --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    from lipsyncctl.checkpoints.archs import load_unet_config
    from lipsyncctl.nets.unet import UNet3DConditionModel

    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    config = cfg.resolve("tiny" if args.smoke else args.preset, [])
    iters = 2 if args.smoke else args.iters
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet3DConditionModel(load_unet_config(config.model.unet_config)).to(dtype).eval()
    frames, latent = config.inference.window, config.model.resolution // 8
    result: dict[str, Any] = {"device": str(device) if args.smoke else torch.cuda.get_device_name(device),
                              "torch": torch.__version__, "preset": config.name if hasattr(config, "name")
                              else args.preset, "dtype": str(dtype), "frames": frames, "latent": latent,
                              "variants": []}

    def inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator(device).manual_seed(1)
        x = torch.randn(batch, unet.config.in_channels, frames, latent, latent, generator=gen, device=device)
        audio = torch.randn(batch * frames, 50, unet.config.cross_attention_dim, generator=gen, device=device)
        return x.to(dtype), torch.tensor(500, device=device), audio.to(dtype)

    variants = args.variants.split(",")
    if args.smoke:  # no CUDA graphs or compilation on the CPU
        variants = [v for v in variants if v in ("eager", "batch4")]
    failed = False
    for variant in variants:
        row: dict[str, Any] = {"variant": variant, "error": None}
        try:
            torch.backends.cudnn.benchmark = variant == "eager_cudnn_benchmark"
            batch = 4 if variant == "batch4" else 2
            x, t, audio = inputs(batch)
            model: Any = unet
            if variant == "graphed":
                from lipsyncctl.nets.graphs import GraphedForward

                model = GraphedForward(unet.forward)
            elif variant == "compile":
                model = torch.compile(unet)
            elif variant == "compile_reduce_overhead":
                model = torch.compile(unet, mode="reduce-overhead")
            t0 = time.perf_counter()
            with torch.inference_mode():
                if variant == "cuda_graph":
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        for _ in range(3):
                            unet(x, t, audio)
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        static_out = unet(x, t, audio)
                    eager_out = unet(x, t, audio)
                    graph.replay()
                    torch.cuda.synchronize()
                    row["graph_max_abs_diff"] = float((static_out - eager_out).abs().max())
                    call: Callable[[], Any] = graph.replay
                else:
                    call = functools.partial(model, x, t, audio)
                    if variant == "graphed":
                        row["graph_max_abs_diff"] = float((call() - unet(x, t, audio)).abs().max())
                if variant != "cuda_graph":
                    for _ in range(3):
                        call()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                row["warmup_s"] = round(time.perf_counter() - t0, 2)
                per_call = _timed(call, iters, device)
                row["ms_per_call"] = round(per_call * 1000, 2)
                row["batch"] = batch
                row["frames_per_s_20_steps"] = round(batch // 2 * frames / (per_call * 20), 2)
                if variant == "eager":
                    from torch.utils.flop_counter import FlopCounterMode

                    counter = FlopCounterMode(display=False)
                    with counter:
                        unet(x, t, audio)
                    flops = counter.get_total_flops()
                    row["tflop_per_call"] = round(flops / 1e12, 3)
                    row["tflop_per_s"] = round(flops / per_call / 1e12, 1)
                    acts = [torch.profiler.ProfilerActivity.CPU]
                    if device.type == "cuda":
                        acts.append(torch.profiler.ProfilerActivity.CUDA)
                    with torch.profiler.profile(activities=acts) as prof:
                        for _ in range(3):
                            call()
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                    events = prof.key_averages()
                    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                    row["profile"] = events.table(sort_by=sort, row_limit=25, max_name_column_width=60)
                    row["self_cpu_ms_per_call"] = round(sum(e.self_cpu_time_total for e in events) / 3000, 2)
                    if device.type == "cuda":
                        row["self_device_ms_per_call"] = round(
                            sum(getattr(e, "self_device_time_total", 0) for e in events) / 3000, 2)
                        row["kernels_per_call"] = round(sum(
                            e.count for e in events if getattr(e, "self_device_time_total", 0) > 0) / 3)
        except Exception as exc:  # recorded; the next variant runs
            failed = True
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc(limit=6)
        result["variants"].append(row)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
        print(f"{variant:24} {row.get('ms_per_call')} ms/call  {row.get('frames_per_s_20_steps')} frames/s"
              f"{'  ERROR ' + row['error'] if row['error'] else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
