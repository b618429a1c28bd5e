"""Folders a command creates, and removing them again when the command leaves them empty.

A command that fails or is interrupted (``models fetch`` offline, Ctrl-C during ``prep``) should not
leave empty folders behind. The rule: note which folders do not exist *before* the command runs
(:func:`missing_folders`), and afterwards remove those of them that are still empty
(:func:`remove_empty`). A folder that existed before, or that holds any file, is never removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def missing_folders(*folders: str | Path) -> list[Path]:
    """Each of ``folders`` and its ancestors that does not exist now, deepest first, without repeats.

    Paths are made absolute first, so a relative ``out/sub`` also lists ``out`` when that is missing.
    """
    found: set[Path] = set()
    for folder in folders:
        probe = Path(os.path.abspath(folder))
        while not probe.exists() and probe != probe.parent and probe not in found:
            found.add(probe)
            probe = probe.parent
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_empty(folders: Iterable[Path]) -> list[Path]:
    """Remove each folder of ``folders`` that is empty now, deepest first; return those removed.

    ``rmdir`` only: a folder with anything in it (or already gone) is left as it is. Pass the list from
    :func:`missing_folders` taken before the command, so that folders the user had are never touched.
    """
    removed = []
    for folder in sorted(folders, key=lambda p: len(Path(p).parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty, already gone, or not ours to remove
            Path(folder).rmdir()
            removed.append(Path(folder))
    return removed

