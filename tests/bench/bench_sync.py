"""Sync pipeline benchmark on CPU with the tiny preset: frames/s per stage at 256 and 512, peak RSS vs length.

On demand only:

    .venv/bin/python tests/bench/bench_sync.py [--seconds 10 60] [--resolutions 256 512] [--steps 2]
    .venv/bin/python -m pytest -m bench tests/bench/bench_sync.py -s

Each run is a fresh process (so ``ru_maxrss`` is that run's peak) syncing a generated clip of real face
frames (the bundled sample, looped, 404x720, 25 fps) to a tone of the same length. Peak RSS for a 10 s
and a 60 s clip should be about equal: the pipeline streams (nothing scales with the clip but one face
record per frame and the whisper features).
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

_CHILD = r"""
import json, resource, sys, time
from fractions import Fraction
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.sync_media import sample_frames, write_clip, write_wav
from lipsyncctl import config as cfg
from lipsyncctl.pipeline.clip import sync_clip
tmp = Path({tmp!r}); seconds = {seconds}; res = {res}
base = sample_frames(50, scale=0.75)
n = int(seconds * 25)
frames = (base[i % 100 if i % 100 < 50 else 99 - i % 100] for i in range(n))  # streamed, ping-pong
video = write_clip(tmp / "v.mkv", frames, Fraction(25), codec="libx264")
audio = write_wav(tmp / "a.wav", seconds)
config = cfg.resolve("tiny", ["model.resolution=%d" % res, "inference.steps={steps}", "faces.detect_every=5"])
t0 = time.perf_counter()
r = sync_clip(video, audio, tmp / "o.mp4", config)
wall = time.perf_counter() - t0
print(json.dumps({{"frames": r.frames, "wall": wall, "stages": r.stage_seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run_one(seconds: float, res: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LIPSYNCCTL_MODELS=str(Path(tmp) / "models"))
        code = _CHILD.format(repo=str(REPO), tmp=tmp, seconds=seconds, res=res, steps=steps)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[tuple[float, int, dict]]) -> str:
    stages = ["faces", "align", "vae encode", "denoise", "vae decode", "paste", "encode"]
    head = f"{'clip':>6} {'res':>4} {'frames':>6} " + " ".join(f"{s[:10]:>10}" for s in stages) + \
        f" {'total':>8} {'peak MB':>8}"
    lines = [head, "frames/s per stage:"]
    for seconds, res, r in results:
        fps = [r["frames"] / r["stages"][s] if r["stages"].get(s) else float("nan") for s in stages]
        lines.append(f"{seconds:>5}s {res:>4} {r['frames']:>6} " + " ".join(f"{v:>10.1f}" for v in fps)
                     + f" {r['frames'] / r['wall']:>8.2f} {r['peak_rss_mb']:>8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args(argv)
    results = []
    for res in args.resolutions:
        for seconds in args.seconds if res == args.resolutions[0] else args.seconds[:1]:
            results.append((seconds, res, run_one(seconds, res, args.steps)))
    text = table(results)
    print(text)
    return text


@pytest.mark.bench
def test_bench_sync() -> None:
    main(["--seconds", os.environ.get("LIPSYNCCTL_BENCH_SECONDS", "10 60").split()[0],
          *os.environ.get("LIPSYNCCTL_BENCH_SECONDS", "10 60").split()[1:]])


if __name__ == "__main__":
    main()
