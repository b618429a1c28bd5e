"""Many clips, each with its own dub (``sync --batch LIST.csv``): the networks are loaded once and the face detector
kept from clip to clip, where a shell loop over ``lipsyncctl sync`` pays both for every clip. The rows run in this
process, or on the runner's workers (``--jobs``, ``--gpus``, ``--backend ray``: one set of networks a worker), and
an array job's ``--shard i/n`` takes its part of the list (:mod:`lipsyncctl.runner`, as a timeline's shots do).

The list is a CSV file with a header row naming its columns: ``video``, ``audio`` and ``output`` (required) and
``start``, ``end`` (optional: seconds of the video, empty for the whole clip), ``face`` (a face track id),
``face_at`` (``X,Y`` in pixels) and ``set`` (``KEY=VALUE`` items separated by spaces: this row's own settings, like a
timeline shot's options), separated by commas, semicolons or tabs (:data:`DELIMITERS`: the header row tells which).
Relative paths are relative to the list's folder; rows whose first cell starts with ``#`` are comments. Every other
setting (preset, ``--set``, flags) applies to every row; a row's ``face``, ``face_at`` and ``set`` win for it.

Each row is one :func:`~lipsyncctl.pipeline.clip.sync_clip` (written under a temporary name, then renamed): ``done``,
``skipped`` (its output exists and ``overwrite`` is off: a rerun after a failure or an interrupt does only what is
left; an output its ``OUT.run.yaml`` says was made from other inputs or settings is named as such), ``busy`` (another
run of the list is still rendering it: the result is not ok, its output is not there yet) or ``failed``
with the reason and hint of its error (bad media, no face, an output that cannot hold the codec, an output that is
not the file its record says its render wrote...). What stops every row stops the batch: a missing model, face detector (checked before the first clip)
or device, an interrupt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import (
    BusyError,
    CheckpointError,
    ConfigError,
    DeviceError,
    Interrupted,
    LipsyncError,
    MediaError,
    MissingModelError,
    MissingToolError,
    OutputExistsError,
    TakenError,
    UsageError,
)

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.pipeline.networks import Networks

#: the list's columns: the required ones, then the optional ones (``face``, ``face_at``, ``set``: this row's face
#: choice and ``--set`` items, as a timeline shot's options)
REQUIRED, OPTIONAL = ("video", "audio", "output"), ("start", "end", "face", "face_at", "set")
#: what can become of a row (``planned``: a dry run's row that would be rendered)
STATUSES = ("done", "planned", "skipped", "busy", "failed")


@dataclass(frozen=True)
class BatchRow:
    """One clip of the list: ``line`` is its line in the file (for messages)."""

    line: int
    video: Path
    audio: Path
    output: Path
    start: float | None = None
    end: float | None = None
    #: this row's overrides of the run's configuration (dotted key -> value): its face choice and ``set`` items
    options: dict[str, Any] = field(default_factory=dict)


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
                "start": r.start, "end": r.end, "options": r.options, "status": self.status, "reason": self.reason,
                "hint": self.hint,
                "frames": self.frames, "seconds": round(self.seconds, 3), "warnings": self.warnings}


@dataclass
class BatchResult:
    """Every row's :class:`BatchItem`, in the list's order."""

    list_file: Path
    items: list[BatchItem]
    shard: tuple[int, int] = (0, 1)

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def busy(self) -> list[BatchItem]:
        """Rows another run was still rendering: their outputs are not there yet."""
        return [i for i in self.items if i.status == "busy"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy

    def counts(self) -> dict[str, int]:
        return {s: sum(i.status == s for i in self.items) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {"batch": str(self.list_file), "shard": f"{self.shard[0]}/{self.shard[1]}", "counts": self.counts(),
                "items": [i.to_dict() for i in self.items]}


def _seconds(value: str, column: str, where: str) -> float | None:
    if not value.strip():
        return None
    text = value.strip()
    if text.count(",") == 1 and "." not in text:  # 12,5: a decimal comma (a semicolon list from a spreadsheet)
        text = text.replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{where}: {column} {value.strip()!r} is not a number of seconds >= 0",
                         hint="leave it empty for the whole clip")
    return number


#: what separates the cells: commas, or semicolons (a spreadsheet's CSV export where the decimal mark is a comma),
#: or tabs; the header row tells which
DELIMITERS = ",;\t"


def _delimiter(text: str) -> str:
    """The separator of the list ``text``: the one of :data:`DELIMITERS` its header row (the first line that is not
    blank or a comment) holds the most of, a comma when it holds none (a one-column row)."""
    header = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _options(values: dict[str, str], where: str) -> dict[str, Any]:
    """A row's overrides from its ``face`` (a track id), ``face_at`` (``X,Y`` or ``X Y`` in pixels) and ``set``
    (``KEY=VALUE`` items separated by spaces) cells; checked against the schema when the batch starts."""
    from lipsyncctl.config import face_overrides, overrides_from_sets, parse_point

    face, face_at, sets = (values.get(c, "") for c in ("face", "face_at", "set"))
    if face and face_at:
        raise UsageError(f"{where}: give either face or face_at, not both", hint="face: a track id; face_at: X,Y")
    track = point = None
    if face:
        if not face.isdigit():
            raise UsageError(f"{where}: face {face!r} is not a face track id", hint="a whole number >= 0, e.g. 1")
        track = int(face)
    if face_at and (point := parse_point(face_at)) is None:
        raise UsageError(f"{where}: face_at {face_at!r} is not X,Y in pixels", hint='e.g. "640,360" or 640 360')
    try:
        overrides = overrides_from_sets(sets.split())
    except ConfigError as exc:  # (a `set` cell without '=': the error named no line of the list)
        raise ConfigError(f"{where}: set: {exc.message}", hint=exc.hint) from None
    return overrides | face_overrides(track, point)


def _decoded(raw: bytes) -> str:
    """A list file's text: UTF-16 where it starts with that byte-order mark (Excel's "Unicode text"), else UTF-8
    (with or without its mark).

    Raises:
        UnicodeDecodeError: neither.
    """
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


#: the list file name that reads the list from standard input (``sync --batch -``)
STDIN = "-"


def read_batch(path: str | Path) -> list[BatchRow]:
    """The rows of the list file ``path`` (module doc); :data:`STDIN` reads standard input, relative paths then being
    relative to the working folder.

    Raises:
        MediaError: the file is missing or cannot be read.
        UsageError: it is not a UTF-8 CSV, lacks a required column, has an unknown or repeated column, a row without a
            video, audio or output, a bad time or face cell, ``end`` not after ``start``, no rows, two rows with one
            output, or an output that is a row's input.
    """
    path = Path(path)
    try:
        if str(path) == STDIN:  # a list made by the script that runs us: paths relative to the working folder
            import sys

            if sys.stdin is None:  # (`<&-`: an internal error, reading None)
                raise UsageError("--batch -: standard input is closed", hint="pipe the list in, or give its file: "
                                 "--batch LIST.csv")
            # its bytes, decoded as a file's are (UTF-16 with its mark was read in the locale's encoding)
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
            text, base = _decoded(raw), Path.cwd()
        else:  # a spreadsheet's UTF-8 export starts with a BOM; bytes, so that quoted line breaks stay as written
            text, base = _decoded(path.read_bytes()), path.parent
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
        lines = [(n, row) for n, row in enumerate(reader, 1)
                 if any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    except FileNotFoundError:
        raise MediaError(f"--batch {path}: no such file", hint="check the path given to --batch") from None
    except OSError as exc:  # a folder, no permission: exit 5 like a timeline or --segments file that cannot be read
        raise MediaError(f"--batch {path}: cannot read the list: {exc.strerror or exc}",
                         hint="check the path given to --batch") from None
    except UnicodeDecodeError as exc:  # (a byte offset means nothing to a user: the line does)
        wide = exc.encoding.startswith("utf-16")
        line = exc.object[: exc.start].decode(exc.encoding, "replace").count("\n") + 1
        raise UsageError(f"--batch {path}: not {'UTF-16' if wide else 'UTF-8'} text (line {line}: byte "
                         f"{exc.object[exc.start]:#04x}" + ("; cut short?)" if wide else "; a spreadsheet's 'CSV' in "
                         "the system's code page, such as Windows-1252?)"),
                         hint="save the list as 'CSV UTF-8' (or UTF-16 Unicode text)") from None
    except csv.Error as exc:
        raise UsageError(f"--batch {path}: not a CSV list: {exc}",
                         hint="a UTF-8 CSV file with a header row: video,audio,output[,start,end]") from None
    if not lines:
        raise UsageError(f"--batch {path}: the list is empty", hint="a header row video,audio,output, then a row a clip")
    header = [c.strip().lower() for c in lines[0][1]]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    twice = [c for c in dict.fromkeys(header) if header.count(c) > 1]
    if missing or unknown or twice:
        import difflib

        near = {c: difflib.get_close_matches(c, [k for k in REQUIRED + OPTIONAL if k not in header], n=1)
                for c in unknown}
        meant = [f"{c!r} (did you mean {near[c][0]!r}?)" for c in unknown if near[c]]
        what = (f"unknown column {meant[0]}" if meant  # a misspelt column first: it is the one missing too
                else f"no {', '.join(missing)} column" if missing else f"unknown column {unknown[0]!r}" if unknown
                else f"column {twice[0]!r} twice")
        raise UsageError(f"--batch {path}: {what} (line {lines[0][0]})",
                         hint=f"the first row names the columns: {', '.join(REQUIRED)} and optionally "
                              f"{', '.join(OPTIONAL)}")
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
        start, end = (_seconds(values.get(c, ""), c, where) for c in ("start", "end"))
        if start is not None and end is not None and end <= start:
            raise UsageError(f"{where}: end {end:g} is not after start {start:g}", hint="both are seconds of the video")
        video, audio, output = (base / Path(values[c]).expanduser() for c in REQUIRED)
        rows.append(BatchRow(n, video, audio, output, start, end, _options(values, where)))
    if not rows:
        raise UsageError(f"--batch {path}: no clips under the header", hint="one row a clip: video,audio,output")
    from lipsyncctl.pipeline.output import run_yaml_path

    seen: dict[Path, int] = {}
    records: dict[Path, tuple[int, Path]] = {}  # an output's record (x.mp4 and x.mkv share x.run.yaml)
    for r in rows:
        key = r.output.resolve()
        if key in seen:
            raise UsageError(f"--batch {path}: lines {seen[key]} and {r.line} write the same output {r.output}",
                             hint="give every clip its own output")
        seen[key] = r.line
        record = run_yaml_path(key)
        if record in records:
            line, other = records[record]
            raise UsageError(f"--batch {path}: lines {line} and {r.line} write {other} and {r.output}, which share "
                             f"one record ({record.name}): the second would fail after the first",
                             hint="give them different names (x_proxy.mp4, x_master.mov)")
        records[record] = (r.line, r.output)
    read = {f.resolve(): (r.line, kind) for r in rows for kind, f in (("audio", r.audio), ("video", r.video))}
    for r in rows:  # an output that is an input of the batch would be replaced (-y) or read half-written (--jobs)
        if (hit := read.get(r.output.resolve())) is not None:
            raise UsageError(f"--batch {path}: line {r.line} writes {r.output}, which line {hit[0]} reads as its "
                             f"{hit[1]}", hint="write the outputs to other files: the inputs are never replaced")
    return rows


@dataclass(frozen=True)
class BatchTask:
    """One row to render, as a worker gets it (picklable plain data: :mod:`lipsyncctl.runner.workers`);
    ``number`` is its place in this run's rows (``[3/12]`` in messages)."""

    row: BatchRow
    config: Config
    overwrite: bool
    number: int
    total: int

    @property
    def label(self) -> str:
        return _label(self.number, self.total, self.row)


def _label(number: int, total: int, row: BatchRow) -> str:
    """How the progress lines name row ``number`` of ``total``: ``[2/5] a.mov -> out/a.mov``."""
    return f"[{number}/{total}] {row.video.name} -> {row.output}"


#: errors that no row could get past (a model or its file, ffmpeg, the device): the batch stops with them
STOPS: tuple[type[LipsyncError], ...] = (MissingModelError, MissingToolError, DeviceError, CheckpointError)


@dataclass(frozen=True)
class _Outcome:
    """What :func:`execute_row` hands back: the row's item, or what stops the whole batch (one of :data:`STOPS`, as
    its class name, message and hint: re-raised in the process that runs the batch, whichever process ran the
    row)."""

    item: BatchItem
    stop: tuple[str, str, str] | None = None

    def raise_stop(self) -> None:
        if self.stop is not None:
            name, message, hint = self.stop
            raise {c.__name__: c for c in STOPS}[name](message, hint)


def execute_row(task: BatchTask, cache: dict[str, Any], device: str | None) -> _Outcome:
    """The runner's executor: :func:`~lipsyncctl.pipeline.clip.sync_clip` of one row with the networks of
    ``cache``, loaded on first use for this device (so a worker loads them once). Never raises for a row that
    fails (its item says why), except on an interrupt."""
    from lipsyncctl import progress
    from lipsyncctl.media.container import exists
    from lipsyncctl.pipeline.clip import check_found, sync_clip
    from lipsyncctl.pipeline.networks import cached_networks

    row, t0 = task.row, time.perf_counter()
    # which clip the stage bars are about (the task's name, [2/5] b.mov, starts it: run_tasks names its messages)
    progress.message(f"rendering {task.row.video.name} -> {task.row.output}")
    config = task.config.with_overrides({"inference.device": device}) if device else task.config
    if not task.overwrite and exists(row.output):  # made since the rows were listed (another run of the list)
        return _Outcome(BatchItem(row, *_skip_reason(row, task.config)))
    try:
        check_found(row.video, row.audio)  # a row whose file is missing fails before the networks load for it
        res = sync_clip(row.video, row.audio, row.output, config, start=row.start, end=row.end,
                        networks=cached_networks(cache, config), overwrite=task.overwrite)
    except (BusyError, TakenError) as exc:  # another run of the list (a shard, an overlapping rerun) has this row:
        # made meanwhile, skipped; still being rendered, busy (its output is not there yet: the run is not ok)
        busy = isinstance(exc, BusyError)
        said = f"another run is rendering it now ({exc.message})" if busy else \
            "another run made it meanwhile (left as it is)"
        return _Outcome(BatchItem(row, "busy" if busy else "skipped", said,
                                  "wait for that run to end (a rerun then skips it), or pass --overwrite/-y to replace "
                                  "it once that run is done", seconds=time.perf_counter() - t0))
    except OutputExistsError as exc:
        if exists(row.output):  # made by another run of the list while the networks loaded for this row
            return _Outcome(BatchItem(row, *_skip_reason(row, task.config), seconds=time.perf_counter() - t0))
        # its matte alone (a run killed between the two renames): a failure to look at, not a row done
        return _Outcome(BatchItem(row, "failed", exc.message, exc.hint, seconds=time.perf_counter() - t0))
    except STOPS as exc:  # a model, ffmpeg or a device: no row could run
        return _Outcome(BatchItem(row, "failed", exc.message, exc.hint),
                        stop=(type(exc).__name__, exc.message, exc.hint))
    except LipsyncError as exc:
        return _Outcome(BatchItem(row, "failed", exc.message, exc.hint, seconds=time.perf_counter() - t0))
    except Exception as exc:  # noqa: BLE001 - a GPU out of memory, a decoder's error...: this row fails, the others
        # go on and the table says why (Ctrl-C and SIGTERM, BaseExceptions, still stop the batch)
        return _Outcome(BatchItem(row, "failed", f"{type(exc).__name__}: {exc}", "an internal error: please "
                                  "report it with the row's media", seconds=time.perf_counter() - t0))
    return _Outcome(BatchItem(row, "done", frames=res.frames, seconds=time.perf_counter() - t0,
                              warnings=list(res.warnings)))


def _clear_dead(output: Path, *, swept: set[Path] | None = None) -> None:
    """Remove what a dead run left of ``output``: its hidden temporaries (of a pid now gone) and its lock file (the
    kernel let go of the lock; a live run's are kept). ``swept``: folders swept already (every dead temporary of a
    folder goes at once: a rerun skipping a thousand rows of one folder listed it a thousand times)."""
    from lipsyncctl.media.atomic import sweep_temps
    from lipsyncctl.pipeline.output import run_yaml_path
    from lipsyncctl.runner.lock import clear_output_lock

    if swept is None:
        sweep_temps(output.parent, stem=output.stem)
    elif output.parent not in swept:
        swept.add(output.parent)
        sweep_temps(output.parent)
    clear_output_lock(run_yaml_path(output))


def _lost_row(task: BatchTask, why: str) -> _Outcome:
    """The outcome of a row whose worker process died rendering it (the others go on): failed, saying so. Its
    partial output (hidden temporaries of a pid now gone) and its lock file are removed now, not by the next run: a
    farm that does not rerun a failed list would ship a folder holding them."""
    _clear_dead(task.row.output)
    return _Outcome(BatchItem(task.row, "failed", why, "a clip that needs more memory than the machine has: "
                              "rerun it with fewer --jobs (check `dmesg` for the out-of-memory killer)"))


def _unwritable(output: Path, *, probe: bool, seen: dict[Path, str | None]) -> str | None:
    """Why ``output`` cannot be written (:func:`~lipsyncctl.media.atomic.check_writable`), or None; asked once a folder
    (``seen``: a probe file is made and removed there)."""
    from lipsyncctl.media.atomic import check_writable

    if output.parent not in seen:
        try:
            check_writable(output, probe=probe)
            seen[output.parent] = None
        except OSError as exc:
            seen[output.parent] = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return seen[output.parent]


def _skip_reason(row: BatchRow, config: Config) -> tuple[str, str, str]:
    """The status of a row whose output exists, why, and the hint: ``skipped``, the output's ``OUT.run.yaml`` naming
    the inputs and the settings that made it (when they are not this row's, the first few differences are said: a
    rerun with new settings would otherwise keep the old outputs in silence); ``failed`` where the output is not the
    file the record says its render wrote (emptied or cut short since, by a copy or a disk that filled: a script must
    not take it for a finished dub)."""
    from lipsyncctl.media.atomic import file_size, human_bytes
    from lipsyncctl.pipeline.output import read_record, run_yaml_path
    from lipsyncctl.runner.store import same_content

    made = read_record(row.output)
    if made is None:  # a foreign or truncated file there would pass for a finished dub: said
        return "skipped", (f"the output exists, without the {run_yaml_path(row.output).name} record a render writes "
                           "beside it (not made by lipsyncctl?)"), "check it, or pass --overwrite/-y to render it"
    inputs = made.get("inputs") if isinstance(made.get("inputs"), dict) else {}
    contents = made.get("contents") if isinstance(made.get("contents"), dict) else {}
    if same_content(wrote := contents.get("output"), row.output) is False:  # (a record older than this: as before)
        sizes = f"{human_bytes(file_size(row.output))}; the render wrote {human_bytes(int(wrote.get('size') or 0))}"
        return "failed", f"the output is not the file its render wrote ({sizes}): emptied, cut short or replaced since", \
            "pass --overwrite/-y to render it again, or move it away"
    changes = []
    for name, path in (("video", row.video), ("audio", row.audio)):
        if not _same_input(inputs.get(name), path):
            changes.append(f"{name} {inputs.get(name)} (this row: {path})")
        elif same_content(contents.get(name), path) is False:  # (a record older than contents: as before)
            changes.append(f"{name} {path} changed since (another file under its name)")
    from lipsyncctl.runner.store import ADDED_KEYS, config_for_key

    made_config = made.get("config") if isinstance(made.get("config"), dict) else {}
    # the settings that change an output's pixels (the render cache's: not the device, nor another command's
    # section, nor a default a version changed for what it does not touch); keys one side lacks are a version's
    # new or retired settings, not a choice of the user
    from lipsyncctl.config import dotted

    old, new = dotted(config_for_key(made_config)), dotted(config_for_key(config.to_dict()))
    # a setting that came later is at its default where a record lacks it (config_for_key drops it there too)
    old, new = {**ADDED_KEYS, **old}, {**ADDED_KEYS, **new}
    changes += [f"{key} {old[key]!r} (this run: {new[key]!r})" for key in sorted(old.keys() & new.keys())
                if old[key] != new[key]]
    if not changes:
        return "skipped", "the output exists", "pass --overwrite/-y to replace it"
    listed = "; ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
    return "skipped", f"the output exists, made with other inputs or settings: {listed}", \
        "pass --overwrite/-y to render it again with this run's"


def _same_input(recorded: Any, path: Path) -> bool:
    """Whether the input a run.yaml records is the file ``path`` names (a path recorded from another working folder,
    or given another way, names the same file: the same absolute path, or the same file on disk)."""
    if recorded is None:
        return False
    made = Path(str(recorded))
    if made == path:
        return True
    try:
        return made.resolve() == path.resolve() or (made.exists() and path.exists() and made.samefile(path))
    except (OSError, RuntimeError):  # unreadable, a symlink loop
        return False


def sync_batch(rows: list[BatchRow], config: Config, *, list_file: Path, overwrite: bool = False,
               networks: Networks | None = None, dry_run: bool = False, jobs: int = 1, gpus: Sequence[str] = (),
               shard: tuple[int, int] = (0, 1), backend: str = "local") -> BatchResult:
    """Sync every row (module doc). ``shard`` ``(i, n)``: only part ``i`` of ``n`` of the rows (the same rows
    for every run of the list, finished or not). Rows run in this process, the networks loaded once, before the
    first row to render (``networks``: already loaded), or with ``jobs``/``gpus``/``backend`` on worker
    processes or Ray, one set of networks a worker (:func:`~lipsyncctl.runner.workers.run_tasks`).

    A row's ``options`` (its face choice, its ``set`` items) apply to it alone, each row's configuration checked
    before any work (:class:`ConfigError` naming the line).

    Raises what stops every row (:data:`STOPS`: a model, ffmpeg, the device; an interrupt: the rows finished by then
    are kept and a rerun skips them); a row's own failure is its item's ``reason``. ``dry_run``: nothing is loaded or
    written; a row is ``planned`` when its inputs are usable media (probed), else ``failed``, or ``skipped``."""
    from lipsyncctl import progress
    from lipsyncctl.faces.detect import usable_backend
    from lipsyncctl.media.container import exists
    from lipsyncctl.pipeline.clip import check_found, check_point, grid_frames, probe_inputs
    from lipsyncctl.pipeline.output import check_output
    from lipsyncctl.pipeline.plan import select_range
    from lipsyncctl.runner.devices import check_gpus
    from lipsyncctl.runner.shards import take_shard
    from lipsyncctl.runner.workers import check_backend, run_tasks

    check_backend(backend)
    if not dry_run and backend != "ray":  # (Ray's workers have devices of their own)
        check_gpus(gpus)  # exit 4 before any row
    mine = take_shard(rows, shard)
    # each row's configuration, checked before any work (ConfigError, exit 3, naming the line)
    configs = {r.line: config.with_overrides(r.options, source=f"--batch {list_file}, line {r.line}") for r in mine}
    for r in mine:  # an output whose container cannot hold the codec would fail at its turn: say so now
        try:
            check_output(r.output, configs[r.line].output)
        except (ConfigError, UsageError) as exc:
            raise type(exc)(f"--batch {list_file}, line {r.line}: {exc.message}", exc.hint) from None
    for name in dict.fromkeys([config.faces.backend, *(c.faces.backend for c in configs.values())]):
        usable_backend(name)  # a missing detector would fail every row: say so before any work
    items: dict[int, BatchItem] = {}
    tasks: list[BatchTask] = []
    swept: set[Path] = set()  # output folders swept of a dead run's temporaries
    writable: dict[Path, str | None] = {}  # output folders checked: why not writable, or None
    for k, row in enumerate(mine, 1):
        if exists(row.output) and not overwrite:  # (an image sequence's: any of its files)
            status, reason, hint = _skip_reason(row, configs[row.line])
            items[row.line] = BatchItem(row, status, reason, hint)
            if not dry_run:  # a killed re-render's leftovers went with the folder to delivery (rows rendered swept)
                _clear_dead(row.output, swept=swept)
            progress.message(f"{_label(k, len(mine), row)}: {status} ({reason})")
        elif (unwritable := _unwritable(row.output, probe=not dry_run, seen=writable)) is not None:  # (a read-only mount: each row
            items[row.line] = BatchItem(row, "failed", unwritable, "check the path and permissions")  # failed after
            progress.message(f"{_label(k, len(mine), row)}: failed: {unwritable}")  # its networks loaded, "internal")
        elif dry_run:
            try:
                inputs = probe_inputs(row.video, row.audio, configs[row.line].sync.audio_stream,
                                      configs[row.line].sync.sequence_fps)
                check_point(configs[row.line], inputs.info.video.display_size)  # a run would refuse it at once
                select_range(grid_frames(inputs.info.video), inputs.info.video.nominal_fps, row.start, row.end)
            except LipsyncError as exc:
                items[row.line] = BatchItem(row, "failed", exc.message, exc.hint)
            else:
                items[row.line] = BatchItem(row, "planned")
        else:
            try:  # a missing file fails here: a rerun of rows that all do starts no worker processes (9.5 s vs 2 s)
                check_found(row.video, row.audio)
            except LipsyncError as exc:
                items[row.line] = BatchItem(row, "failed", exc.message, exc.hint)
                progress.message(f"{_label(k, len(mine), row)}: failed: {exc.message}")
                continue
            tasks.append(BatchTask(row, configs[row.line], overwrite, k, len(mine)))
    if tasks and (jobs > 1 or len(gpus) > 1 or backend != "local"):
        from lipsyncctl.pipeline.networks import resolve_files

        for model in {json.dumps(t.config.model.model_dump(mode="json"), sort_keys=True): t.config.model
                      for t in tasks}.values():
            resolve_files(model)  # a missing model: exit 4 before any worker starts

    def on_done(task: BatchTask, outcome: _Outcome) -> None:
        outcome.raise_stop()
        item = items[task.row.line] = outcome.item
        said = (f"done, {item.frames} frame{'s' * (item.frames != 1)} in {item.seconds:.1f} s"
                if item.status == "done" else f"{item.status}: {item.reason}")  # (skipped: busy or made meanwhile)
        progress.message(f"{task.label}: {said}")

    cache: dict[str, Any] = {}
    if networks is not None:  # passed in: used for every row of this process
        from lipsyncctl.pipeline.networks import networks_key

        cache[networks_key(config)] = networks
    from lipsyncctl.folders import missing_folders, remove_empty

    # the output folders the rows make: a row's own made them and removes them when it fails, but with --jobs two
    # rows of one new folder race (the one that made it removed it before the other's temporaries were gone, and
    # the other's did not count it as its own): those left empty go when the batch ends, however it ends
    created = missing_folders(*{task.row.output.parent for task in tasks})
    try:
        run_tasks(tasks, execute_row, on_done, jobs=jobs, gpus=gpus, backend=backend, label="clips", cache=cache,
                  lost=_lost_row, name=lambda t: f"[{t.number}/{t.total}] {t.row.output.name}")
    except KeyboardInterrupt:
        remove_empty(created)
        done = sum(i.status == "done" for i in items.values())
        skipped = sum(i.status == "skipped" for i in items.values())
        so_far = BatchResult(list_file, [items[r.line] for r in mine if r.line in items], shard=shard)
        raise Interrupted(f"interrupted: {done} of {len(tasks)} clip(s) to render finished (kept)"
                          + (f", {skipped} skipped as done before" if skipped else ""),
                          "the same command renders the rest (finished outputs are skipped)",
                          partial=so_far.to_dict()) from None
    remove_empty(created)  # (every row that failed in a folder made for it)
    return BatchResult(list_file, [items[r.line] for r in mine if r.line in items], shard=shard)
