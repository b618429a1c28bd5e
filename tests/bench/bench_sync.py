"""Sync pipeline benchmark on CPU: frames/s per stage (tiny model, 256 and 512), peak RSS for a 10 s and
a 60 s clip (streaming: about equal), and the full-size UNet time per 16-frame window.

On demand only::

    .venv/bin/python tests/bench/bench_sync.py [--seconds 10 60] [--resolutions 256 512] [--steps 2]
                                               [--unet stage2] [--unet-latent 32] [--no-unet]
    .venv/bin/python -m pytest -m bench tests/bench/bench_sync.py -s

Every sync runs in a fresh process (so ``ru_maxrss`` is that run's peak; the clip is generated in
another process beforehand): a clip of real face frames (the bundled sample, ping-ponged, 404x720,
25 fps, H.264) synced to a tone of the same length with the ``tiny`` preset (random tiny networks:
the real pipeline, tiny UNet/VAE). ``--steps`` sets the DDIM steps (default 2, the tiny preset's).

The full-size UNet row builds ``models/configs/unet/<--unet>.yaml`` with random weights and times one
guided step on one window (batch 2 = [uncond, cond] x 16 frames) with and without DeepCache-style
feature reuse (:mod:`tests.bench.bench_unet_step`); a window is ``steps`` such steps (20 official),
with DeepCache a full pass every 3rd step and partial passes in between.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ["decode", "faces", "align", "vae encode", "denoise", "vae decode", "paste", "encode"]

_MAKE_CLIP = r"""
import sys
from fractions import Fraction
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.sync_media import sample_frames, write_clip, write_wav
tmp = Path({tmp!r}); n = int({seconds} * 25)
base = sample_frames(50, scale=0.75)
frames = (base[i % 100 if i % 100 < 50 else 99 - i % 100] for i in range(n))  # streamed, ping-pong
write_clip(tmp / "v.mp4", frames, Fraction(25), codec="libx264")
write_wav(tmp / "a.wav", {seconds})
"""

_SYNC = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from lipsyncctl import config as cfg
from lipsyncctl.pipeline.clip import sync_clip
tmp = Path({tmp!r})
config = cfg.resolve("tiny", ["model.resolution={res}", "inference.steps={steps}", "faces.detect_every=5"])
t0 = time.perf_counter()
r = sync_clip(tmp / "v.mp4", tmp / "a.wav", tmp / "o.mp4", config)
wall = time.perf_counter() - t0
print(json.dumps({{"frames": r.frames, "wall": wall, "stages": r.stage_seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

_UNET = r"""
import json, sys, torch
sys.path.insert(0, {repo!r})
from tests.bench.bench_unet_step import _measure
name, params, full, partial = _measure({name!r}, torch.device("cpu"), torch.float32, {latent},
                                       torch.Generator().manual_seed(0))
print(json.dumps({{"params": params, "full": full, "partial": partial}}))
"""


def _python(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def run_sync(seconds: float, res: int, steps: int) -> dict:
    """Generate a clip of ``seconds`` and sync it in a fresh process; that process's stage times and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LIPSYNCCTL_MODELS=str(Path(tmp) / "models"))
        _python(_MAKE_CLIP.format(repo=str(REPO), tmp=tmp, seconds=seconds))
        return json.loads(_python(_SYNC.format(repo=str(REPO), tmp=tmp, res=res, steps=steps), env))


def run_unet(name: str, latent: int) -> dict:
    return json.loads(_python(_UNET.format(repo=str(REPO), name=name, latent=latent)))


def stage_table(rows: list[tuple[float, int, dict]], steps: int) -> str:
    head = f"{'clip':>6} {'res':>4} {'frames':>6} " + " ".join(f"{s[:10]:>10}" for s in STAGES) + f" {'total':>7}"
    lines = [f"frames/s per stage (tiny model, CPU, {steps} DDIM steps; total = frames / wall incl. model load)",
             head]
    for seconds, res, r in rows:
        fps = [r["frames"] / r["stages"][s] if r["stages"].get(s) else float("nan") for s in STAGES]
        lines.append(f"{seconds:>5g}s {res:>4} {r['frames']:>6} " + " ".join(f"{v:>10.1f}" for v in fps)
                     + f" {r['frames'] / r['wall']:>7.2f}")
    return "\n".join(lines)


def rss_table(rows: list[tuple[float, int, dict]]) -> str:
    lines = ["peak RSS vs clip length (one process per run)",
             f"{'clip':>6} {'res':>4} {'frames':>6} {'wall s':>8} {'peak MB':>8}"]
    for seconds, res, r in rows:
        lines.append(f"{seconds:>5g}s {res:>4} {r['frames']:>6} {r['wall']:>8.1f} {r['peak_rss_mb']:>8.0f}")
    if len(rows) >= 2:
        lines.append(f"ratio longest/shortest: {rows[-1][2]['peak_rss_mb'] / rows[0][2]['peak_rss_mb']:.2f}")
    return "\n".join(lines)


def unet_table(name: str, latent: int, r: dict, steps: int = 20, cache_interval: int = 3) -> str:
    full_steps = -(-steps // cache_interval)
    cached = full_steps * r["full"] + (steps - full_steps) * r["partial"]
    return "\n".join([
        f"full-size UNet ({name}, random weights), one 16-frame window, guided (batch 2), latent {latent}x{latent}"
        f" ({latent * 8} px), CPU fp32",
        f"{'params':>14} {'step s':>8} {'partial s':>10} {f'window ({steps} steps) s':>22} "
        f"{f'DeepCache/{cache_interval} s':>14}",
        f"{r['params']:>14,} {r['full']:>8.2f} {r['partial']:>10.2f} {steps * r['full']:>22.1f} {cached:>14.1f}",
    ])


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="clip lengths for the RSS table")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--unet", default="stage2", help="UNet config for the full-size row")
    ap.add_argument("--unet-latent", type=int, default=32, help="latent side (32 = 256 px, 64 = 512 px)")
    ap.add_argument("--no-unet", action="store_true")
    args = ap.parse_args(argv)
    short = min(args.seconds)
    runs: dict[tuple[float, int], dict] = {}
    for res in args.resolutions:
        runs[(short, res)] = run_sync(short, res, args.steps)
    for seconds in sorted(args.seconds):
        if (seconds, args.resolutions[0]) not in runs:
            runs[(seconds, args.resolutions[0])] = run_sync(seconds, args.resolutions[0], args.steps)
    parts = [
        stage_table([(short, res, runs[(short, res)]) for res in args.resolutions], args.steps),
        rss_table([(s, args.resolutions[0], runs[(s, args.resolutions[0])]) for s in sorted(args.seconds)]),
    ]
    if not args.no_unet:
        parts.append(unet_table(args.unet, args.unet_latent, run_unet(args.unet, args.unet_latent)))
    text = "\n\n".join(parts)
    print(text)
    return text


@pytest.mark.bench
def test_bench_sync() -> None:
    seconds = os.environ.get("LIPSYNCCTL_BENCH_SECONDS", "10 60").split()
    text = main(["--seconds", *seconds])
    assert "peak RSS" in text


if __name__ == "__main__":
    main()
