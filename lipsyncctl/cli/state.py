"""Per-invocation CLI state and the helpers every command uses to talk to the user.

Stdout carries results (a table, or JSON with ``--json``); stderr carries progress, notes and errors.
"""

from __future__ import annotations

import contextvars
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Width of a console that is not a terminal (a pipe, a log file): wide enough that a table never cuts a
#: path or a timecode with ``…``; a table takes only the width its values need.
UNBOUNDED_WIDTH = 10_000


def console(*, stderr: bool = False) -> Console:
    """A Rich console on stdout or stderr: the terminal's width on a terminal, else :data:`UNBOUNDED_WIDTH`."""
    out = Console(stderr=stderr, soft_wrap=True)
    if not out.is_terminal:
        out.width = UNBOUNDED_WIDTH
    return out


@dataclass
class CliState:
    verbose: int = 0
    quiet: bool = False
    json: bool = False
    stdout: Console = field(default_factory=console)
    stderr: Console = field(default_factory=lambda: console(stderr=True))
    warned: dict[str, None] = field(default_factory=dict)  # warning texts shown by this invocation, in order
    emitted: bool = False  # a JSON result went to stdout (an error then adds no second document)
    argv: tuple[str, ...] = ()  # this invocation's arguments, global options first (`train --nproc` passes them on)
    progress_format: str = "auto"  # --progress: with json, notes and warnings are JSON lines on stderr too

    @property
    def progress_enabled(self) -> bool:
        return not self.quiet and sys.stderr.isatty()


_state: contextvars.ContextVar[CliState | None] = contextvars.ContextVar("lipsyncctl_cli_state", default=None)


def set_state(value: CliState) -> None:
    """Installed by the root callback for the current invocation."""
    _state.set(value)


def state() -> CliState:
    """The state of the current invocation (defaults when a command runs outside the root callback)."""
    current = _state.get()
    if current is None:
        current = CliState()
        _state.set(current)
    return current


def note(text: str, *, level: int = 0) -> None:
    """A line on stderr (suppressed by -q; ``level`` 1 = only with -v; ``--progress json``: a JSON line)."""
    st = state()
    if st.quiet or st.verbose < level:
        return
    if not _json_line(st, "message", text):
        st.stderr.print(text, markup=False, highlight=False)


def warn(text: str) -> None:
    """``warning: TEXT`` on stderr, once per invocation (a warning the library showed while the job ran
    comes back in the result's warnings; it is not repeated); ``--progress json``: a JSON line."""
    st = state()
    if text in st.warned:
        return
    st.warned[text] = None
    if not st.quiet and not _json_line(st, "warning", text):
        st.stderr.print(f"[yellow]warning:[/yellow] {text}", highlight=False)


def _json_line(st: CliState, event: str, text: str) -> bool:
    """With ``--progress json``, ``{"event": EVENT, "text": TEXT}`` on stderr (every line of it parses; errors
    stay ``error:`` lines) and True; else False."""
    if st.progress_format != "json":
        return False
    sys.stderr.write(event_line(event, text) + "\n")
    sys.stderr.flush()
    return True


def event_line(event: str, text: str) -> str:
    """A note or warning as ``--progress json`` writes it: ``{"event": "message"|"warning", "text": ...}``."""
    return json.dumps({"event": event, "text": text})


def emit_json(data: Any) -> None:
    import shutil
    import tempfile

    state().emitted = True
    # encoded into a file that spills to disk past 16 MB (a curate of a million sources makes hundreds of MB of
    # text, never held whole), then written: a value that fails to encode leaves nothing half-written on stdout
    with tempfile.SpooledTemporaryFile(max_size=16 << 20, mode="w+", encoding="utf-8") as text:
        for chunk in _chunks(data):
            text.write(chunk)
        text.write("\n")
        text.seek(0)
        shutil.copyfileobj(text, sys.stdout)
    sys.stdout.flush()


def _chunks(data: Any) -> Iterator[str]:
    """``data`` as JSON text (indented by 2), in pieces; an iterator among a mapping's values is written as a list,
    an item at a time as it is consumed (a curate result's sources, read back from disk: never all held)."""
    encoder = json.JSONEncoder(indent=2, sort_keys=False, default=_json_default)
    if not (isinstance(data, Mapping) and any(isinstance(v, Iterator) for v in data.values())):
        yield from encoder.iterencode(data)
        return
    # indented as json.dumps(indent=2) would: encoded JSON has no newline inside a string, so nesting is a replace
    for i, (key, value) in enumerate(data.items()):
        yield ("{" if i == 0 else ",") + "\n  " + json.dumps(key) + ": "
        if not isinstance(value, Iterator):
            yield encoder.encode(value).replace("\n", "\n  ")
            continue
        n = 0
        for n, item in enumerate(value, 1):
            yield ("[" if n == 1 else ",") + "\n    " + encoder.encode(item).replace("\n", "\n    ")
        yield "\n  ]" if n else "[]"
    yield "\n}"


def _json_default(obj: Any) -> Any:
    from fractions import Fraction
    from pathlib import Path

    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Fraction):
        return f"{obj.numerator}/{obj.denominator}"
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return str(obj)


def envelope(data: Mapping[str, Any], *, ok: bool = True) -> dict[str, Any]:
    """The one shape of every ``--json`` result: ``{"ok": true|false, **data}`` (``data``'s own ``ok``, if
    any, is replaced). Errors have the same shape: ``{"ok": false, "error": {...}}``."""
    return {"ok": ok, **{k: v for k, v in data.items() if k != "ok"}}


def result(data: Mapping[str, Any] | Callable[[], Mapping[str, Any]], human: Callable[[Console], None], *,
           ok: bool = True) -> None:
    """Print a command's result: with ``--json`` the :func:`envelope` of ``data`` (``ok`` false when the
    command then fails, e.g. a batch with failed items), else the human rendering on stdout. ``data`` may be the
    function that makes it (a result's ``to_dict``: a curate of a million sources is not turned into dicts for a
    table)."""
    st = state()
    if st.json:
        emit_json(envelope(with_warnings(data() if callable(data) else data), ok=ok))
    else:
        human(st.stdout)


def with_warnings(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` whose ``warnings`` (where it has that list) also hold the warnings this invocation showed while the job
    ran that its result does not list (a validation render's tiny-preset note, a skipped non-finite step of a train):
    ``--json`` lists every warning stderr showed."""
    listed = data.get("warnings")
    said = [w for w in state().warned if not isinstance(listed, list) or w not in listed]
    if not isinstance(listed, list) or not said:
        return data
    return {**data, "warnings": [*listed, *said]}


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table of plain text: a cell (or the title) is never read as Rich markup, so a path ``take[2].mov`` or a
    description ``pixel [x, y]`` shows as written (a :class:`~rich.text.Text` cell keeps its style)."""
    t = Table(title=None if title is None else Text(title), title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in row))
    return t


def human_size(n: int | None) -> str:
    """``n`` bytes as people read them (``1.2 MB``, decimal units; ``?`` for unknown)."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def kv_table(title: str | None, mapping: Mapping[str, Any]) -> Table:
    return table(title, ["key", "value"], mapping.items())
