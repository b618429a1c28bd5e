"""``lipsyncctl curate forget DATA SOURCE...``: take sources out of a curated dataset (a speaker who withdrew their
consent, footage found unusable, a file that is gone for good and keeps failing the report).

Each source given (its id, its path as curated, or a folder: every source curated from under it) loses its records
and every file curate made of it in DATA: its 16 kHz audio, its aligned and synced clips with their matrices, its
clips' features. The views are then rebuilt from the records left (as ``curate report`` does), so ``train.txt`` no
longer lists its clips. The source file itself is never touched: curating it again (it is still among the inputs of
a later ``curate RAW -o DATA``) brings it back, so remove it from the inputs too.

A features file is named by its audio's content: a clip of another source with the very same sound (multicam
angles with one production sound) shares it, and keeps it. The views are decided with the settings they were
written with (``curate.yaml``), unless others are given. The records go last: an interrupted forget is finished by
the same command.
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


def forget_sources(data: str | Path, sources: Iterable[str | Path], config: Config | None = None, *,
                   wait: bool = False, dry_run: bool = False) -> CurateResult:
    """Remove ``sources`` from the curated ``data`` (module doc) and rebuild its views with ``config.curate``
    (None: the settings the views were last written with, ``curate.yaml``: forgetting a source changes no other
    decision); returns the rebuilt views' result, its ``forgotten`` the sources taken out (``id``, ``path``,
    ``files``: how many files of DATA went). ``dry_run``: which sources and how many files would go, and the views'
    decisions without them; nothing removed or written. An interrupted forget is finished by the same command (the
    records go last).

    Raises:
        MediaError: ``data`` is not there (exit 5).
        UsageError: ``data`` holds no curate records; a source given matches none of them (nothing is removed).
        BusyError: another run is writing to ``data`` (not with ``wait``).
    """
    from lipsyncctl.curation.job import check_curated, rebuild_views
    from lipsyncctl.curation.rebuild import rebuild, views_config
    from lipsyncctl.runner.lock import FolderLock, folder_lock

    t0 = time.perf_counter()
    data = Path(data).absolute()
    store = RecordStore.of(data)
    check_curated(data)
    given = [str(s) for s in sources]
    if not given:
        raise UsageError("give the sources to forget: lipsyncctl curate forget DATA SOURCE...",
                         hint="a source's id or path as curated (report.json lists both), or a folder of them")
    config = config if config is not None else views_config(data)
    if dry_run:  # (nothing written, not even a lock file: a run writing DATA is waited for or refused)
        FolderLock(data, wait=wait, command="lipsyncctl curate forget --dry-run").check_free()
        chosen = _match(store, given)
        shared = _shared(store, chosen)
        result = rebuild(data, config, until="report", write=False, dry_run=True,
                         without=frozenset(rec.id for rec in chosen))
        result.forgotten = [{"id": rec.id, "path": rec.path, "files": len(_files(store, rec, shared))}
                            for rec in chosen]
        result.seconds = time.perf_counter() - t0
        return result
    with folder_lock(data, wait=wait):
        chosen = _match(store, given)  # (read under the lock: a run could have added sources meanwhile)
        shared = _shared(store, chosen)
        forgotten = []
        for rec in chosen:
            files = _files(store, rec, shared)
            _remove(store, rec, files)
            forgotten.append({"id": rec.id, "path": rec.path, "files": len(files)})
        result = rebuild_views(data, config)  # (every source forgotten: empty views)
    result.forgotten = forgotten
    result.seconds = time.perf_counter() - t0
    return result


def _match(store: RecordStore, given: list[str]) -> list[SourceRecord]:
    """The stored sources each of ``given`` names: an id, a path as curated (absolute, or relative to the working
    folder; through links too), or a folder holding sources (its path a prefix of theirs); by id, each once. A
    record whose id is not its file's (damaged, edited) is none: its id names the folders removed.

    Raises:
        UsageError: one given names no stored source (nothing is removed then).
    """
    records = []
    for rid in store.ids("sources"):
        raw = store.load("sources", rid)
        if raw is not None and raw.get("id") == rid and rid not in ("", ".", "..") and os.sep not in rid:
            records.append(SourceRecord.from_dict(raw))
    chosen: dict[str, SourceRecord] = {}
    for item in given:
        spellings = {os.path.normpath(os.path.abspath(item)), os.path.realpath(item)}
        hits = [r for r in records if item == r.id or any(_under(r.path, p) for p in spellings)]
        if not hits:
            raise UsageError(f"{item}: no source of {store.data} is this id or path, or under this folder",
                             hint="report.json lists every source's id and path; nothing was removed")
        chosen.update((r.id, r) for r in hits)
    return sorted(chosen.values(), key=lambda r: r.id)


def _under(recorded: str, path: str) -> bool:
    """Whether the source file ``recorded`` is ``path`` or inside the folder ``path`` (either spelling of it)."""
    return any(p == path or p.startswith(path.rstrip(os.sep) + os.sep)
               for p in {os.path.normpath(recorded), os.path.realpath(recorded)})


def _shared(store: RecordStore, chosen: list[SourceRecord]) -> set[str]:
    """The files of the ``chosen`` sources' clips that a clip of another source names too (a features file is named
    by its sound's content: multicam angles with one production sound share theirs): kept. One pass over the other
    sources' clip records, a source at a time."""
    mine = {path for rec in chosen for path in _clip_files(store, rec.id)}
    ids = {rec.id for rec in chosen}
    return {path for rid in store.each_id("sources") if rid not in ids for path in _clip_files(store, rid)
            if path in mine}


def _clip_files(store: RecordStore, source: str) -> Iterator[str]:
    """The files the stored clip stages of ``source``'s clips name (:attr:`ClipStage.outputs`)."""
    from lipsyncctl.curation.clipstages import CLIP_STAGES

    for clip in store.clip_records(source).values():
        for stage in CLIP_STAGES:
            result = clip.stages.get(stage.name)
            if result is not None and result.error is None:
                yield from stage.outputs(result.data)


def _files(store: RecordStore, rec: SourceRecord, shared: set[str]) -> list[Path]:
    """Every file curate made of the source ``rec`` in DATA but those another source's clips name (``shared``):
    what its stages' results name (its audio, its clips' aligned and synced files, matrices and features) and what
    is in its own folders (:data:`SOURCE_FOLDERS`)."""
    assert store.data is not None
    named = [v for result in rec.stages.values() for v in result.data.values() if isinstance(v, str)]
    named += _clip_files(store, rec.id)
    for name in SOURCE_FOLDERS:
        with contextlib.suppress(OSError):
            named += [str(p) for p in (Path(store.data) / name / rec.id).rglob("*") if p.is_file()]
    seen: dict[str, Path] = {}
    for path in named:  # (only files inside DATA: a stored value that names the source itself, say, is not one)
        if path.startswith(store.data + os.sep) and path not in shared and os.path.isfile(path):
            seen.setdefault(path, Path(path))
    return list(seen.values())


def _remove(store: RecordStore, rec: SourceRecord, files: list[Path]) -> None:
    """Remove ``rec``'s files and its own folders, then its records: an interrupted forget leaves the records of
    what is left, so the same command finishes it (records gone first left files that nothing named)."""
    assert store.data is not None
    for path in files:
        path.unlink(missing_ok=True)
    for name in SOURCE_FOLDERS:
        shutil.rmtree(Path(store.data) / name / rec.id, ignore_errors=True)
    for clip_id in store.ids(f"clips/{rec.id}"):
        store.delete(f"clips/{rec.id}", clip_id)
    with contextlib.suppress(OSError):
        (store.root / "clips" / rec.id).rmdir()
    store.delete("sources", rec.id)


__all__ = ["forget_sources"]
