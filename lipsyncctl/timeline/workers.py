"""Where segment renders run: this process, local worker processes (one per GPU), or Ray.

- ``jobs=1`` and no GPUs listed: in this process, the networks loaded once and reused.
- ``jobs=N`` / ``gpus=["0", "1"]``: N spawned worker processes (one per listed GPU, each pinned to its
  device); each loads the networks once.
- ``backend="ray"``: one Ray task per segment (``ray.init()`` joins ``RAY_ADDRESS`` if set, else starts
  a local instance); paths must be visible to every node (shared storage).

Sharding (``--shard i/n``) happens before this: each array job gets its part of the task list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lipsyncctl import progress
from lipsyncctl.errors import MissingToolError, UsageError
from lipsyncctl.timeline.render import RenderTask, render_segment

Done = Callable[[RenderTask, dict[str, Any]], None]

#: array-job variables: (index, count, first index) - the first pair found wins
SHARD_ENV: tuple[tuple[str, str, str | None], ...] = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
    ("LIPSYNCCTL_SHARD_INDEX", "LIPSYNCCTL_SHARD_COUNT", None),
    ("JOB_COMPLETION_INDEX", "LIPSYNCCTL_SHARD_COUNT", None),  # Kubernetes indexed jobs
    ("SGE_TASK_ID", "SGE_TASK_LAST", "SGE_TASK_FIRST"),
)


def parse_shard(value: str | None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)`` (0-based index); ``"auto"`` reads the array-job variables
    (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``, ...); None -> ``(0, 1)``."""
    if value is None:
        return 0, 1
    env = os.environ if environ is None else environ
    if value == "auto":
        for idx_var, count_var, min_var in SHARD_ENV:
            if idx_var in env and count_var in env:
                first = int(env[min_var]) if min_var and min_var in env else 0
                count = int(env[count_var])
                if idx_var == "SGE_TASK_ID":  # SGE gives the last index, not the count
                    count = count - first + 1
                return _check_shard(int(env[idx_var]) - first, count, value)
        raise UsageError("--shard auto: no array-job variables found",
                         hint="set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, or give --shard I/N")
    i, sep, n = value.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise UsageError(f"--shard {value!r}: expected I/N, e.g. --shard 0/4 (I from 0 to N-1), or auto")
    return _check_shard(int(i), int(n), value)


def _check_shard(i: int, n: int, value: str) -> tuple[int, int]:
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {value!r}: index {i} out of range for {n} shard(s) (0..{n - 1})")
    return i, n


def parse_gpus(value: str | None) -> list[str]:
    """``"0,1"`` -> ``["cuda:0", "cuda:1"]``."""
    if not value:
        return []
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UsageError(f"--gpus {value!r}: expected GPU indices like 0,1")
        out.append(f"cuda:{part}")
    return out


def run_tasks(tasks: Sequence[RenderTask], on_done: Done, *, jobs: int = 1, gpus: Sequence[str] = (),
              backend: str = "local") -> None:
    """Run every task, calling ``on_done(task, outcome)`` in this process as each one finishes."""
    if not tasks:
        return
    with progress.Task("segments", total=len(tasks)) as bar:
        def done(task: RenderTask, outcome: dict[str, Any]) -> None:
            on_done(task, outcome)
            bar.advance(1)

        if backend == "ray":
            _run_ray(tasks, done, gpus)
        elif backend != "local":
            raise UsageError(f"--backend {backend!r}: expected local or ray")
        elif jobs <= 1 and len(gpus) <= 1:
            _run_here(tasks, done, gpus[0] if gpus else None)
        else:
            _run_pool(tasks, done, max(jobs, len(gpus)), gpus)


def _model_key(config: dict[str, Any], device: str | None) -> str:
    inf = config["inference"]
    return json.dumps([config["model"], device or inf["device"], inf["dtype"]], sort_keys=True)


def _render_cached(task: RenderTask, cache: dict[str, Any], device: str | None) -> dict[str, Any]:
    """Render with the networks of ``cache`` (loaded on first use for this model set and device)."""
    from lipsyncctl import config as cfg
    from lipsyncctl.errors import LipsyncError
    from lipsyncctl.pipeline.models import load_models

    key = _model_key(task.config, device)
    if key not in cache:
        conf = task.config if device is None else {**task.config,
                                                   "inference": {**task.config["inference"], "device": device}}
        try:
            cache[key] = load_models(cfg.validate(conf))
        except LipsyncError as exc:
            return {"key": task.key, "segment": task.segment_id, "language": task.language, "status": "failed",
                    "output": None, "error": f"{type(exc).__name__}: {exc}", "warnings": [], "seconds": 0.0}
    return render_segment(task, models=cache[key], device=device)


def _run_here(tasks: Sequence[RenderTask], done: Done, device: str | None) -> None:
    cache: dict[str, Any] = {}
    for task in tasks:
        done(task, _render_cached(task, cache, device))


# ---- local worker processes -------------------------------------------------------------------

_worker: dict[str, Any] = {"device": None, "models": {}}


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _init_worker(devices: Any) -> None:
    """Each spawned worker takes one device from the queue (None = the task's own setting).

    SIGTERM (``timeout``, ``kill`` of the process group, a scheduler's time limit) interrupts a worker
    like Ctrl-C does, so the render it is writing removes its temporary folder instead of leaving it."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    _worker["device"] = devices.get() if devices is not None else None


def _work(task: RenderTask) -> dict[str, Any]:
    return _render_cached(task, _worker["models"], _worker["device"])


def _run_pool(tasks: Sequence[RenderTask], done: Done, workers: int, gpus: Sequence[str]) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA or OpenMP state
    devices = None
    if gpus:
        devices = ctx.Manager().Queue()
        for i in range(workers):
            devices.put(gpus[i % len(gpus)])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(devices,))
    try:
        pending = {pool.submit(_work, t): t for t in tasks}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                done(pending.pop(fut), fut.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# ---- Ray -------------------------------------------------------------------------------------

def _ray_render(task_dict: dict[str, Any], use_gpu: bool) -> dict[str, Any]:
    task = RenderTask(**task_dict)
    cache = _worker["models"]
    return _render_cached(task, cache, "cuda" if use_gpu else None)


def _run_ray(tasks: Sequence[RenderTask], done: Done, gpus: Sequence[str]) -> None:
    try:
        import ray
    except ImportError:
        raise MissingToolError("--backend ray: Ray is not installed",
                               hint="pip install 'lipsyncctl[ray]' (or ray>=2.40)") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    remote = ray.remote(num_gpus=1 if gpus else 0, max_retries=0)(_ray_render)
    refs = {remote.remote(t.to_dict(), bool(gpus)): t for t in tasks}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                done(refs.pop(ref), ray.get(ref))
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
