"""Which samples a training step takes, and the random generator of each sample: counter-based sampling.

Every sample of a run has a **global index** ``k = 0, 1, 2, ...``; everything random about it (its clip,
its windows, its noise and timestep) is a function of ``(seed, k)`` alone, drawn from its own generator
(:func:`sample_generator`). Which indices an optimizer step takes is a function of the step alone
(:func:`batch_indices`). So the stream of samples never depends on the number of data-loader workers,
their timing, or on how a step's samples are spread over processes and micro-steps, and a resume at step
``n`` continues at the exact data position without storing one (:class:`IndexBatches`).

The official loaders draw from Python's global ``random`` inside each worker (LATENTSYNC.md §3.2, §3.4;
``golden/train`` README, "not pinned"): which windows a step gets there depends on workers and timing. The
sample *rules* are the official ones (:mod:`lipsyncctl.training.data`); only the source of the draws
differs.

Epochs: sample ``k`` belongs to epoch ``e = k // n`` (``n`` clips) and takes clip ``perm_e[k % n]``, where
``perm_e`` is a permutation drawn from a generator of ``(seed, e)``, so every clip is seen once per epoch
(the official loader draws a clip uniformly per item, with replacement).
"""

from __future__ import annotations

import hashlib
import signal
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

#: streams of the per-(seed, counter) generators: a dataset item's draws, a step's draws
#: (:data:`lipsyncctl.training.step.DRAWS_STREAM`), an epoch's permutation of the clips
ITEM_STREAM = 0
EPOCH_STREAM = 2
#: the LoRA adapters' random start (:func:`lipsyncctl.training.lora.add_lora`)
LORA_STREAM = 3

_MASK64 = (1 << 64) - 1


def stable_seed(seed: int, index: int, stream: int = ITEM_STREAM) -> int:
    """A 64-bit seed from ``(seed, index, stream)``: the first 8 bytes of their SHA-256 (the same on every
    machine, Python and torch version; neighbouring counters give unrelated seeds)."""
    for name, value in (("seed", seed), ("index", index), ("stream", stream)):
        if not 0 <= value <= _MASK64:
            raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    digest = hashlib.sha256(struct.pack("<QQQ", seed, index, stream)).digest()
    return int.from_bytes(digest[:8], "little")


def sample_generator(seed: int, index: int, *, stream: int = ITEM_STREAM) -> torch.Generator:
    """A fresh CPU generator for sample ``index`` of the run seeded ``seed`` (``stream`` separates the
    independent uses of one counter: the dataset item, the step's noise, the epoch permutation)."""
    return torch.Generator(device="cpu").manual_seed(stable_seed(seed, index, stream))


def batch_indices(step: int, micro: int, rank: int, *, batch: int, world: int, accum: int) -> range:
    """Global sample indices of optimizer step ``step``, micro-step ``micro`` (``0 .. accum - 1``), process
    ``rank`` (``0 .. world - 1``), ``batch`` samples each.

    With ``G = batch * world * accum`` samples per step: ``range(step G + (micro world + rank) batch, + batch)``.
    Step ``step`` always covers ``[step G, (step + 1) G)``; one process at batch ``2B`` takes exactly the
    union of two processes at batch ``B``, and ``accum 2 x batch 1`` the samples of ``batch 2``.
    """
    for name, value in (("batch", batch), ("world", world), ("accum", accum)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if step < 0 or not 0 <= micro < accum or not 0 <= rank < world:
        raise ValueError(f"step {step}, micro {micro} (accum {accum}), rank {rank} (world {world}): out of range")
    first = step * batch * world * accum + (micro * world + rank) * batch
    return range(first, first + batch)


def epoch_of(index: int, n_clips: int) -> int:
    """The epoch of sample ``index``: ``index // n_clips``."""
    if n_clips < 1:
        raise ValueError("no clips")
    return index // n_clips


def epoch_permutation(seed: int, epoch: int, n_clips: int) -> torch.Tensor:
    """The order of the clips in epoch ``epoch``: ``torch.randperm(n_clips)`` int64 from the generator of
    ``(seed, epoch)`` (stream :data:`EPOCH_STREAM`)."""
    return torch.randperm(n_clips, generator=sample_generator(seed, epoch, stream=EPOCH_STREAM))


class ClipOrder:
    """``clip_of(k)``: the clip position (in the sorted clip list) of sample ``k``; keeps the permutation
    of the last epoch asked for (a worker reads consecutive indices)."""

    def __init__(self, seed: int, n_clips: int) -> None:
        if n_clips < 1:
            raise ValueError("no clips")
        self.seed, self.n_clips = seed, n_clips
        self._cached: tuple[int, Any] | None = None

    def clip_of(self, index: int) -> int:
        if index < 0:
            raise ValueError(f"sample index must be >= 0, got {index}")
        epoch = epoch_of(index, self.n_clips)
        if self._cached is None or self._cached[0] != epoch:
            # an int64 array (8 bytes a clip), not a list of Python ints (about 36): a worker holds one per epoch
            self._cached = (epoch, epoch_permutation(self.seed, epoch, self.n_clips).numpy())
        return int(self._cached[1][index % self.n_clips])


def clip_of(seed: int, index: int, n_clips: int) -> int:
    """The clip position of sample ``index``: ``epoch_permutation(seed, e, n)[index % n]``, ``e = index // n``."""
    return ClipOrder(seed, n_clips).clip_of(index)


class IndexBatches:
    """The index lists of one process from step ``start_step`` on, micro-step by micro-step, forever: a
    ``batch_sampler`` for :class:`torch.utils.data.DataLoader` (a resume passes its step and continues at
    the exact data position)."""

    def __init__(self, start_step: int, rank: int, world: int, batch: int, accum: int = 1) -> None:
        batch_indices(start_step, 0, rank, batch=batch, world=world, accum=accum)  # validates the arguments
        self.start_step, self.rank, self.world, self.batch, self.accum = start_step, rank, world, batch, accum

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            for micro in range(self.accum):
                yield list(batch_indices(step, micro, self.rank, batch=self.batch, world=self.world,
                                         accum=self.accum))
            step += 1


def make_loader(dataset: Dataset[Any], *, start_step: int, rank: int, world: int, batch: int, accum: int,
                workers: int, pin_memory: bool = False) -> DataLoader[Any]:
    """An infinite :class:`~torch.utils.data.DataLoader` over ``dataset`` that yields the collated
    micro-batches (:func:`lipsyncctl.training.data.collate`) of process ``rank`` from step ``start_step``
    on, in order. ``workers`` processes (0 = in this process) give the same batches as none."""
    return DataLoader(_Reporting(dataset), batch_sampler=IndexBatches(start_step, rank, world, batch, accum),
                      num_workers=workers, collate_fn=_collate, pin_memory=pin_memory,
                      persistent_workers=workers > 0, worker_init_fn=_one_thread if workers else None)


@dataclass(frozen=True)
class ItemError:
    """A sample that could not be read (a clip's file gone or broken), handed back as the micro-batch
    instead of raised: torch's loader re-raises a worker's exception as a new one of its class whose message
    is the worker's traceback, and that loses the hint. The loop raises :meth:`error`."""

    exit_code: int
    message: str
    hint: str | None

    def error(self) -> Exception:
        from lipsyncctl.errors import error_for_code

        return error_for_code(self.exit_code, self.message, self.hint)


class _Reporting(Dataset[Any]):
    """``dataset``'s items; an item that raises a :class:`~lipsyncctl.errors.LipsyncError` is an
    :class:`ItemError`."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __getitem__(self, index: int) -> Any:
        from lipsyncctl.errors import LipsyncError

        try:
            return self.dataset[index]
        except LipsyncError as exc:
            return ItemError(exc.exit_code, str(exc), exc.hint)


def _collate(items: Sequence[Any]) -> Any:
    """:func:`lipsyncctl.training.data.collate`, or the first :class:`ItemError` among ``items``."""
    from lipsyncctl.training.data import collate

    failed = next((item for item in items if isinstance(item, ItemError)), None)
    return failed if failed is not None else collate(items)


def _one_thread(worker_id: int) -> None:
    """Worker processes decode and resize with one intra-op thread each (no oversubscription); SIGTERM ends a
    worker as Ctrl-C does (torch's worker loop leaves quietly on KeyboardInterrupt): a scheduler's or `timeout`'s
    SIGTERM to the whole process group killed the workers first, and the run ended as a worker killed from outside
    (exit 1, blaming memory) instead of interrupted (130)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM (a worker stuck in C code) ends it at once
    raise KeyboardInterrupt
