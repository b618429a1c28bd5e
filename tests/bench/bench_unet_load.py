"""Full-size LatentSync UNet (stage2 = v1.5/1.6): construction, checkpoint load, peak RSS, one CPU step.

On demand only (it writes a ~5 GB file and needs ~6 GB of RAM; ~11 GB with ``--naive``):

    .venv/bin/python tests/bench/bench_unet_load.py [--dtype fp32|fp16] [--naive] [--no-step] [--keep]
    .venv/bin/python -m pytest -m bench tests/bench/bench_unet_load.py -s

Steps:
1. build the UNet with random init (the usual way) and on the meta device (what the loader does);
2. save its random weights as an official-format ``{"state_dict": ...}`` ``.pt`` in ``$TMPDIR``;
3. in a fresh process: ``load_unet("stage2", file)`` (meta init + mmap + assign), with peak RSS and
   the anonymous / file-backed split from ``/proc/self/status``;
4. in the same process: one guided denoising step at 256 px (16 frames, batch [uncond, cond]);
5. with ``--naive``: a fresh process doing ``Model(); load_state_dict(torch.load(f))`` for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_CHILD_LOAD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from lipsyncctl.checkpoints.loaders import load_unet
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out
torch.set_num_threads(int(sys.argv[3]))
base = status()
t = time.perf_counter()
unet = load_unet("stage2", sys.argv[1], dtype=None)
load_s = time.perf_counter() - t
after = status()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec.
peak_load = after["VmHWM"]
res = {"import_s": t - t0, "load_s": load_s, "rss_base": base["VmRSS"], "rss_after_load": after["VmRSS"],
       "anon_after_load": after["RssAnon"], "file_after_load": after["RssFile"], "peak_rss_load": peak_load,
       "params": sum(p.numel() for p in unet.parameters()),
       "param_dtype": str(next(unet.parameters()).dtype)}
# The load itself only maps the file; reading the weights happens on first use. Touch every page once
# (from the page cache here: the file was just written) so that cost is visible too.
t = time.perf_counter()
with torch.inference_mode():
    total = sum(float(p.float().sum()) for p in unet.parameters())
res["touch_s"] = time.perf_counter() - t
if sys.argv[2] == "1":
    from lipsyncctl.checkpoints.archs import load_scheduler_config
    from lipsyncctl.pipeline.denoise import denoise, make_scheduler
    g = torch.Generator().manual_seed(0)
    dt = next(unet.parameters()).dtype
    if dt == torch.float16:  # CPU half matmuls are slow or missing: compute the step in fp32
        unet = unet.float(); dt = torch.float32
    f, h = 16, 32  # 16 frames, 256 px -> 32x32 latents
    lat = torch.randn(1, 4, f, h, h, generator=g, dtype=dt)
    mask = torch.ones(1, 1, f, h, h, dtype=dt)
    masked = torch.randn(1, 4, f, h, h, generator=g, dtype=dt)
    ref = torch.randn(1, 4, f, h, h, generator=g, dtype=dt)
    audio = torch.randn(f, 50, 384, generator=g, dtype=dt)
    sched = make_scheduler(load_scheduler_config())
    t = time.perf_counter()
    with torch.inference_mode():
        out = denoise(unet, sched, latents=lat, mask_latents=mask, masked_image_latents=masked, ref_latents=ref,
                      audio_embeds=audio, steps=1, guidance_scale=1.5)
    res["step_s"] = time.perf_counter() - t
    res["step_finite"] = bool(torch.isfinite(out).all())
    st = status()
    res["rss_after_step"] = st["VmRSS"]; res["anon_after_step"] = st["RssAnon"]; res["file_after_step"] = st["RssFile"]
    res["peak_rss_step"] = st["VmHWM"]
print("RESULT " + json.dumps(res))
"""

_CHILD_NAIVE = r"""
import json, sys, time
import torch
from lipsyncctl.checkpoints.archs import load_unet_config
from lipsyncctl.nets.unet import UNet3DConditionModel
torch.set_num_threads(int(sys.argv[2]))
t = time.perf_counter()
model = UNet3DConditionModel(load_unet_config("stage2"))
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["state_dict"]
model.load_state_dict(sd, strict=True)
del sd
hwm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmHWM:"))
res = {"naive_load_s": time.perf_counter() - t, "naive_peak_rss": hwm}
print("RESULT " + json.dumps(res))
"""


def _child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def run(dtype: str = "fp32", naive: bool = False, step: bool = True, keep: bool = False,
        threads: int | None = None) -> list[tuple[str, str]]:
    import torch

    from lipsyncctl.checkpoints.archs import load_unet_config
    from lipsyncctl.checkpoints.materialize import build_empty
    from lipsyncctl.nets.unet import UNet3DConditionModel

    threads = threads or torch.get_num_threads()
    cfg = load_unet_config("stage2")
    rows: list[tuple[str, str]] = [("config", "stage2 (LatentSync 1.5; 1.6 = stage2_512, same tensors)"),
                                   ("torch threads", str(threads))]
    t = time.perf_counter()
    build_empty(lambda: UNet3DConditionModel(cfg))
    rows.append(("construct on meta (loader path)", f"{time.perf_counter() - t:.2f} s"))
    t = time.perf_counter()
    model = UNet3DConditionModel(cfg)
    rows.append(("construct with random init (CPU)", f"{time.perf_counter() - t:.2f} s"))
    n = sum(p.numel() for p in model.parameters())
    rows.append(("parameters", f"{n:,}"))
    path = Path(tempfile.gettempdir()) / f"bench_latentsync_unet_stage2_{dtype}.pt"
    t = time.perf_counter()
    sd = model.state_dict()
    if dtype == "fp16":
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd, "global_step": 0}, path)
    del model, sd
    rows.append((f"write official-format .pt ({dtype})", f"{time.perf_counter() - t:.2f} s, {_gb(path.stat().st_size)}"))
    try:
        res = _child(_CHILD_LOAD, str(path), "1" if step else "0", str(threads))
        rows += [
            ("load_unet (meta + mmap + assign)", f"{res['load_s']:.2f} s"),
            ("RSS before load (python + torch)", _gb(res["rss_base"])),
            ("RSS after load: anon / file-backed", f"{_gb(res['anon_after_load'])} / {_gb(res['file_after_load'])}"),
            ("peak RSS during load", _gb(res["peak_rss_load"])),
            ("first read of all weights (page cache)", f"{res['touch_s']:.2f} s"),
        ]
        if step:
            rows += [
                ("1 guided DDIM step, 16 frames @256, CPU", f"{res['step_s']:.1f} s (finite: {res['step_finite']})"),
                ("RSS after step: anon / file-backed", f"{_gb(res['anon_after_step'])} / {_gb(res['file_after_step'])}"),
                ("peak RSS incl. step", _gb(res["peak_rss_step"])),
            ]
        if naive:
            nres = _child(_CHILD_NAIVE, str(path), str(threads))
            rows += [("naive Model()+torch.load+load_state_dict", f"{nres['naive_load_s']:.2f} s"),
                     ("naive peak RSS", _gb(nres["naive_peak_rss"]))]
    finally:
        if not keep:
            path.unlink(missing_ok=True)
    return rows


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{'metric'.ljust(width)}  value\n{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


@pytest.mark.bench
def test_bench_unet_load() -> None:
    dtype = os.environ.get("LIPSYNCCTL_BENCH_DTYPE", "fp32")
    rows = run(dtype=dtype, naive=os.environ.get("LIPSYNCCTL_BENCH_NAIVE") == "1")
    print_table(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of the written checkpoint")
    ap.add_argument("--naive", action="store_true", help="also time a plain torch.load + load_state_dict")
    ap.add_argument("--no-step", dest="step", action="store_false", help="skip the denoising step")
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    print_table(run(args.dtype, args.naive, args.step, args.keep, args.threads))
