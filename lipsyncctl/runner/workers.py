"""Where a job's tasks run: this process, local worker processes (one per GPU), or Ray.

The task protocol is small: a task is picklable plain data, and ``execute(task, cache, device)`` is a
module-level function (so spawned workers and Ray can import it) that runs one task and returns its
outcome; it must not raise for a task that fails (it reports the failure in its outcome), except on
Ctrl-C. ``cache`` is a dict that lives as long as the worker does: an executor keeps its loaded
networks there, so each worker loads them once. ``device`` is the worker's device (``cuda:1``) or None
(the task's own setting).

- ``jobs=1`` and at most one GPU: in this process.
- ``jobs=N`` / ``gpus=["cuda:0", "cuda:1"]``: spawned worker processes (one per listed GPU, each
  pinned to its device; with ``jobs > len(gpus)`` the GPUs are shared round-robin).
- ``backend="ray"``: one Ray task per task (``ray.init()`` joins ``RAY_ADDRESS`` if set, else starts a
  local instance); paths must be visible to every node (shared storage).

Sharding (:mod:`lipsyncctl.runner.shards`) happens before this: each array job gets its part of the list.
Nothing here knows what a task is.

Stopping: when this process is interrupted (Ctrl-C, or SIGTERM, which the CLI turns into the same
KeyboardInterrupt), it cancels the queued tasks and sends SIGTERM to its worker processes. A worker then
interrupts its task like Ctrl-C does (the task removes its temporary files) and exits instead of taking the
next queued one; a worker that has not stopped after :data:`STOP_GRACE` seconds (inside one long native
call) is killed, and its temporaries are left for the next run's sweep
(:func:`lipsyncctl.media.atomic.sweep_temps`). So ``--jobs N`` stops within a few seconds, like one
process does, instead of finishing the tasks in flight.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Container, Sequence
from typing import Any, TypeVar

from lipsyncctl import progress
from lipsyncctl.errors import Interrupted, JobFailedError, MissingToolError, UsageError

T = TypeVar("T")
R = TypeVar("R")
#: ``execute(task, cache, device) -> outcome``; module-level, never raises for a failed task.
Execute = Callable[[Any, dict[str, Any], "str | None"], Any]
Done = Callable[[Any, Any], None]

BACKENDS = ("local", "ray")
#: seconds an interrupted worker gets to remove its temporary files before it is killed
STOP_GRACE = 3.0
#: tasks submitted to the worker pool at a time, per worker (a million submitted at once made each wait for the next
#: completion walk them all: hours of the parent's time for a VoxCeleb2-size curate)
IN_FLIGHT = 4
#: tasks submitted to Ray at a time, at least (IN_FLIGHT a slot of the cluster where that is more)
RAY_IN_FLIGHT = 256


def worker_threads(workers: int, cpu_count: int | None = None) -> int:
    """Intra-op threads per worker process so that ``workers`` processes share the cores instead of
    each starting one thread per core (which oversubscribes the CPU and slows every render down)."""
    cores = cpu_count or available_cores()
    return max(1, cores // max(1, workers))


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity (a SLURM task's or a container's cpuset), not the
    machine's count (workers sized by that oversubscribed a node's share: several times slower)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # (no affinity on this system)
        return os.cpu_count() or 1


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS` (a job checks it before any work), else UsageError."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r}: expected {' or '.join(BACKENDS)}")
    return backend


def run_tasks(tasks: Sequence[T], execute: Execute, on_done: Callable[[T, Any], None], *, jobs: int = 1,
              gpus: Sequence[str] = (), backend: str = "local", label: str = "tasks",
              cache: dict[str, Any] | None = None, lost: Callable[[T, str], Any] | None = None,
              name: Callable[[T], str] | None = None) -> None:
    """Run every task with ``execute``, calling ``on_done(task, outcome)`` in this process as each one
    finishes (in completion order: ``on_done`` is where a caller reports a finished task, whichever
    process ran it). A progress task named ``label`` counts them. ``cache``: the executor's cache when the
    tasks run in this process (what the caller has loaded already); workers start with their own.

    ``lost(task, why)``: the outcome of a task whose worker process died running it (killed from outside: the
    out-of-memory killer, a ``kill -9``); the other tasks go on in fresh workers (those the death cut short are
    run again). Without it such a death stops the job (:class:`~lipsyncctl.errors.JobFailedError`).

    ``name(task)``: how progress names a task: each progress task a task's work starts is shown as ``NAME: stage``
    (two workers' stage lines interleave in a log; a long list's lines in one process say which row they are)."""
    from lipsyncctl.config import JOBS, check_count

    check_backend(backend)
    check_count("--jobs", jobs, JOBS)
    if not tasks:
        return
    with progress.Task(label, total=len(tasks)) as bar:
        def done(task: T, outcome: Any) -> None:
            on_done(task, outcome)
            bar.advance(1)

        if backend == "ray":  # (Ray's tasks send no progress of their own: each one says it has finished)
            said = done if name is None else lambda t, o: (progress.message(f"{name(t)}: finished"), done(t, o))
            _run_ray(tasks, execute, said, gpus, lost)
        elif jobs <= 1 and len(gpus) <= 1:
            _run_here(tasks, execute, done, gpus[0] if gpus else None, {} if cache is None else cache, name)
        else:
            names = [name(t) for t in tasks] if name is not None else None
            _run_pool(tasks, execute, done, max(jobs, len(gpus)), gpus, lost, bar.id, names)


def _run_here(tasks: Sequence[T], execute: Execute, done: Callable[[T, Any], None], device: str | None,
              cache: dict[str, Any], name: Callable[[T], str] | None = None) -> None:
    """Each task in turn in this process, its progress tasks and notes named ``NAME: ...`` as a worker's are."""
    import contextlib

    for task in tasks:
        with progress.named(name(task)) if name is not None else contextlib.nullcontext():
            outcome = execute(task, cache, device)
        done(task, outcome)


# ---- local worker processes -------------------------------------------------------------------

_worker: dict[str, Any] = {"device": None, "cache": {}, "busy": False, "events": None}
#: exit status of a worker that was interrupted (as the CLI's for Ctrl-C)
_INTERRUPTED = Interrupted.exit_code


#: seconds between two of a worker task's advances sent to the parent (the steps between are added up: a pickle and a
#: pipe write per frame for a line a sink shows at most once a second)
ADVANCE_EVERY = 0.2


class _QueueSink:
    """A worker's progress sink: each task's start, advance and finish go to the parent (:func:`_relay`), which shows
    them under the job's task (a farm's log sees a clip's stages, not only the clips as they finish), and its notes
    and warnings, as one process shows them. A task's advances go at most every :data:`ADVANCE_EVERY` seconds (and
    when it reaches its total), the rest before its finish. Thread-safe (a worker's pipelined stages share it)."""

    def __init__(self, events: Any) -> None:
        import threading

        self.events, self.pid = events, os.getpid()
        self._lock = threading.Lock()
        self._tasks: dict[int, list[float | None]] = {}  # id -> [amount not sent, total, done, time last sent]

    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None:
        import time

        with self._lock:
            self._tasks[task_id] = [0.0, total, 0.0, time.monotonic()]
        self.events.put(("start", self.pid, task_id, description, total, parent))

    def advance(self, task_id: int, amount: float) -> None:
        import time

        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            pending, total, done, sent = task
            pending, done, now = pending + amount, done + amount, time.monotonic()
            task[0], task[2] = pending, done
            if now - sent < ADVANCE_EVERY and not (total and done >= total):
                return
            task[0], task[3] = 0.0, now
        self.events.put(("advance", self.pid, task_id, pending))

    def finish(self, task_id: int, stopped: bool = False) -> None:
        with self._lock:
            task = self._tasks.pop(task_id, None)
        if task is not None and task[0]:
            self.events.put(("advance", self.pid, task_id, task[0]))
        self.events.put(("finish", self.pid, task_id, stopped))

    def message(self, text: str) -> None:
        self.events.put(("message", self.pid, 0, text))


def _relay(events: Any, sink: Any, root: int | None, stop: Any, open_tasks: dict[tuple[int, int], int],
           running: dict[int, int], names: Sequence[str] | None = None) -> None:
    """The parent's thread that shows the workers' progress (:class:`_QueueSink`) in ``sink``: each worker task
    under its own parent, a worker's outermost ones under ``root`` (the job's task), with ids of this process,
    named ``NAME: stage`` after the job's task the worker runs (``names``); and which task each worker started last
    (``running``: pid -> task number, for a worker that dies). Runs until ``stop`` is set and the queue is drained;
    ``open_tasks`` keeps the tasks not finished yet."""
    import queue

    while True:
        try:
            event = events.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        except (EOFError, OSError):  # the queue is gone
            return
        kind, pid, task_id = event[:3]
        if kind == "begin":
            running[pid] = task_id
        elif kind == "message":  # a note names the task its worker runs, as its progress tasks do (a warning is
            # said once whichever task says it: not named)
            text = event[3]
            named = f"{names[running[pid]]}: " if names is not None and running.get(pid, -1) >= 0 else ""
            if named and not text.startswith((progress.WARNING_PREFIX, named)):  # (a task's own labelled note)
                text = named + text
            sink.message(text)
        elif kind == "start":
            description, total, parent = event[3:]
            if names is not None and running.get(pid, -1) >= 0:
                description = f"{names[running[pid]]}: {description}"
            new = progress.new_task_id()
            open_tasks[(pid, task_id)] = new
            sink.start(new, description, total, open_tasks.get((pid, parent), root))
        elif kind == "advance" and (pid, task_id) in open_tasks:
            sink.advance(open_tasks[(pid, task_id)], event[3])
        elif kind == "finish" and (pid, task_id) in open_tasks:
            sink.finish(open_tasks.pop((pid, task_id)), stopped=event[3])


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM/SIGINT in a worker: interrupt the task it runs (its cleanup runs, then :func:`_work` exits),
    or exit at once when it runs none. Once: a Ctrl-C reaches the whole process group and the parent's SIGTERM
    follows it; a second interrupt inside the first one's cleanup would cut that short (and print "Exception
    ignored" tracebacks among the progress lines)."""
    if not _worker["busy"]:
        os._exit(_INTERRUPTED)
    # a handler that does nothing, not SIG_IGN: setting SIG_IGN while the other signal is pending makes Python print
    # "OSError: Signal 15 ignored due to race condition" with a traceback (a re-walk saw it)
    signal.signal(signal.SIGTERM, _ignored)
    signal.signal(signal.SIGINT, _ignored)
    from lipsyncctl import progress

    progress.interrupted(True)  # its tasks, a track() closed while unwinding too, are relayed stopped, not done
    raise KeyboardInterrupt


def _interrupt_handlers() -> None:
    """A worker's SIGTERM and SIGINT interrupt its task (:func:`_terminated`); a SIGINT the worker was started
    ignoring stays ignored: the parent ignores it too (a job started with ``&`` from a script, where a group
    SIGINT used to stop the workers and leave the parent to report them dead, exit 1, while it went on)."""
    signal.signal(signal.SIGTERM, _terminated)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # (ignored dispositions survive the spawn's exec)
        signal.signal(signal.SIGINT, _terminated)


def _ignored(signum: int, frame: Any) -> None:
    """A worker's handler of a second interrupt (see :func:`_terminated`)."""


def _watch_parent(parent: int, every: float = 1.0) -> None:
    """A worker's watchdog thread: when the process that started it is gone (``kill -9`` of the job, a crashed
    parent: the worker is re-parented), the worker interrupts itself as the parent's SIGTERM would (its task's
    temporary files are removed) and exits after :data:`STOP_GRACE` seconds at the latest, instead of rendering
    on for nobody (its outputs unrecorded, its memory held)."""
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE)
    os._exit(_INTERRUPTED)


def _init_worker(devices: Any, threads: int, events: Any = None) -> None:
    """Each spawned worker takes one device from the queue (None = the task's own setting) and its
    share of the CPU cores; ``events``: where its progress goes (:class:`_QueueSink`), and which task it starts
    (the one a worker that dies was running).

    SIGTERM (from the parent when it is interrupted, ``timeout``, ``kill`` of the process group, a
    scheduler's time limit) and SIGINT (Ctrl-C in a terminal reaches the whole group) interrupt a worker's
    task like Ctrl-C does, so it removes its temporary files; the worker then exits (:func:`_work`). So does the
    parent's death (:func:`_watch_parent`)."""
    import threading

    _interrupt_handlers()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _worker["device"] = devices.get() if devices is not None else None
    _worker["events"] = events
    if events is not None:
        progress.install_sink(_QueueSink(events))  # the worker's own context: its tasks run in this thread
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # a job whose tasks do not use torch
        pass


def _work(execute: Execute, task: Any, number: int = -1) -> Any:
    _worker["busy"] = True
    try:
        if _worker["events"] is not None:
            _worker["events"].put(("begin", os.getpid(), number))
        return execute(task, _worker["cache"], _worker["device"])
    except KeyboardInterrupt:
        # The task's cleanup has run. Leave now: the pool would hand this worker its next queued task.
        os._exit(_INTERRUPTED)
    finally:
        _worker["busy"] = False


def _run_pool(tasks: Sequence[T], execute: Execute, done: Callable[[T, Any], None], workers: int,
              gpus: Sequence[str], lost: Callable[[T, str], Any] | None = None, root: int | None = None,
              names: Sequence[str] | None = None) -> None:
    """The tasks on ``workers`` spawned processes. A worker that dies breaks the pool (every worker ends): with
    ``lost``, the task it was running is reported lost and the unfinished others run in a fresh pool (a worker
    killed between two tasks loses none); a round that finishes nothing and can blame nothing stops the job."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA or OpenMP state
    threads = worker_threads(workers)
    progress.message(f"starting {workers} worker processes ({threads} torch thread{'s' * (threads > 1)} each"
                     + (f", GPUs {', '.join(gpus)})" if gpus else ")") + "; each task is reported as it finishes")
    todo = dict.fromkeys(range(len(tasks)))  # the unfinished, in order (a dict: a finished one goes in O(1))
    while todo:
        before = len(todo)
        killed = _pool_round(ctx, tasks, todo, execute, done, workers, gpus, lost is not None, root, names)
        if killed is None:
            return
        if not killed and len(todo) == before:  # nothing finished, nobody to blame: it would go round for ever
            raise _worker_died(len(todo))
        assert lost is not None
        for number in killed:
            done(tasks[number], lost(tasks[number], "its worker process died running it (killed from outside, "
                                                    "often for memory)"))
            del todo[number]
        if todo:
            progress.warning(f"a worker process died ({len(killed)} task(s) lost with it); the {len(todo)} "
                             "unfinished other(s) go on in fresh workers")


def _pool_round(ctx: Any, tasks: Sequence[T], todo: dict[int, None], execute: Execute,
                done: Callable[[T, Any], None], workers: int, gpus: Sequence[str], survive: bool, root: int | None,
                names: Sequence[str] | None = None) -> list[int] | None:
    """``tasks[i]`` for each ``i`` of ``todo`` on a fresh pool, each finished one removed from ``todo``. Returns None
    when every one finished; where a worker died (and ``survive``), the numbers of the tasks the dead ones were
    running (none for one that died between two tasks). The workers' progress is shown under the task ``root``
    (:func:`_relay`, which also hears which task each worker starts). At most :data:`IN_FLIGHT` tasks a worker are
    submitted at a time (each completion is waited for among those: all of them submitted at once made every wait
    walk a million futures)."""
    import contextvars
    import threading
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    devices = None
    if gpus:
        devices = ctx.Manager().Queue()
        for i in range(workers):
            devices.put(gpus[i % len(gpus)])
    events, stop = ctx.Queue(), threading.Event()
    open_tasks: dict[tuple[int, int], int] = {}
    running: dict[int, int] = {}  # worker pid -> the task it started last
    # in this context: the sink, and the command's state that shows a warning once
    relay = threading.Thread(target=contextvars.copy_context().run, name="progress-relay", daemon=True,
                             args=(_relay, events, progress.current_sink(), root, stop, open_tasks, running, names))
    relay.start()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(devices, worker_threads(workers), events))
    processes: dict[int, Any] = {}
    try:
        queue, pending = iter(list(todo)), {}

        def broken() -> list[int]:
            if not survive:
                raise _worker_died(len(todo)) from None
            pool.shutdown(wait=True)
            _stop_relay(relay, stop, open_tasks)
            return _killed_tasks(processes, running, todo)

        refill = True
        while True:
            try:
                for i in itertools.islice(queue, max(0, workers * IN_FLIGHT - len(pending)) if refill else 0):
                    pending[pool.submit(_work, execute, tasks[i], i)] = i
            except BrokenProcessPool:  # a worker died since the last wait: the tasks not submitted stay in todo, and
                refill = False         # those submitted are collected below (a result first: not run again)
            if not pending:
                if not refill:
                    processes.update(getattr(pool, "_processes", None) or {})
                    return broken()
                break
            processes.update(getattr(pool, "_processes", None) or {})  # the executor's own table
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            # results first: a task that finished beside a worker's death is reported, not run again
            for fut in sorted(finished, key=lambda f: isinstance(f.exception(), BrokenProcessPool)):
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    return broken()
                number = pending.pop(fut)
                del todo[number]
                done(tasks[number], result)
        pool.shutdown(wait=True)  # the workers' last progress is in the queue before the relay stops
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        _stop_relay(relay, stop, open_tasks)
    return None


def _stop_relay(relay: Any, stop: Any, open_tasks: dict[tuple[int, int], int]) -> None:
    """End the progress relay (it drains the queue first) and say the tasks it saw start and not finish stopped (a
    worker that died or was stopped). Once: a second call finds it ended."""
    if not relay.is_alive() and stop.is_set():
        return
    stop.set()
    relay.join(5.0)
    sink = progress.current_sink()
    while open_tasks:
        sink.finish(open_tasks.pop(next(iter(open_tasks))), stopped=True)


def _killed_tasks(processes: dict[int, Any], running: dict[int, int], unfinished: Container[int]) -> list[int]:
    """The tasks that the workers killed from outside were running: the last task each such worker started
    (``running``), if it is ``unfinished`` (one that died between two tasks ran none). A worker the pool itself
    ended (SIGTERM, or its interrupt's exit 130) is not one of them."""
    for proc in processes.values():
        proc.join(STOP_GRACE)
    dead = [pid for pid, proc in processes.items()
            if proc.exitcode is not None and proc.exitcode not in (0, _INTERRUPTED, -signal.SIGTERM)]
    return sorted({running[pid] for pid in dead if running.get(pid) in unfinished})


def _worker_died(unfinished: int) -> JobFailedError:
    """A worker process was killed (the kernel's out-of-memory killer, a kill -9): the job stops (exit 1)."""
    return JobFailedError(f"a worker process died (killed from outside, often for memory) with {unfinished} "
                          "task(s) unfinished; the finished ones are kept",
                          hint="rerun with fewer --jobs (and check `dmesg` for the out-of-memory killer): "
                               "finished work is reused")


def _stop_workers(pool: Any) -> None:
    """Cancel the queued tasks, SIGTERM every worker, give them :data:`STOP_GRACE` seconds to clean up and
    exit, then kill what is left (see the module docstring)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # the executor's own table
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in workers:
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


# ---- Ray -------------------------------------------------------------------------------------

def _ray_work(execute: Execute, task: Any, use_gpu: bool) -> Any:
    return execute(task, _worker["cache"], "cuda" if use_gpu else None)


#: seconds a Ray cluster's address has to answer before ``ray.init`` is let try it (it retried for minutes, printing
#: its own log lines, while a SIGTERM ended it with exit 15 and no JSON: its handler, not the CLI's, runs then)
RAY_CONNECT_SECONDS = 10.0


def _check_ray_address(address: str) -> None:
    """A ``RAY_ADDRESS`` of ``host:port`` (or ``ray://host:port``) answers a TCP connection.

    Raises:
        MissingToolError: it does not (exit 4), naming it.
    """
    import socket

    if "://" in address.removeprefix("ray://"):
        return  # another scheme (a dashboard's http://): Ray's own rules
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto", "local", unset: Ray's own rules
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_SECONDS).close()
    except OSError as exc:
        raise MissingToolError(f"--backend ray: the Ray cluster at RAY_ADDRESS={address} does not answer "
                               f"({exc.strerror or exc})", hint="start the cluster (ray start --head), or fix or unset "
                               "RAY_ADDRESS (unset: a local Ray instance)") from None


def _run_ray(tasks: Sequence[T], execute: Execute, done: Callable[[T, Any], None], gpus: Sequence[str],
             lost_task: Callable[[T, str], Any] | None = None) -> None:
    try:
        import ray
    except ImportError:
        raise MissingToolError("--backend ray: Ray is not installed",
                               hint="pip install 'lipsyncctl[ray]' (or ray>=2.40)") from None
    if not ray.is_initialized():
        import logging
        import threading

        # ray.init sets a SIGTERM handler of its own (sys.exit: exit 1, a crash dump, no cleanup): the CLI's, which
        # interrupts like Ctrl-C (exit 130, temporaries removed), is put back
        main = threading.current_thread() is threading.main_thread()
        term = signal.getsignal(signal.SIGTERM) if main else None
        _check_ray_address(os.environ.get("RAY_ADDRESS") or "")
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True, logging_level=logging.ERROR)
        if main and term is not None:
            signal.signal(signal.SIGTERM, term)
    remote = ray.remote(num_gpus=1 if gpus else 0, max_retries=0)(_ray_work)
    lost = tuple(getattr(ray.exceptions, name) for name in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError")
                 if hasattr(ray.exceptions, name))
    # IN_FLIGHT tasks a slot of the cluster submitted at a time, at least RAY_IN_FLIGHT (an autoscaler sees them as
    # the demand to grow for; a head of no CPUs has no slot), the slots read again as nodes come and go
    queue, refs, finished, window = iter(tasks), {}, 0, RAY_IN_FLIGHT
    try:
        while True:
            if finished % 64 == 0:
                window = max(RAY_IN_FLIGHT, IN_FLIGHT * int(ray.cluster_resources().get("GPU" if gpus else "CPU", 0)))
            for t in itertools.islice(queue, max(0, window - len(refs))):
                refs[remote.remote(execute, t, bool(gpus))] = t
            if not refs:
                break
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except lost as exc:  # its worker (or node) died on it, as a local worker's death: that task alone
                    if lost_task is None:
                        raise _worker_died(len(tasks) - finished) from None
                    result = lost_task(refs[ref], f"its Ray worker died ({type(exc).__name__}: often out of memory)")
                done(refs.pop(ref), result)
                finished += 1
    except BaseException:
        # (a task cancelled without force was not interrupted in its worker within seconds, tried: its worker is
        # killed, and its temporaries are left for the next run's sweep, lipsyncctl.media.atomic.sweep_temps)
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
