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

    def finish(self, task_id: int) -> None:
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
            from lipsyncctl.cli import state as st

            st.warn(text[len(progress.WARNING_PREFIX):])
            return
        if self.show_messages:
            self.console.print(text, markup=False, highlight=False)
