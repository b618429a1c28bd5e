"""``lipsyncctl curate forget DATA SOURCE...``: take sources out of a curated dataset (a speaker who withdrew their
consent, footage found unusable, a file that is gone for good and keeps failing the report).

Each source given (its id, its path as curated, or a folder: every source curated from under it) loses its records
and every file curate made of it in DATA: its 16 kHz audio, its aligned and synced clips with their matrices, its
clips' features. The views are then rebuilt from the records left (as ``curate report`` does), so ``train.txt`` no
longer lists its clips. The source file itself is never touched: curating it again (it is still among the inputs of
a later ``curate RAW -o DATA``) brings it back, so remove it from the inputs too.

A features file is named by its audio's content: a clip of another source with the very same sound shares it, and
loses it with the forgotten one; the next ``curate`` run over that source makes it again (train says so first).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from lipsyncctl.config import Config
from lipsyncctl.curation.outcome import CurateResult
from lipsyncctl.curation.records import SOURCE_FOLDERS, RecordStore, SourceRecord
from lipsyncctl.errors import UsageError


def forget_sources(data: str | Path, sources: Iterable[str | Path], config: Config, *, wait: bool = False,
                   dry_run: bool = False) -> CurateResult:
    """Remove ``sources`` from the curated ``data`` (module doc) and rebuild its views with ``config.curate``;
    returns the rebuilt views' result, its ``forgotten`` the sources taken out (``id``, ``path``, ``files``:
    how many files of DATA went). ``dry_run``: which sources and how many files would go, and the views'
    decisions without them; nothing removed or written.

    Raises:
        MediaError: ``data`` is not there (exit 5).
        UsageError: ``data`` holds no curate records; a source given matches none of them (nothing is removed).
        BusyError: another run is writing to ``data`` (not with ``wait``).
    """
    from lipsyncctl.curation.job import check_curated, rebuild_views, report_curation
    from lipsyncctl.runner.lock import FolderLock, folder_lock

    t0 = time.perf_counter()
    data = Path(data).absolute()
    store = RecordStore.of(data)
    check_curated(data)
    given = [str(s) for s in sources]
    if not given:
        raise UsageError("give the sources to forget: lipsyncctl curate forget DATA SOURCE...",
                         hint="a source's id or path as curated (report.json lists both), or a folder of them")
    if dry_run:
        FolderLock(data, wait=wait, command="lipsyncctl curate forget --dry-run").check_free()
        chosen = _match(store, given)
        result = report_curation(data, config, dry_run=True, without=frozenset(rec.id for rec in chosen))
        result.forgotten = [{"id": rec.id, "path": rec.path, "files": len(list(_files(store, rec)))} for rec in chosen]
        result.seconds = time.perf_counter() - t0
        return result
    with folder_lock(data, wait=wait):
        chosen = _match(store, given)  # (read under the lock: a run could have added sources meanwhile)
        forgotten = []
        for rec in chosen:
            files = list(_files(store, rec))
            _remove(store, rec, files)
            forgotten.append({"id": rec.id, "path": rec.path, "files": len(files)})
        result = rebuild_views(data, config)  # (every source forgotten: empty views)
    result.forgotten = forgotten
    result.seconds = time.perf_counter() - t0
    return result


def _match(store: RecordStore, given: list[str]) -> list[SourceRecord]:
    """The stored sources each of ``given`` names: an id, a path as curated (absolute, or relative to the working
    folder), or a folder holding sources (its path a prefix of theirs); in the records' order, each once.

    Raises:
        UsageError: one given names no stored source (nothing is removed then).
    """
    records = [SourceRecord.from_dict(raw) for rid in store.ids("sources")
               if (raw := store.load("sources", rid)) is not None]
    chosen: dict[str, SourceRecord] = {}
    for item in given:
        path = os.path.normpath(os.path.abspath(item))
        hits = [r for r in records if item == r.id or os.path.normpath(r.path) == path
                or os.path.normpath(r.path).startswith(path.rstrip(os.sep) + os.sep)]
        if not hits:
            raise UsageError(f"{item}: no source of {store.data} is this id or path, or under this folder",
                             hint="report.json lists every source's id and path; nothing was removed")
        chosen.update((r.id, r) for r in hits)
    return sorted(chosen.values(), key=lambda r: r.id)


def _files(store: RecordStore, rec: SourceRecord) -> Iterator[Path]:
    """Every file curate made of the source ``rec`` in DATA: what its stages' results name (its audio, its clips'
    aligned and synced files, matrices and features) and what is in its own folders (:data:`SOURCE_FOLDERS`)."""
    from lipsyncctl.curation.clipstages import CLIP_STAGES

    assert store.data is not None
    seen: set[str] = set()
    named = [v for result in rec.stages.values() for v in result.data.values() if isinstance(v, str)]
    for clip in store.clip_records(rec.id).values():
        for stage in CLIP_STAGES:
            result = clip.stages.get(stage.name)
            if result is not None and result.error is None:
                named += stage.outputs(result.data)
    for name in SOURCE_FOLDERS:
        with contextlib.suppress(OSError):
            named += [str(p) for p in (Path(store.data) / name / rec.id).rglob("*") if p.is_file()]
    for path in named:  # (only files inside DATA: a stored value that names the source itself, say, is not one)
        if path.startswith(store.data + os.sep) and path not in seen and os.path.isfile(path):
            seen.add(path)
            yield Path(path)


def _remove(store: RecordStore, rec: SourceRecord, files: list[Path]) -> None:
    """Remove ``rec``'s records first (an interrupted forget leaves files no record names, which nothing reads,
    rather than records naming files that are gone), then its files and its own folders."""
    assert store.data is not None
    for clip_id in store.ids(f"clips/{rec.id}"):
        store.delete(f"clips/{rec.id}", clip_id)
    with contextlib.suppress(OSError):
        (store.root / "clips" / rec.id).rmdir()
    store.delete("sources", rec.id)
    for path in files:
        path.unlink(missing_ok=True)
    for name in SOURCE_FOLDERS:
        shutil.rmtree(Path(store.data) / name / rec.id, ignore_errors=True)


__all__ = ["forget_sources"]
