"""Which part of the work this process takes: ``--shard I/N`` or ``auto`` from an array job's variables
(SLURM, SGE, Kubernetes indexed jobs). Item ``k`` of a job's ordered task list belongs to shard ``k % N``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

from lipsyncctl.errors import UsageError

T = TypeVar("T")

#: array-job variables: (index, count, first index, step) - the first set whose index and count are numbers
#: wins (SGE sets ``SGE_TASK_ID=undefined`` outside an array job)
SHARD_ENV: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"),
    ("LIPSYNCCTL_SHARD_INDEX", "LIPSYNCCTL_SHARD_COUNT", None, None),
    ("JOB_COMPLETION_INDEX", "LIPSYNCCTL_SHARD_COUNT", None, None),  # Kubernetes indexed jobs
    ("SGE_TASK_ID", "SGE_TASK_LAST", "SGE_TASK_FIRST", "SGE_TASK_STEPSIZE"),
)


def parse_shard(value: str | None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)`` (0-based index); ``"auto"`` reads the array-job variables
    (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``, ...; a stepped array such as SLURM's ``--array=0-8:2``
    or SGE's ``-t 1-9:4`` counts its tasks, so every shard runs once); None -> ``(0, 1)``."""
    if value is None:
        return 0, 1
    env = os.environ if environ is None else environ
    if value == "auto":
        for idx_var, count_var, min_var, step_var in SHARD_ENV:
            task, count = _number(env, idx_var), _number(env, count_var)
            if task is None or count is None:
                continue
            first = _number(env, min_var) if min_var else None
            if first is None:  # (SGE's tasks count from 1 where SGE_TASK_FIRST is not given: `-t 1-N`)
                first = 1 if idx_var == "SGE_TASK_ID" else 0
            step = (_number(env, step_var) if step_var else None) or 1
            if idx_var == "SGE_TASK_ID":  # SGE gives the last index, not the count
                count = (count - first) // step + 1
            if (task - first) % step:
                raise UsageError(f"--shard auto: task {task} is not on the array's step ({first}, step {step})",
                                 hint="give --shard I/N for an array of listed indices")
            return _check_shard((task - first) // step, count, value)
        half = next((f"{a} is set but {b} is not a number ({env[b]!r})" if env.get(b, "").strip() else
                     f"{a} is set but not {b}"
                     for idx_var, count_var, _, _ in SHARD_ENV
                     for a, b in ((idx_var, count_var), (count_var, idx_var))
                     if _number(env, a) is not None and _number(env, b) is None), None)
        raise UsageError(f"--shard auto: {half or 'no array-job variables found'}",
                         hint="set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, or give --shard I/N")
    i, sep, n = value.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise UsageError(f"--shard {value!r}: expected I/N, e.g. --shard 0/4 (I from 0 to N-1), or auto")
    return _check_shard(int(i), int(n), value)


def _number(env: Mapping[str, str], name: str | None) -> int | None:
    """The integer value of ``env[name]``; None when unset or not a number (SGE's ``undefined``)."""
    text = env.get(name, "") if name else ""
    return int(text) if text.strip().lstrip("-").isdigit() else None


def _check_shard(i: int, n: int, value: str) -> tuple[int, int]:
    if n < 1:
        raise UsageError(f"--shard {value!r}: the number of shards must be at least 1",
                         hint="--shard I/N takes part I of N (I from 0 to N-1)")
    if not 0 <= i < n:
        raise UsageError(f"--shard {value!r}: index {i} out of range for {n} shard(s) (0..{n - 1})")
    return i, n


def take_shard(items: Sequence[T], shard: tuple[int, int]) -> list[T]:
    """The items of ``shard`` ``(i, n)``: every ``n``-th item starting at ``i`` (stable across runs for
    the same ordered list)."""
    i, n = shard
    return [item for k, item in enumerate(items) if k % n == i]
