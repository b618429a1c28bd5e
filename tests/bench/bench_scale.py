"""How the data path scales with the number of items: the worker pool's overhead a task and curate's views of a
dataset, at two sizes each (the slope is the point: a per-item cost that grows with the number of items, or memory
that does, shows as a change between the rows).

- ``run_tasks`` with two worker processes on tasks that do nothing: milliseconds a task at 2k and 16k tasks.
  Baseline, same run: the same tasks in this process. (Before the pool got a window of tasks at a time, every
  task was submitted at once and each wait walked them all: 1.1 ms a task at 4k, 2.2 at 16k, 3.0 at 32k.)
- ``curate report`` (every record decided, the six views written) of synthetic records, 2 spans a source, at 2k
  and 20k sources: seconds, and the traced peak in bytes a span. Baseline, same run: reading and parsing every
  record file, nothing decided or written (the floor of a rebuild). (Before the views were streamed, every span
  was held as an object: ~1.2-1.6 KB a span; before the sources' outcomes were spooled, ~390 B a span.)

Nothing is asserted.

    .venv/bin/python tests/bench/bench_scale.py [--tasks 2000 16000] [--sources 2000 20000]
    .venv/bin/python -m pytest -q -s -m bench tests/bench/bench_scale.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest


def _nothing(task: int, cache: dict, device: str | None) -> int:
    return task


def pool_rows(sizes: list[int]) -> list[tuple[str, int, float]]:
    from lipsyncctl.runner.workers import run_tasks

    rows = []
    for n in sizes:
        for name, jobs in (("in this process (baseline)", 1), ("2 worker processes", 2)):
            out: list[int] = []
            start = time.perf_counter()
            run_tasks(list(range(n)), _nothing, lambda t, o, out=out: out.append(o), jobs=jobs)
            rows.append((name, n, (time.perf_counter() - start) / n * 1000))
    return rows


def _dataset(root: Path, sources: int, spans: int = 2) -> Path:
    """``sources`` synthetic source records of ``spans`` 5 s spans each, every source stage measured, clip records
    without clip stages (their spans kept so far, pending): the records a rebuild reads, written directly."""
    from lipsyncctl.curation.decide import clip_id
    from lipsyncctl.curation.records import RecordStore

    data = root / f"data-{sources}"
    store = RecordStore.of(data)
    frames = 125 * spans
    for i in range(sources):
        sid = f"id{i // 40:05d}_{i:07d}-{i:08x}"
        pieces = [[k * 125, (k + 1) * 125, 0, frames] for k in range(spans)]
        store.save("sources", sid, {
            "id": sid, "path": f"/data/vox2/id{i // 40:05d}/v{i % 40:02d}/{i:05d}.mp4", "fingerprint": "x",
            "stages": {"probe": {"key": "k", "data": {"duration": frames / 25, "grid_frames": frames}},
                       "normalize": {"key": "k", "data": {"audio_frames": frames, "audio_samples": frames * 640}},
                       "shots": {"key": "k", "data": {"cuts": []}},
                       "segments": {"key": "k", "data": {"pieces": pieces}}}})
        for a, b, *_ in pieces:
            cid = clip_id(sid, a, b)
            store.save(f"clips/{sid}", cid, {"id": cid, "source": sid, "first": a, "stop": b, "stages": {}})
    return data


def views_rows(sizes: list[int], root: Path) -> list[tuple[str, int, float, float]]:
    from lipsyncctl import config as cfg
    from lipsyncctl.curation import outcome
    from lipsyncctl.curation.job import report_curation

    outcome.SPOOL_MEMORY = 1  # the outcomes' spool on disk from the first (its first MiB in memory is bounded)
    rows = []
    datasets = {n: _dataset(root, n) for n in sizes}
    # imports, first-call caches and tables that only grow (Python 3.11's pathlib interns path parts: the
    # interpreter's table of interned strings doubles at a size that depends on the process's past) at their size
    # before the measure
    report_curation(datasets[max(sizes)], cfg.resolve("tiny"))
    for n in sizes:
        data = datasets[n]
        files = sorted(str(p) for p in (data / ".lipsyncctl" / "records").rglob("*.json"))
        for name in ("read every record (baseline)", "curate report"):
            tracemalloc.start()
            start = time.perf_counter()
            if name.startswith("read"):
                for name_ in files:
                    with open(name_, encoding="utf-8") as f:
                        json.load(f)
            else:
                report_curation(data, cfg.resolve("tiny"))
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append((name, n, seconds, peak / (2 * n)))
    return rows


def table(pool: list[tuple[str, int, float]], views: list[tuple[str, int, float, float]]) -> str:
    """The rows, and per kind the slope between its smallest and largest size: what one more task or span costs
    (a constant slope: no growth with the number of items)."""
    out = [f"{'worker pool, tasks doing nothing':<34} {'tasks':>7} {'ms a task':>10}"]
    out += [f"{name:<34} {n:>7} {ms:>10.3f}" for name, n, ms in pool]
    for name in dict.fromkeys(r[0] for r in pool):
        (_, n1, a), *_, (_, n2, b) = [r for r in pool if r[0] == name]
        out.append(f"{'  ' + name + ', one more task':<42} {(b * n2 - a * n1) / (n2 - n1):>10.3f}")
    out += ["", f"{'views of a dataset, 2 spans a source':<34} {'sources':>7} {'seconds':>10} {'peak B/span':>12}"]
    out += [f"{name:<34} {n:>7} {s:>10.2f} {b:>12.0f}" for name, n, s, b in views]
    for name in dict.fromkeys(r[0] for r in views):
        (_, n1, s1, b1), *_, (_, n2, s2, b2) = [r for r in views if r[0] == name]
        spans = 2 * (n2 - n1)
        out.append(f"{'  ' + name + ', one more span':<42} {(s2 - s1) / spans * 1e6:>7.0f} us "
                   f"{(b2 * 2 * n2 - b1 * 2 * n1) / spans:>12.0f}")
    return "\n".join(out)


def run(tasks: list[int], sources: list[int]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return table(pool_rows(tasks), views_rows(sources, Path(tmp)))


@pytest.mark.bench
def test_scale_bench() -> None:
    print("\n" + run([2000, 16000], [2000, 20000]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[2000, 16000])
    parser.add_argument("--sources", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    print(run(args.tasks, args.sources))
