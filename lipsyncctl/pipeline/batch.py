"""Many clips, each with its own dub, in one process (``sync --batch LIST.csv``): the networks are loaded once and
the face detector kept from clip to clip, where a shell loop over ``lipsyncctl sync`` pays both for every clip.

The list is a CSV file with a header row naming its columns: ``video``, ``audio`` and ``output`` (required) and
``start``, ``end`` (optional: seconds of the video, empty for the whole clip). Relative paths are relative to the
list's folder; rows whose first cell starts with ``#`` are comments. Every other setting (preset, ``--set``,
flags) applies to every row.

Each row is one :func:`~lipsyncctl.pipeline.clip.sync_clip` (written under a temporary name, then renamed): ``done``,
``skipped`` (its output exists and ``overwrite`` is off: a rerun after a failure or an interrupt does only what is
left) or ``failed`` with the reason and hint of its error (bad media, no face, an output that cannot hold the
codec...). What stops every row stops the batch: a missing model, face detector (checked before the first clip)
or device, an interrupt.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import LipsyncError, MediaError, MissingModelError, UsageError

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.pipeline.networks import Networks

#: the list's columns: the required ones, then the optional ones
REQUIRED, OPTIONAL = ("video", "audio", "output"), ("start", "end")
#: what can become of a row (``planned``: a dry run's row that would be rendered)
STATUSES = ("done", "planned", "skipped", "failed")


@dataclass(frozen=True)
class BatchRow:
    """One clip of the list: ``line`` is its line in the file (for messages)."""

    line: int
    video: Path
    audio: Path
    output: Path
    start: float | None = None
    end: float | None = None


@dataclass
class BatchItem:
    """What became of one row: ``status`` one of :data:`STATUSES` (``reason`` and ``hint`` say why)."""

    row: BatchRow
    status: str
    reason: str = ""
    hint: str = ""
    frames: int | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        return {"line": r.line, "video": str(r.video), "audio": str(r.audio), "output": str(r.output),
                "start": r.start, "end": r.end, "status": self.status, "reason": self.reason, "hint": self.hint,
                "frames": self.frames, "seconds": round(self.seconds, 3), "warnings": self.warnings}


@dataclass
class BatchResult:
    """Every row's :class:`BatchItem`, in the list's order."""

    list_file: Path
    items: list[BatchItem]

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {s: sum(i.status == s for i in self.items) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {"batch": str(self.list_file), "counts": self.counts(), "items": [i.to_dict() for i in self.items]}


def _seconds(value: str, column: str, where: str) -> float | None:
    if not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{where}: {column} {value.strip()!r} is not a number of seconds >= 0",
                         hint="leave it empty for the whole clip")
    return number


def read_batch(path: str | Path) -> list[BatchRow]:
    """The rows of the list file ``path`` (module doc).

    Raises:
        MediaError: the file is missing or cannot be read.
        UsageError: it is not a UTF-8 CSV, lacks a required column, has an unknown or repeated column, a row without a
            video, audio or output, a bad time, ``end`` not after ``start``, no rows, or two rows with one output.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's UTF-8 export starts with a BOM
            lines = [(n, row) for n, row in enumerate(csv.reader(fh), 1)
                     if any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    except FileNotFoundError:
        raise MediaError(f"--batch {path}: no such file", hint="check the path given to --batch") from None
    except OSError as exc:  # a folder, no permission: exit 5 like a timeline or --segments file that cannot be read
        raise MediaError(f"--batch {path}: cannot read the list: {exc.strerror or exc}",
                         hint="check the path given to --batch") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"--batch {path}: not a CSV list: {exc}",
                         hint="a UTF-8 CSV file with a header row: video,audio,output[,start,end]") from None
    if not lines:
        raise UsageError(f"--batch {path}: the list is empty", hint="a header row video,audio,output, then a row a clip")
    header = [c.strip().lower() for c in lines[0][1]]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    twice = [c for c in dict.fromkeys(header) if header.count(c) > 1]
    if missing or unknown or twice:
        what = (f"no {', '.join(missing)} column" if missing else f"unknown column {unknown[0]!r}" if unknown
                else f"column {twice[0]!r} twice")
        raise UsageError(f"--batch {path}: {what} (line {lines[0][0]})",
                         hint=f"the first row names the columns: {', '.join(REQUIRED)} and optionally "
                              f"{', '.join(OPTIONAL)}")
    base = path.parent
    rows: list[BatchRow] = []
    for n, cells in lines[1:]:
        where = f"--batch {path}, line {n}"
        values = dict(zip(header, [c.strip() for c in cells] + [""] * (len(header) - len(cells)), strict=False))
        if len(cells) > len(header):
            raise UsageError(f"{where}: {len(cells)} cells for {len(header)} columns",
                             hint="quote a path that contains a comma")
        empty = [c for c in REQUIRED if not values[c]]
        if empty:
            raise UsageError(f"{where}: no {', '.join(empty)}", hint="every row names its video, audio and output")
        start, end = (_seconds(values.get(c, ""), c, where) for c in OPTIONAL)
        if start is not None and end is not None and end <= start:
            raise UsageError(f"{where}: end {end:g} is not after start {start:g}", hint="both are seconds of the video")
        video, audio, output = (base / Path(values[c]).expanduser() for c in REQUIRED)
        rows.append(BatchRow(n, video, audio, output, start, end))
    if not rows:
        raise UsageError(f"--batch {path}: no clips under the header", hint="one row a clip: video,audio,output")
    seen: dict[Path, int] = {}
    for r in rows:
        key = r.output.resolve()
        if key in seen:
            raise UsageError(f"--batch {path}: lines {seen[key]} and {r.line} write the same output {r.output}",
                             hint="give every clip its own output")
        seen[key] = r.line
    return rows


def sync_batch(rows: list[BatchRow], config: Config, *, list_file: Path, overwrite: bool = False,
               networks: Networks | None = None, dry_run: bool = False) -> BatchResult:
    """Sync every row (module doc), the networks loaded once, before the first clip to render (``networks``:
    already loaded). Raises what stops every row (:class:`MissingModelError`, an interrupt); a row's own failure is
    its item's ``reason``. ``dry_run``: nothing is loaded or written; a row is ``planned`` when its inputs are
    usable media (probed), else ``failed``, or ``skipped``."""
    from lipsyncctl import progress
    from lipsyncctl.faces.detect import usable_backend
    from lipsyncctl.pipeline.clip import probe_inputs, sync_clip

    usable_backend(config.faces.backend)  # a missing detector would fail every row: say so before any work
    items: list[BatchItem] = []
    for k, row in enumerate(rows, 1):
        label = f"[{k}/{len(rows)}] {row.video.name} -> {row.output}"
        if row.output.exists() and not overwrite:
            items.append(BatchItem(row, "skipped", "the output exists", "pass --overwrite/-y to replace it"))
            progress.message(f"{label}: skipped (exists)")
            continue
        if dry_run:
            try:
                probe_inputs(row.video, row.audio)
            except LipsyncError as exc:
                items.append(BatchItem(row, "failed", exc.message, exc.hint))
                continue
            items.append(BatchItem(row, "planned"))
            continue
        progress.message(label)
        t0 = time.perf_counter()
        try:
            if networks is None:
                from lipsyncctl.pipeline.networks import load_networks

                networks = load_networks(config)
            res = sync_clip(row.video, row.audio, row.output, config, start=row.start, end=row.end,
                            networks=networks, overwrite=overwrite)
        except MissingModelError:  # a model, ffmpeg or a device: no row could run
            raise
        except LipsyncError as exc:
            items.append(BatchItem(row, "failed", exc.message, exc.hint, seconds=time.perf_counter() - t0))
            progress.message(f"{label}: failed: {exc.message}")
            continue
        items.append(BatchItem(row, "done", frames=res.frames, seconds=time.perf_counter() - t0,
                               warnings=list(res.warnings)))
    return BatchResult(list_file, items)
