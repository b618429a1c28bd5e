"""Reduced precision: which dtype a run uses and why, the error metric, and the error budgets.

This module is the one place the budgets live: the tests (``tests/unit/test_precision_budgets.py``), the
benchmark (``tests/bench/bench_precision.py``), the GPU script (``scripts/gpu_precision_check.py``),
``doctor`` and the README all read :data:`BUDGETS` / :data:`MEASURED` from here. The measurements
themselves are :mod:`lipsyncctl.checks.precision`.

Metric (:func:`compare`), for an output ``y`` of a reduced-precision run and ``r`` of the same fp32 run
(same seeded random weights and inputs), both relative to the spread of the reference:

* ``max_rel  = max |y - r| / std(r)``  (the worst element)
* ``mean_rel = mean |y - r| / std(r)`` (the typical element)

torch is imported inside the functions, so importing this module stays cheap (doctor reads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: The largest finite float16 value; an activation beyond it becomes inf in fp16.
FP16_MAX = 65504.0
#: Budgets are the CPU bf16 measurements times this margin (rounded up to two significant digits).
MARGIN = 2.0

COMPONENTS = ("unet", "window", "vae", "whisper")


@dataclass(frozen=True)
class ErrorStats:
    """Error of a reduced-precision output against its fp32 reference (see the module docstring)."""

    max_rel: float
    mean_rel: float
    finite: bool  # no NaN/Inf in the reduced-precision output
    ref_std: float
    absmax: float  # max |y| of the reduced-precision output

    def within(self, budget: Budget) -> bool:
        return self.finite and self.max_rel <= budget.max_rel and self.mean_rel <= budget.mean_rel


@dataclass(frozen=True)
class Budget:
    """Largest accepted :class:`ErrorStats` (``max_rel``, ``mean_rel``) of one component in one dtype."""

    max_rel: float
    mean_rel: float


#: Measured on the CPU (torch 2.13, 2-core AMD EPYC without native bf16) against fp32 with the ``cpu``
#: setups of :mod:`lipsyncctl.checks.precision` (seed 0): ``(max_rel, mean_rel)``. fp16 was measured with
#: torch's CPU half kernels (a run refuses fp16 on the CPU for speed, not numerics); a GPU run
#: (``scripts/gpu_precision_check.py``) checks that CUDA fp16/bf16 stay within the same budgets.
MEASURED: dict[tuple[str, str], tuple[float, float]] = {
    ("bf16", "unet"): (0.205, 0.0348),
    ("bf16", "window"): (0.0686, 0.0105),
    ("bf16", "vae"): (0.0970, 0.0123),
    ("bf16", "whisper"): (0.0633, 0.00443),
    ("fp16", "unet"): (0.0316, 0.00441),
    ("fp16", "window"): (0.0126, 0.00156),
    ("fp16", "vae"): (0.0221, 0.00161),
    ("fp16", "whisper"): (0.00654, 0.000466),
}


def _round_up(x: float) -> float:
    """``x`` rounded up to two significant digits (0.0696 -> 0.07, 0.41 -> 0.41)."""
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - 1)
    return round(math.ceil(round(x / scale, 6)) * scale, 12)


#: The budgets: :data:`MEASURED` x :data:`MARGIN`, rounded up to two significant digits.
BUDGETS: dict[tuple[str, str], Budget] = {
    key: Budget(max_rel=_round_up(mx * MARGIN), mean_rel=_round_up(mean * MARGIN))
    for key, (mx, mean) in MEASURED.items()
}


def budget_table() -> str:
    """The README's budget table (Markdown), generated from :data:`MEASURED` and :data:`BUDGETS`."""
    lines = ["| dtype | component | measured max / mean | budget max / mean |", "|---|---|---|---|"]
    for (dtype, component), (mx, mean) in MEASURED.items():
        b = BUDGETS[(dtype, component)]
        lines.append(f"| {dtype} | {component} | {mx:.3g} / {mean:.3g} | {b.max_rel:g} / {b.mean_rel:g} |")
    return "\n".join(lines)


def budget(dtype: str, component: str) -> Budget:
    """The budget of ``component`` (:data:`COMPONENTS`) in ``dtype`` (``bf16`` | ``fp16``)."""
    try:
        return BUDGETS[(dtype, component)]
    except KeyError:
        raise KeyError(f"no precision budget for {dtype}/{component}: dtypes bf16, fp16; "
                       f"components {', '.join(COMPONENTS)}") from None


def compare(out: torch.Tensor, ref: torch.Tensor) -> ErrorStats:
    """:class:`ErrorStats` of ``out`` (any dtype/device) against the fp32 reference ``ref``."""
    import torch

    y = out.detach().to("cpu", torch.float64)
    r = ref.detach().to("cpu", torch.float64)
    if y.shape != r.shape:
        raise ValueError(f"shapes differ: {tuple(y.shape)} vs reference {tuple(r.shape)}")
    finite = bool(torch.isfinite(y).all())
    std = float(r.std())
    err = (y - r).abs()
    return ErrorStats(
        max_rel=float(err.max()) / std if finite else float("inf"),
        mean_rel=float(err.mean()) / std if finite else float("inf"),
        finite=finite,
        ref_std=std,
        absmax=float(y.abs().max()) if finite else float("inf"),
    )


# --------------------------------------------------------------------------------------------------
# Which dtype a run uses, and why (doctor and the README say it per preset)

#: Why each ``inference.dtype`` setting resolves the way it does (doctor and the README show it).
DTYPE_REASONS: dict[str, str] = {
    "auto": "auto: fp16 on CUDA GPUs with compute capability >= 8 (the official rule), fp32 elsewhere",
    "fp32": "fp32 set: the reference numerics, on every device",
    "fp16": "fp16 set: half the activation memory on CUDA (refused on the CPU)",
    "bf16": "bf16 set: fp32's range at 8 bits of precision (slow on CPUs without native bf16)",
}


def resolved_dtype(setting: str, device_type: str, capability: tuple[int, int] | None = None) -> str | None:
    """The dtype (``fp32`` | ``fp16`` | ``bf16``) ``inference.dtype = setting`` gives on a device, or
    None where it is refused (fp16 on the CPU). Mirrors :func:`lipsyncctl.runner.devices.resolve_dtype`
    without torch; ``capability`` is the CUDA compute capability (``(8, 0)`` ...)."""
    if setting == "auto":
        return "fp16" if device_type == "cuda" and capability is not None and capability[0] > 7 else "fp32"
    if setting == "fp16" and device_type == "cpu":
        return None
    return setting
