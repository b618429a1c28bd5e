"""`train` on the CPU with the tiny presets, beside a plain forward + backward of the same tiny UNet.

Each row runs in its own child process (so its peak resident memory, ``ru_maxrss``, is its own; imports
included): ``lipsyncctl.api.train`` of ``tiny`` (stage 2 with every loss term: tiny UNet, VAE, LPIPS,
StableSyncNet, VideoMAE), ``tiny-stage1`` (recon only) and ``tiny-syncnet`` on the curated folder of
``tests/train_media.py`` (5 seeded clips through the real curate job), ``--set run.max_steps=N``; and the
baseline: the ``tiny`` UNet with the stage-2 trainable rule, one AdamW step per forward + backward of a
random ``(1, 13, 16, 8, 8)`` latent batch (64 px), no loop, no data, no loss networks. Step time is the
loop's (``batch / samples_per_second``; the first step and the checkpoint at the end included), setup is
the rest of the call (networks, data, run folder). Nothing about speed is asserted.

    .venv/bin/python tests/bench/bench_train.py [--steps 4]
    .venv/bin/python -m pytest -q -s -m bench tests/bench/bench_train.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESETS = ("tiny", "tiny-stage1", "tiny-syncnet")

_TRAIN_CHILD = """
import json, resource, sys, time
from pathlib import Path
from lipsyncctl import api
job = json.loads(sys.argv[1])
cfg = api.resolve_train_config(job["preset"], [f"run.max_steps={job['steps']}", f"run.save_every={job['steps']}",
                                               "run.validate_every=0"])
t = time.perf_counter()
r = api.train(job["data"], job["out"], cfg, overwrite=True)
wall = time.perf_counter() - t
step = cfg.data.batch_size * cfg.optim.grad_accum / r.samples_per_second
print(json.dumps({"steps": r.steps, "step_s": step, "setup_s": wall - step * r.steps, "batch": cfg.data.batch_size,
                  "samples_s": r.samples_per_second, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_BASELINE_CHILD = """
import json, resource, sys, time
import torch
from lipsyncctl.checkpoints import archs
from lipsyncctl.nets.unet import UNet3DConditionModel
from lipsyncctl.training.trainable import select_trainable
steps = json.loads(sys.argv[1])["steps"]
torch.manual_seed(0)
model = UNet3DConditionModel(archs.load_unet_config("tiny")).train()
params = [p for _, p in select_trainable(model, ("motion_modules.", "attentions."))]
opt = torch.optim.AdamW(params, lr=1e-4)
x, ctx, noise = torch.randn(1, 13, 16, 8, 8), torch.randn(1, 16, 50, 384), torch.randn(1, 4, 16, 8, 8)
t = torch.tensor([500])
def step():
    loss = torch.nn.functional.mse_loss(model(x, t, ctx), noise)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
step()  # warm-up (the loop's first step is in its figure; this one is not)
start = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"steps": steps, "step_s": (time.perf_counter() - start) / steps, "setup_s": 0.0, "batch": 1,
                  "samples_s": steps / (time.perf_counter() - start),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, json.dumps(job)], cwd=REPO, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(steps: int, root: Path) -> list[tuple[str, dict[str, Any]]]:
    sys.path.insert(0, str(REPO))
    from tests.train_media import curated_folder

    data = curated_folder(root).data
    rows = [("baseline: tiny UNet fwd+bwd+AdamW", _child(_BASELINE_CHILD, {"steps": steps}))]
    for preset in PRESETS:
        rows.append((f"train {preset}", _child(_TRAIN_CHILD, {"preset": preset, "steps": steps, "data": str(data),
                                                             "out": str(root / f"run-{preset}")})))
    return rows


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    base = rows[0][1]
    lines = [f"{'config':<36}{'steps':>6}{'batch':>6}{'s/step':>9}{'x base':>8}{'samples/s':>11}{'setup s':>9}"
             f"{'peak RSS MB':>13}"]
    for name, r in rows:
        lines.append(f"{name:<36}{r['steps']:>6}{r['batch']:>6}{r['step_s']:>9.3f}{r['step_s'] / base['step_s']:>8.1f}"
                     f"{r['samples_s']:>11.3f}{r['setup_s']:>9.2f}{r['rss_mb']:>13.0f}")
    return "\n".join(lines)


@pytest.mark.bench
def test_train_bench(tmp_path: Path) -> None:
    rows = run(4, tmp_path)
    print("\n" + table(rows))
    assert all(r["steps"] == 4 and r["step_s"] > 0 for _, r in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        print(table(run(args.steps, Path(tmp))))
