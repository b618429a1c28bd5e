"""Versioned deliveries: each finished language of a run is handed back as one set, ``OUT/<lang>/vNNN/``.

Dubbing deliveries are versioned, and a folder that mixes files of two runs cannot be trusted, so the
files of one language are never written over those of an earlier run:

- A version folder (``v001``, ``v002``, ...) is built under a hidden temporary name beside it
  (``.vNNN.~HOST-PID-XXXXXXXX``, :func:`lipsyncctl.media.atomic.temp_prefix`) and renamed into place
  only when it is complete. Ctrl-C or an error removes the temporary folder; a ``kill -9`` leaves it
  for the next run's sweep (:mod:`lipsyncctl.runner.lock`). An earlier version is never touched.
- The renders in it are hard links of the render cache (``OUT/.lipsyncctl/renders/<key>.<ext>``,
  copies where the file system cannot link), so a delivery costs no render time and little disk.
- Then ``OUT/<lang>/current`` (a relative symlink to ``vNNN``) is switched atomically (a new link
  renamed over the old one); where symlinks cannot be made, ``OUT/<lang>/LATEST`` holds the name.

Every run that finishes a language makes a new version, also when nothing changed: its report is then
the same as the previous one's apart from this run's reuse counts and paths, and its renders are links
of the same cache files. Keeping a version per run is what a delivery log needs, and the cost is the
timelines, the report and (with ``--conform``) the conform of each run. Old versions are for the user to
delete.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lipsyncctl.errors import BusyError, WriteError
from lipsyncctl.media.atomic import atomic_output, temp_prefix

#: a version folder's name
VERSION = re.compile(r"^v(\d{3,})$")
#: a version being built (its temporary name starts with ``.vNNN.``)
BUILDING = re.compile(r"^\.v(\d{3,})\.~")
#: the pointer to the newest complete version: a symlink, else a text file
CURRENT, LATEST = "current", "LATEST"


@dataclass
class Delivery:
    """A version being built: files go under :attr:`tmp`, and are named by their :attr:`final` paths."""

    folder: Path   # OUT/<lang>
    version: str   # "v001"
    tmp: Path      # the hidden folder it is built in

    @property
    def final(self) -> Path:
        """Where the version will be once complete (``OUT/<lang>/vNNN``)."""
        return self.folder / self.version

    def final_path(self, path: Path) -> Path:
        """The final name of ``path``, a file under :attr:`tmp`."""
        return self.final / Path(path).relative_to(self.tmp)

    def add_link(self, source: Path, name: str) -> Path:
        """Hard-link (or copy) the finished file ``source`` to ``name`` in the version; its final path."""
        target = self.tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # no hard links on this file system (or across devices): a copy
            shutil.copy2(source, target)
        return self.final / name

    def files(self) -> list[str]:
        """Every file now in the version, relative to it (POSIX form), sorted."""
        return sorted(p.relative_to(self.tmp).as_posix() for p in self.tmp.rglob("*") if p.is_file())


def next_version(folder: Path) -> str:
    """The name after the highest complete or in-progress version in ``folder`` (``v001`` in an empty one)."""
    numbers = [0]
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            match = VERSION.match(entry.name) or BUILDING.match(entry.name)
            if match is not None:
                numbers.append(int(match[1]))
    return f"v{max(numbers) + 1:03d}"


def current_version(folder: Path) -> str | None:
    """The version ``OUT/<lang>/current`` (or ``LATEST``) names, if any."""
    link = folder / CURRENT
    if link.is_symlink():
        return os.readlink(link)
    latest = folder / LATEST
    if not latest.is_file():
        return None
    return latest.read_text(encoding="utf-8").strip() or None


def other_edit(folder: Path, timeline: Path) -> str | None:
    """The warning for a language folder whose current version was made from another edit file than ``timeline``
    (its report's ``timeline`` has another name): this run's version joins that edit's in one version sequence, which
    ``current`` and ``prune --keep`` count together (a reel's deliveries pruned as old versions of the next reel's).
    None when it has no version, or the same edit's."""
    import json

    version = current_version(folder)
    if version is None:
        return None
    try:
        made_from = json.loads((folder / version / "report.json").read_text(encoding="utf-8")).get("timeline")
    except (OSError, ValueError, AttributeError):
        return None
    if not made_from or Path(made_from).name == timeline.name:
        return None
    return (f"{folder}: its current version ({version}) was made from {Path(made_from).name}, this run's edit is "
            f"{timeline.name}; the new version follows it in one sequence, which `current` and `prune --keep` count "
            "together (give each edit its own -o)")


class Deliveries:
    """Versions built and not yet delivered: :func:`delivering` renames them into place together, once every one is
    complete, so an interrupted multi-language run delivers no language (it delivered the languages written before
    the interrupt and moved their ``current``)."""

    def __init__(self) -> None:
        self.built: list[Delivery] = []

    def deliver(self) -> None:
        """Rename each built version into place and point its ``current`` at it, one after the other."""
        while self.built:
            _deliver(self.built.pop(0))

    def discard(self) -> None:
        for delivery in self.built:
            shutil.rmtree(delivery.tmp, ignore_errors=True)
        self.built.clear()


@contextlib.contextmanager
def delivering() -> Iterator[Deliveries]:
    """Collect the versions :func:`building` makes in the block (``together=``) and deliver them at its end; on any
    exception (Ctrl-C included) none is delivered and their temporary folders are removed."""
    pending = Deliveries()
    try:
        yield pending
        pending.deliver()
    except BaseException:
        pending.discard()
        raise


@contextlib.contextmanager
def building(folder: Path, *, together: Deliveries | None = None) -> Iterator[Delivery]:
    """Yield a new :class:`Delivery` of ``folder`` (``OUT/<lang>``); when the block succeeds, rename it into
    place and point ``current`` at it (with ``together``: when :func:`delivering`'s block ends, beside the other
    languages). On any exception (Ctrl-C included) the temporary folder is removed and nothing else changes.

    Raises:
        BusyError: another run (a shard of the same job) delivered the same version number meanwhile (exit 6;
            rerun).
    """
    folder.mkdir(parents=True, exist_ok=True)
    version = next_version(folder)
    tmp = _make_folder(folder, version)
    delivery = Delivery(folder, version, tmp)
    try:
        yield delivery
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if together is not None:
        together.built.append(delivery)
    else:
        _deliver(delivery)


def _deliver(delivery: Delivery) -> None:
    """Rename a complete version into place (never merging two runs) and point ``current`` at it."""
    try:
        os.rename(delivery.tmp, delivery.final)  # fails on an existing non-empty folder: never merges two runs
    except OSError as exc:
        shutil.rmtree(delivery.tmp, ignore_errors=True)
        raise BusyError(f"{delivery.final}: could not deliver this version ({exc.strerror})",
                        hint="another run delivered it at the same time; rerun") from exc
    point_current(delivery.folder, delivery.version)


def point_current(folder: Path, version: str) -> Path:
    """Point ``folder/current`` at ``version`` atomically (a relative symlink); where symlinks cannot be
    made, write ``folder/LATEST`` instead. Returns the pointer's path."""
    link = folder / CURRENT
    tmp = folder / f"{temp_prefix(link)}{secrets.token_hex(4)}"
    try:
        os.symlink(version, tmp, target_is_directory=True)
        os.replace(tmp, link)
        return link
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
    latest = folder / LATEST
    with atomic_output(latest) as t:
        t.write_text(version + "\n", encoding="utf-8")
    return latest


def _make_folder(folder: Path, version: str) -> Path:
    """A new empty hidden folder for ``version`` (made with the usual ``0o777`` minus umask, which the
    rename keeps: ``tempfile.mkdtemp`` would make it private)."""
    for _ in range(100):
        tmp = folder / f"{temp_prefix(folder / version)}{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise WriteError(f"{folder}: cannot create a temporary folder in it (100 names taken)", path=str(folder))
