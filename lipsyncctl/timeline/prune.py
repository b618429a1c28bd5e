"""Old deliveries and unused renders out of a ``sync --timeline`` output folder (``lipsyncctl prune``).

Every finishing run adds a version per language (:mod:`~lipsyncctl.timeline.delivery`) and every changed shot a
render to the cache, so an output folder only grows. Pruning, under the folder's run lock (never beside a run):

1. Per language (``OUT/<lang>/``), the versions (``vNNN``) but the newest ``keep`` and the one ``current`` names
   are removed. A version is removed only when it holds exactly the files its ``report.json`` lists (a folder a
   person added files to, or one without its report, is left alone and said so). Each is first renamed to a
   hidden temporary name, then deleted, so an interrupted prune never leaves a half-deleted folder that looks
   like a delivery (the next run's sweep removes the rest).
2. With ``renders``: the render cache's files (``OUT/.lipsyncctl/renders/``) that no kept version links are
   removed with their job records (a rerun of such a shot renders it again). Which render a version uses is
   known by hard links only: where a version holds copies (a file system without links), this step refuses.

The space freed counts a file only when its last link goes (a version's render is a link of the cache's: it
frees nothing while the cache keeps it). A dry run computes the same figures and removes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl.errors import Interrupted, MediaError, UsageError
from lipsyncctl.media.atomic import temp_prefix
from lipsyncctl.runner.lock import LOCK_FOLDER, MAIN, FolderLock
from lipsyncctl.timeline.delivery import VERSION, current_version

#: the render cache and the job store under ``OUT/.lipsyncctl`` (:mod:`~lipsyncctl.timeline.job`)
RENDERS, JOBS = "renders", "jobs"


@dataclass
class LanguagePrune:
    """One language folder: its versions kept and removed (names, oldest first), and those left alone."""

    language: str
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  # version -> why it was not removed

    def to_dict(self) -> dict[str, Any]:
        return {"language": self.language, "kept": self.kept, "removed": self.removed, "left": self.left}


@dataclass
class PruneResult:
    """What :func:`prune_output` removed (or, with ``dry_run``, would remove) and the bytes that frees."""

    folder: Path
    keep: int
    dry_run: bool
    languages: list[LanguagePrune] = field(default_factory=list)
    renders: list[str] = field(default_factory=list)    # render cache files removed (names; sidecars too)
    records: list[str] = field(default_factory=list)    # job store records removed (keys)
    freed_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "keep": self.keep, "dry_run": self.dry_run,
                "languages": [lang.to_dict() for lang in self.languages], "renders": self.renders,
                "records": self.records, "freed_bytes": self.freed_bytes}


def prune_output(folder: str | Path, *, keep: int = 1, renders: bool = False, dry_run: bool = False,
                 wait: bool = False) -> PruneResult:
    """Remove the old versions of each language of ``folder`` and, with ``renders``, the renders no kept version
    uses (module doc).

    Args:
        folder: a ``sync --timeline`` output folder (``-o``).
        keep: versions kept per language, newest first (at least 1; ``current``'s is kept besides).
        renders: also remove the render cache's files no kept version links, and their job records.
        dry_run: compute everything, remove nothing.
        wait: wait for a run that holds the folder instead of failing with BusyError.

    Raises:
        UsageError: ``keep`` < 1; a folder that is not an output of ``sync --timeline``; ``renders`` where the
            versions hold copies instead of links. MediaError: no such folder. BusyError: a run holds it.
    """
    out = Path(folder)
    if keep < 1:
        raise UsageError(f"keep {keep}: at least 1 version is kept", hint="--keep 1 keeps the newest (and current)")
    if not out.is_dir():
        raise MediaError(f"{out}: {'a file, not a folder' if out.exists() else 'no such folder'}",
                         hint="give the -o folder of a `sync --timeline` run")
    not_output = UsageError(f"{out}: not an output folder of `sync --timeline` (no versions, no render cache)",
                            hint="give the -o folder of a `sync --timeline` run")
    # a folder whose first run is still writing has only its lock: busy (exit 6, or --wait), not "not an output"
    if not _languages(out) and not (out / LOCK_FOLDER / RENDERS).is_dir() and not (out / LOCK_FOLDER / MAIN).is_file():
        raise not_output
    result = PruneResult(out, keep, dry_run)
    lock = FolderLock(out, wait=wait, command="lipsyncctl prune")
    if dry_run:  # it writes nothing, not even a lock file (a stale one and old temporaries stay for the next run)
        lock.check_free()
    with contextlib.nullcontext() if dry_run else lock:
        languages = _languages(out)  # read under the lock: a run that held it may have made a version
        if not languages and not (out / LOCK_FOLDER / RENDERS).is_dir():
            raise not_output
        folders: list[Path] = []  # version folders that go
        for lang in languages:
            plan = _plan_language(lang, keep)
            result.languages.append(plan)
            folders += [lang / name for name in plan.removed]
        cached: list[Path] = []  # render cache files and job records that go
        if renders:
            staying = [lang / name for lang, plan in zip(languages, result.languages, strict=True)
                       for name in (*plan.kept, *plan.left)]
            unused, records = _unused_renders(out, staying)
            result.renders, result.records = [p.name for p in unused], [p.stem for p in records]
            cached = unused + records
        result.freed_bytes = _freed([f for folder in folders for f in _files(folder)] + cached)
        if not dry_run:
            gone: list[Path] = []
            try:
                for path in folders:
                    _remove_folder(path)
                    gone.append(path)
                for path in cached:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            except KeyboardInterrupt:  # which versions went, said (--json: `partial`); the one in progress is gone
                # from sight (renamed) and swept by the next run or prune
                raise Interrupted(f"prune interrupted: {len(gone)} of {len(folders)} version(s) removed"
                                  + (f" ({', '.join(f'{p.parent.name}/{p.name}' for p in gone)})" if gone else ""),
                                  hint="rerun the same prune to finish", partial={"removed": [str(p) for p in gone]}
                                  ) from None
    return result


def _languages(out: Path) -> list[Path]:
    """The language folders of ``out``: visible subfolders that hold a version or a ``current`` pointer."""
    found = []
    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if current_version(path) is not None or any(VERSION.match(n) for n in os.listdir(path)):
            found.append(path)
    return found


def _plan_language(lang: Path, keep: int) -> LanguagePrune:
    """Which versions of ``lang`` stay and go: the newest ``keep`` and current stay; of the rest, those holding
    exactly their report's files go."""
    plan = LanguagePrune(lang.name)
    versions = sorted((n for n in os.listdir(lang) if VERSION.match(n) and (lang / n).is_dir()),
                      key=lambda n: int(VERSION.match(n)[1]))  # type: ignore[index]
    current = current_version(lang)
    newest = set(versions[-keep:])
    for name in versions:
        if name in newest or name == current:
            plan.kept.append(name)
            continue
        why = _not_ours(lang / name)
        if why is None:
            plan.removed.append(name)
        else:
            plan.left[name] = why
    return plan


def _not_ours(version: Path) -> str | None:
    """Why ``version`` may hold something lipsyncctl did not write (None: exactly its report's files)."""
    try:
        listed = json.loads((version / "report.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable report.json: not known to be a delivery of lipsyncctl"
    present = sorted(p.relative_to(version).as_posix() for p in _files(version))
    extra = sorted(set(present) - set(listed))
    if extra:
        return f"holds {len(extra)} file(s) its report does not list (e.g. {extra[0]})"
    return None


def _files(folder: Path) -> list[Path]:
    """Every file (not folder, not followed link) under ``folder``."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()]


def _unused_renders(out: Path, kept: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """The render cache's files of the keys no file of the ``kept`` versions links (a render and its sidecars:
    ``KEY.mp4``, ``KEY.run.yaml``), and those keys' job records (``jobs/KEY.json``)."""
    cache = out / LOCK_FOLDER / RENDERS
    if not cache.is_dir():
        return [], []
    used: set[tuple[int, int]] = set()
    for version in kept:
        for path in _files(version / "shots"):
            st = path.lstat()
            if st.st_nlink == 1 and path.is_file():
                raise UsageError(f"{version}: its renders are copies, not links of the render cache: which cached "
                                 "render a version uses is unknown, so none is removed",
                                 hint="prune without --renders (old versions are still removed)")
            used.add((st.st_dev, st.st_ino))
    by_key: dict[str, list[Path]] = {}
    for path in sorted(cache.iterdir()):
        if path.is_file() and not path.name.startswith("."):  # (a run's temporaries are the sweep's)
            by_key.setdefault(path.name.split(".")[0], []).append(path)
    unused_keys = [key for key, files in by_key.items()
                   if not any((p.lstat().st_dev, p.lstat().st_ino) in used for p in files)]
    records = [out / LOCK_FOLDER / JOBS / f"{key}.json" for key in unused_keys]
    return [p for key in unused_keys for p in by_key[key]], [r for r in records if r.is_file()]


def _freed(paths: Iterable[Path]) -> int:
    """Bytes freed by removing every one of ``paths``: a file counts once all its links are among them."""
    links: dict[tuple[int, int], list[os.stat_result]] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            links.setdefault((st.st_dev, st.st_ino), []).append(st)
    return sum(group[0].st_size for group in links.values() if len(group) >= group[0].st_nlink)


def _remove_folder(path: Path) -> None:
    """Rename ``path`` to a hidden temporary name, then delete it (an interruption leaves only a temporary)."""
    hidden = path.with_name(f"{temp_prefix(path, 'prune')}{secrets.token_hex(4)}")
    path.rename(hidden)
    shutil.rmtree(hidden)

