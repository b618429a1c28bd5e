"""Rich rendering of the library's progress protocol (bars on stderr, per task, with ETA)."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lipsyncctl import progress
from lipsyncctl.cli import state as st


class RichSink:
    """Implements :class:`lipsyncctl.progress.ProgressSink` with one Rich bar per task.

    Nested tasks are indented under their parent; finished child bars are removed so that a long
    batch keeps a short display (the overall bar stays).
    """

    def __init__(self, console: Console, enabled: bool = True, show_messages: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.show_messages = show_messages
        self._lock = threading.Lock()
        self._ids: dict[int, Any] = {}
        self._parents: dict[int, int | None] = {}
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not enabled,
            # Rich would otherwise swap sys.stdout for a proxy onto this (stderr) console while the bars
            # run, and `--json` results would land on the terminal instead of the pipe or file.
            redirect_stdout=False,
        )

    def __enter__(self) -> RichSink:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None:
        with self._lock:
            depth = 0
            p = parent
            while p is not None and p in self._parents:
                depth += 1
                p = self._parents[p]
            self._parents[task_id] = parent
            self._ids[task_id] = self._progress.add_task("  " * depth + description, total=total)

    def advance(self, task_id: int, amount: float) -> None:
        with self._lock:
            rid = self._ids.get(task_id)
            if rid is not None:
                self._progress.advance(rid, amount)

    def finish(self, task_id: int, stopped: bool = False) -> None:
        with self._lock:
            rid = self._ids.pop(task_id, None)
            parent = self._parents.pop(task_id, None)
            if rid is None:
                return
            if parent is not None:
                self._progress.remove_task(rid)
            else:
                task = self._progress.tasks[[t.id for t in self._progress.tasks].index(rid)]
                if task.total is None:
                    self._progress.update(rid, total=task.completed or 1, completed=task.completed or 1)

    def message(self, text: str) -> None:
        if text.startswith(progress.WARNING_PREFIX):  # lipsyncctl.progress.warning()
            st.warn(text[len(progress.WARNING_PREFIX):])
            return
        if self.show_messages:
            self.console.print(text, markup=False, highlight=False)


#: ``--progress`` formats: ``auto`` bars on a terminal and nothing otherwise; ``lines`` and ``json`` a line a
#: step on stderr for logs and render-farm managers, whatever stderr is; ``off`` none
PROGRESS_FORMATS = ("auto", "lines", "json", "off")


class LineSink:
    """Implements :class:`lipsyncctl.progress.ProgressSink` as lines on stderr (``--progress lines|json``): a
    task's start, its count at most every ``interval`` seconds (and when it reaches its total), its end.

    ``lines``: ``progress: denoise 120/240 (50.0%) 12.3 s, eta 12.1 s`` (a task without a total: ``start: NAME``,
    then its count only), ``done: denoise 240 in 24.5 s``; notes and warnings as they are. ``json``: one object a line, ``{"event":
    "start" | "progress" | "finish", "id", "parent", "task", "done", "total", "percent", "elapsed", "eta"}`` (times
    in seconds; ``parent`` the id of the task it runs within), notes and warnings as ``{"event": "message" |
    "warning", "text"}``. Thread-safe; a line is written whole."""

    def __init__(self, stream: Any, fmt: str = "lines", *, interval: float = 1.0, show_messages: bool = True,
                 clock: Any = None) -> None:
        import time

        self.stream = stream
        self.json = fmt == "json"
        self.interval = interval
        self.show_messages = show_messages
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineSink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _write(self, event: str, task_id: int | None, task: dict[str, Any] | None, text: str | None = None,
               stopped: bool = False) -> None:
        import json

        if task is None:  # a note
            line = st.event_line(event, str(text)) if self.json else str(text)
        else:
            now = self._clock()
            elapsed, done, total = now - task["started"], task["done"], task["total"]
            percent = min(100.0, 100.0 * done / total) if total else None
            eta = elapsed * (total - done) / done if total and done and event == "progress" else None
            if self.json:
                line = json.dumps({"event": event, "id": task_id, "parent": task["parent"], "task": task["name"],
                                   "done": done, "total": total,
                                   "percent": None if percent is None else round(percent, 1),
                                   "elapsed": round(elapsed, 3), "eta": None if eta is None else round(eta, 3),
                                   **({"stopped": True} if stopped else {})})
            elif event == "finish" and stopped:  # an error or an interrupt ended it: a log reads no completion
                of = f"/{_count(total)}" if total else ""
                line = f"stopped: {task['name']} at {_count(done)}{of} after {elapsed:.1f} s"
            elif event == "finish":
                line = f"done: {task['name']}{f' {_count(done)}' if total or done else ''} in {elapsed:.1f} s"
            elif event == "start" and not total:
                line = f"start: {task['name']}"
            else:
                of = f"/{_count(total)} ({percent:.1f}%)" if total else ""
                line = (f"progress: {task['name']} {_count(done)}{of} {elapsed:.1f} s"
                        + (f", eta {eta:.1f} s" if eta is not None else ""))
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: progress is not worth failing the run for
            pass

    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None:
        with self._lock:
            now = self._clock()
            task = {"name": description, "total": total, "parent": parent, "done": 0, "started": now, "shown": now}
            self._tasks[task_id] = task
            self._write("start", task_id, task)

    def advance(self, task_id: int, amount: float) -> None:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            task["done"] += amount
            now = self._clock()
            if now - task["shown"] >= self.interval or (task["total"] and task["done"] >= task["total"]):
                task["shown"] = now
                self._write("progress", task_id, task)

    def finish(self, task_id: int, stopped: bool = False) -> None:
        with self._lock:
            task = self._tasks.pop(task_id, None)
            if task is not None:
                self._write("finish", task_id, task, stopped=stopped)

    def message(self, text: str) -> None:
        if text.startswith(progress.WARNING_PREFIX):  # lipsyncctl.progress.warning(): shown once, as warnings are
            warning = text[len(progress.WARNING_PREFIX):]
            current = st.state()
            if not self.json:
                st.warn(warning)
            elif warning not in current.warned and not current.quiet:  # a JSON line too (not repeated at the end)
                current.warned[warning] = None
                with self._lock:
                    self._write("warning", None, None, warning)
            return
        if self.show_messages:
            with self._lock:
                self._write("message", None, None, text)


def _count(n: float | None) -> str:
    """A count as it is read: ``240``, a fraction of a unit to one place (``12.5``)."""
    return "?" if n is None else str(int(n)) if float(n).is_integer() else f"{n:.1f}"
