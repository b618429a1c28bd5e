"""Progress reporting protocol between the library and whatever renders it.

The library never prints. Long steps call :func:`track` (or use a :class:`Task`) and the CLI installs a
:class:`ProgressSink` that draws Rich bars on stderr. Without a sink, tracking costs almost nothing.

Example::

    from lipsyncctl import progress
    for frame in progress.track(frames, "decode", total=n):
        ...
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


class ProgressSink(Protocol):
    """Receives task lifecycle events. Implementations must be cheap and thread-safe."""

    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None: ...

    def advance(self, task_id: int, amount: float) -> None: ...

    def finish(self, task_id: int, stopped: bool = False) -> None: ...

    def message(self, text: str) -> None: ...


class NullSink:
    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None:
        pass

    def advance(self, task_id: int, amount: float) -> None:
        pass

    def finish(self, task_id: int, stopped: bool = False) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class RecordingSink:
    """Keeps every event; used by tests and by results that report time per stage."""

    events: list[tuple] = field(default_factory=list)

    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None:
        self.events.append(("start", task_id, description, total, parent))

    def advance(self, task_id: int, amount: float) -> None:
        self.events.append(("advance", task_id, amount))

    def finish(self, task_id: int, stopped: bool = False) -> None:
        self.events.append(("finish", task_id))

    def message(self, text: str) -> None:
        self.events.append(("message", text))


_NULL = NullSink()
_sink: contextvars.ContextVar[ProgressSink | None] = contextvars.ContextVar(
    "lipsyncctl_progress_sink", default=None
)
_parent: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "lipsyncctl_progress_parent", default=None
)
#: what the work of this context is about (a timeline's ``de/shot_003``): :func:`message` lines start with it
_label: contextvars.ContextVar[str | None] = contextvars.ContextVar("lipsyncctl_progress_label", default=None)
#: which of a job's tasks the work of this context is (a batch's ``[2/9] out.mp4``): task descriptions start with it
_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("lipsyncctl_progress_name", default=None)
_counter = iter(range(1, 1 << 62))
#: set by the CLI when Ctrl-C or SIGTERM arrives (:func:`interrupted`): a track() loop closed after it (its consumer
#: unwound by the interrupt, the generator closed later) ended stopped, not done
_interrupt = threading.Event()


def interrupted(value: bool | None = None) -> bool:
    """Whether an interrupt is stopping this process's work (``value``: say so, or clear it for the next command of
    the process). Only the CLI sets it (the library raises, and a caller's ``break`` out of a track() is done)."""
    if value is not None:
        _interrupt.set() if value else _interrupt.clear()
    return _interrupt.is_set()


@contextlib.contextmanager
def use_sink(sink: ProgressSink) -> Iterator[ProgressSink]:
    """Install ``sink`` for the duration of the block (the CLI does this around a command)."""
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)


def current_sink() -> ProgressSink:
    return _sink.get() or _NULL


@contextlib.contextmanager
def labelled(label: str) -> Iterator[None]:
    """Start every :func:`message` of the block with ``label`` (``de/shot_003: faces: reused ...``): one shot of many
    says which it is. Warnings are left as they are (each text is shown once per command)."""
    token = _label.set(label)
    try:
        yield
    finally:
        _label.reset(token)


@contextlib.contextmanager
def named(name: str) -> Iterator[None]:
    """Start the description of every :class:`Task` begun in the block, and every :func:`message` (as
    :func:`labelled`), with ``name`` (``[2/9] out.mp4: faces``): the work of one of a job's tasks run in this process
    says which it is, as a worker process's does (its tasks and notes are named by the parent that shows them)."""
    token = _name.set(name)
    try:
        with labelled(name):
            yield
    finally:
        _name.reset(token)


def install_sink(sink: ProgressSink) -> None:
    """Install ``sink`` in this context for good (a worker process's, for its whole life: :func:`use_sink` is for a
    block)."""
    _sink.set(sink)


def new_task_id() -> int:
    """A task id of this process (for a sink that shows another process's tasks)."""
    return next(_counter)


class Task:
    """A unit of progress. Use as a context manager; nested tasks record their parent."""

    def __init__(self, description: str, total: float | None = None) -> None:
        self.id = next(_counter)
        name = _name.get()
        self.description = f"{name}: {description}" if name else description
        self.total = total
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self._sink = current_sink()
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Task:
        self._sink.start(self.id, self.description, self.total, _parent.get())
        self._token = _parent.set(self.id)
        return self

    def advance(self, amount: float = 1) -> None:
        self._sink.advance(self.id, amount)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.started
        try:
            if self._token is not None:
                _parent.reset(self._token)
        except ValueError:  # left in another context than entered (a generator closed by the garbage
            pass            # collector after its thread ended): that context and its parent are gone
        finally:  # ended by an error or an interrupt: stopped, not done (a loop that left a track() early is done,
            # unless an interrupt made it leave: the track's generator is closed after its consumer unwound)
            stopped = isinstance(exc_type, type) and (not issubclass(exc_type, GeneratorExit) or _interrupt.is_set())
            self._sink.finish(self.id, stopped=stopped)


def track(iterable: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while reporting one unit of progress per item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Task(description, total) as task:
        for item in iterable:
            yield item
            task.advance(1)


#: Prefix of :func:`warning` messages (a sink may style them, and show each text once).
WARNING_PREFIX = "WARNING: "


def message(text: str) -> None:
    """A one-line note for the user (after the block's label: :func:`labelled`)."""
    label = _label.get()
    current_sink().message(f"{label}: {text}" if label else text)


def warning(text: str) -> None:
    """A warning the user should see while the job runs, e.g. 'tiny preset: the output is NOT lip-synced'
    (sent as a message starting with :data:`WARNING_PREFIX`). Return it in the result's warnings too: the
    CLI shows each warning text once per command, whichever way it arrives first."""
    current_sink().message(WARNING_PREFIX + text)
