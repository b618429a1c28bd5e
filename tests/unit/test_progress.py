"""Progress tasks (lipsyncctl.progress): a tracked iteration closed in another context than it started in."""

from __future__ import annotations

import contextvars

from lipsyncctl import progress


def test_a_track_closed_in_another_context_finishes_its_task_quietly() -> None:
    """The pipelined renderer's producer thread iterates ``track`` in a copy of the caller's context; when a
    stage fails, the half-read generator is closed later by the garbage collector, in another context. That
    used to raise (ContextVar token from another context) and leave the task unfinished."""
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        gen = progress.track(range(10), "windows")
        thread_context = contextvars.copy_context()
        assert thread_context.run(next, gen) == 0  # started there
        gen.close()  # closed here
    starts = [e for e in sink.events if e[0] == "start"]
    finishes = [e for e in sink.events if e[0] == "finish"]
    assert len(starts) == len(finishes) == 1
