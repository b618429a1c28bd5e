"""Stages of a per-item job run concurrently, order kept: a thread per stage, bounded queues between them.

``run_stages(items, [a, b, c], main=1)`` is ``for x in items: c(b(a(x)))``, with ``items`` produced in one
thread, ``b`` in the calling thread and ``a`` and ``c`` in threads of their own; at most ``queue_size`` items
wait between two stages, so memory stays flat whatever the number of items. Every stage sees the items in
order and holds its own state, so the result is the serial one (the stages must not share mutable state
with each other). Used by the sync renderer (decode+align | networks | paste | encode) and by curate's align
stage (decode | faces | warp | encode).

The ``main`` stage stays in the calling thread: Python delivers Ctrl-C (and the CLI's SIGTERM) there, and a
stage holding networks and a generator keeps them in one thread. The first error of any stage, or an
interrupt, stops the others at their next item or queue wait; every thread is joined before the call returns
or raises (the caller may then close or remove what the last stage wrote). The threads run in a copy of the
caller's context (progress sink) with its torch thread count (the same numerics as in the calling thread),
or with the count the caller names.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

#: items waiting between two stages (1: a stage works on the next item while the one after it is busy)
QUEUE_SIZE = 1
#: seconds a stage waits on a queue before it looks whether another stage stopped
_POLL_S = 0.05


class _Stopped(Exception):
    """Another stage stopped (an error or an interrupt): leave quietly."""


_END = object()  # after the last item


def prefetched(items: Iterable[Any], *, queue_size: int = 2, name: str = "prefetch") -> Iterator[Any]:
    """``items``, produced in a thread of their own up to ``queue_size`` ahead of the caller (for a consumer
    that pulls, like a tracker over decoded frames: the decode overlaps its work). An error of the source is
    raised here at its place in the sequence; closing this generator early (or an interrupt while it waits)
    stops the thread and joins it before returning."""
    stop = threading.Event()
    errors: list[BaseException] = []
    q: queue.Queue[Any] = queue.Queue(queue_size)

    def produce() -> None:
        try:
            _feed(items, q, stop)
        except _Stopped:
            pass
        except BaseException as exc:  # raised in the consumer's thread
            errors.append(exc)
            try:
                _put(q, _END, stop)
            except _Stopped:
                pass

    thread = threading.Thread(target=contextvars.copy_context().run, args=(produce,), name=f"{name}-produce")
    thread.start()
    try:
        while (item := _get(q, stop)) is not _END:
            yield item
        if errors:
            raise errors[0]
    finally:
        stop.set()
        join_all([thread])


def run_stages(items: Iterable[Any], stages: Sequence[Callable[[Any], Any]], *, main: int = 0,
               queue_size: int = QUEUE_SIZE, name: str = "stage", torch_threads: int | None = None) -> None:
    """Feed ``items`` through ``stages`` in order, each stage in its own thread but ``stages[main]`` (module
    doc); the last stage's results are dropped. Raises the first error of any stage. ``name``: the threads'
    names' prefix (``name-produce``, ``name-<stage index>``). ``torch_threads``: torch's intra-op threads in
    every stage, the calling thread's included while the call lasts (None: the caller's count; 1 where the
    stages themselves keep the cores busy and torch's own threads would only fight them for the cores)."""
    import torch

    if not stages or not 0 <= main < len(stages):
        raise ValueError(f"main={main} is not one of {len(stages)} stages")
    stop = threading.Event()
    errors: list[BaseException] = []
    queues: list[queue.Queue[Any]] = [queue.Queue(queue_size) for _ in stages]
    caller_n = torch.get_num_threads()
    threads_n = torch_threads or caller_n

    def produce() -> None:
        _feed(items, queues[0], stop)

    def work(i: int) -> None:
        fn, last = stages[i], i == len(stages) - 1
        while (item := _get(queues[i], stop)) is not _END:
            out = fn(item)
            if not last:
                _put(queues[i + 1], out, stop)
        if not last:
            _put(queues[i + 1], _END, stop)

    def body(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                if torch.get_num_threads() != threads_n:
                    torch.set_num_threads(threads_n)
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the calling thread, which raises it
                errors.append(exc)
                stop.set()
        return run

    jobs = [("produce", produce)] + [(f"{i}", (lambda i=i: work(i))) for i in range(len(stages)) if i != main]
    workers = [threading.Thread(target=contextvars.copy_context().run, args=(body(fn),), name=f"{name}-{label}")
               for label, fn in jobs]
    try:
        torch.set_num_threads(threads_n)
        for t in workers:
            t.start()
        work(main)
        _join(workers[-1] if main < len(stages) - 1 else None, stop)  # the last item done
    except _Stopped:
        pass  # a worker failed: its error is raised below, once every thread is gone
    finally:
        stop.set()  # on success the workers are done already; otherwise they leave at their next wait
        join_all(workers)
        torch.set_num_threads(caller_n)
    if errors:
        raise errors[0]


def _feed(items: Iterable[Any], q: queue.Queue[Any], stop: threading.Event) -> None:
    """Put every item of ``items`` into ``q``, then the end mark. The source is closed in this thread either
    way, so a generator's own cleanup (progress tasks) runs in this thread's context."""
    source = iter(items)
    try:
        for item in source:
            _put(q, item, stop)
        _put(q, _END, stop)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue


def _join(thread: threading.Thread | None, stop: threading.Event) -> None:
    """Wait for ``thread`` (None: nothing to wait for) unless a stage stops first (:class:`_Stopped`)."""
    while thread is not None and thread.is_alive():
        if stop.is_set():
            raise _Stopped
        thread.join(_POLL_S)


def join_all(threads: list[threading.Thread]) -> None:
    """Join every started thread; a second Ctrl-C meanwhile is raised once they are gone (no orphans)."""
    interrupted: BaseException | None = None
    for t in threads:
        while t.is_alive():
            try:
                t.join(_POLL_S)
            except KeyboardInterrupt as exc:
                interrupted = exc
    if interrupted is not None:
        raise interrupted
