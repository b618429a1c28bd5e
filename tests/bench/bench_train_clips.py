"""Host memory of the training clips in a data-loader worker: the clip table beside a tuple of clip objects.

``N`` synthetic clips with VoxCeleb2-like paths (no file is opened) make a ``UNetSamples``; each row forks a
child, as a data-loader worker is forked, which draws the clip of every sample of one epoch (``clip_of``, the
dataset's own lookup) and reports its private dirty memory (``/proc/self/smaps_rollup``: the pages it had to
copy from its parent). Baseline, in the same run: the same dataset with its clips as a tuple of ``TrainClip``
objects (how they were held before the table), whose reference counts an epoch writes page by page. Also the
parent's bytes for the clips (tracemalloc) and the time of one lookup. Nothing is asserted.

    .venv/bin/python tests/bench/bench_train_clips.py [--clips 200000]
    .venv/bin/python -m pytest -q -s -m bench tests/bench/bench_train_clips.py
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from pathlib import Path

import pytest


def _private_dirty_kib() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    return -1


def _clips(n: int) -> list:
    from lipsyncctl.training.clips import TrainClip

    return [TrainClip(f"id{k // 40:05d}-{k:07d}_000000-000120", Path(f"/data/vox2/aligned/id{k // 40:05d}/clip-{k:07d}.mp4"),
                      Path(f"/data/vox2/features/{k % 256:02x}/{k:024x}.safetensors"), 120, 240, 385, size=256)
            for k in range(n)]


def _epoch_in_child(dataset, n: int) -> tuple[int, float]:
    """Fork; the child draws every sample's clip once (a worker's epoch) and sends back its private dirty KiB
    growth and seconds per lookup."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(read)
        before = _private_dirty_kib()
        start = time.perf_counter()
        for k in range(n):
            dataset.clip_of(k)
        per = (time.perf_counter() - start) / n
        os.write(write, f"{_private_dirty_kib() - before} {per}".encode())
        os._exit(0)
    os.close(write)
    text = os.read(read, 256).decode()
    os.close(read)
    os.waitpid(pid, 0)
    kib, per = text.split()
    return int(kib), float(per)


def run(n: int) -> list[tuple[str, float, int, float]]:
    import gc

    from lipsyncctl.training.clips import ClipTable
    from lipsyncctl.training.data import UNetSamples

    dataset = UNetSamples(ClipTable(_clips(n)), seed=0)  # the sample -> clip order both rows use
    rows = []
    for name in ("table", "tuple of objects (before)"):
        gc.collect()
        tracemalloc.start()
        clips = _clips(n)
        held = ClipTable(clips) if name == "table" else tuple(clips)
        del clips
        gc.collect()
        bytes_held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        dataset.clips = held
        gc.freeze()  # the parent's other objects are not the subject
        kib, per = _epoch_in_child(dataset, n)
        gc.unfreeze()
        rows.append((name, bytes_held / n, kib, per * 1e6))
        del held
    return rows


def table(n: int, rows: list[tuple[str, float, int, float]]) -> str:
    out = [f"{n} clips, one epoch of clip lookups in a forked worker",
           f"{'clips held as':<28} {'parent B/clip':>13} {'worker copied MiB':>18} {'lookup us':>10}"]
    out += [f"{name:<28} {b:>13.0f} {kib / 1024:>18.1f} {us:>10.2f}" for name, b, kib, us in rows]
    return "\n".join(out)


@pytest.mark.bench
def test_train_clips_bench() -> None:
    print("\n" + table(200_000, run(200_000)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=200_000)
    args = parser.parse_args()
    print(table(args.clips, run(args.clips)))
