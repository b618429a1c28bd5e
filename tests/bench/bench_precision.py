"""Reduced precision against fp32, with the budgets of ``lipsyncctl.runner.precision`` (issue 9, part 2).

On CUDA: fp16 and bf16 with the ``full`` setups (stage2 UNet at 256 px, 16 frames; a 20-step guided
stage2 window; sd-vae-ft-mse at 256 px; whisper tiny over 30 s), else CPU bf16 with the ``cpu`` setups.
The fp32 baseline runs in the same process (its time is the ``fp32 s`` column). Every row must stay
within its budget.

    .venv/bin/python -m pytest -m bench -s tests/bench/bench_precision.py
    LIPSYNCCTL_BENCH_PRECISION_SETUP=cpu ... (force the small setups on a GPU)
"""

from __future__ import annotations

import os

import pytest
import torch

from lipsyncctl.checks import precision as measure


def plan() -> tuple[torch.device, list[str], str]:
    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        dtypes = ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        return device, dtypes, os.environ.get("LIPSYNCCTL_BENCH_PRECISION_SETUP", "full")
    return torch.device("cpu"), ["bf16"], os.environ.get("LIPSYNCCTL_BENCH_PRECISION_SETUP", "cpu")


def table(results: list[measure.PrecisionResult]) -> str:
    head = (f"{'component':<10}{'dtype':<6}{'setup':<6}{'max_rel':>10}{'budget':>9}{'mean_rel':>11}"
            f"{'budget':>9}{'finite':>8}{'fp32 s':>9}{'s':>9}  ok")
    rows = [head]
    for r in results:
        s, b = r.stats, r.budget
        rows.append(f"{r.component:<10}{r.dtype:<6}{r.setup:<6}{s.max_rel:>10.4g}{b.max_rel:>9g}"
                    f"{s.mean_rel:>11.4g}{b.mean_rel:>9g}{s.finite!s:>8}{r.seconds_fp32:>9.2f}"
                    f"{r.seconds:>9.2f}  {'yes' if r.within else 'NO'}")
    return "\n".join(rows)


@pytest.mark.bench
def test_precision_against_fp32() -> None:
    device, dtypes, setup = plan()
    results = [r for dt in dtypes for r in measure.measure_all(dt, device, setup)]
    print(f"\nreduced precision vs fp32 on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"setup {setup}, torch {torch.__version__}")
    print(table(results))
    assert all(r.within for r in results), [r.to_dict() for r in results if not r.within]


if __name__ == "__main__":
    test_precision_against_fp32()
