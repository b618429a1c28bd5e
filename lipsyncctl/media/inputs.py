"""Media inputs given on a command line: files, folders, glob patterns and image-sequence patterns,
expanded into ``(source, relative output stem)`` pairs in a stable order."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.media.container import MEDIA_EXTS, is_image_sequence, sequence_files


def _glob_base(pattern: str) -> Path:
    """The directory part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


@dataclass
class LeftOut:
    """The files folder walks left out (not media by extension): how many, and the first few (a VoxCeleb2 tree has
    a million metadata files: a count, not a list)."""

    count: int = 0
    first: list[Path] = field(default_factory=list)
    closed: list[Path] = field(default_factory=list)  # folders whose subfolders were not walked (``closed``)

    def add(self, path: Path) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(path)

    def note(self) -> str | None:
        """``3 file(s) in the folders given are not media (by extension: ...), skipped: notes.txt, ...``; None when
        nothing was left out."""
        if not self.count:
            return None
        names = ", ".join(p.name for p in self.first) + (", ..." if self.count > len(self.first) else "")
        return (f"{self.count} file(s) in the folders given are not media (by extension: "
                f"{' '.join(sorted(MEDIA_EXTS))}), skipped: {names}")


def _walk(root: Path, skip: Path, others: LeftOut | None = None,
          closed: Callable[[str], bool] | None = None) -> Iterable[Path]:
    """The media files under ``root`` (not under ``skip``, not hidden), sorted; the other files are counted in
    ``others``. A folder ``closed`` says yes to (a curated dataset: its clips are not sources) gives its own files,
    not its folders' (listed in ``others.closed``)."""
    under = _Under(skip)
    all_inside = under.contains(root)  # (its own files are taken; none of its folders)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        shut = closed is not None and bool(dirnames) and closed(dirpath)
        if shut and others is not None and not all_inside:
            others.closed.append(here)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not shut
                             and not all_inside and not under.is_it(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in MEDIA_EXTS:
                yield here / name
            elif others is not None:
                others.add(here / name)


class _Closed:
    """Whether a file a glob matched lies in a subfolder of a folder ``closed`` says yes to (below the glob's fixed
    part ``base``; each folder asked once), as a walk would have left it out (named in ``others.closed``)."""

    def __init__(self, closed: Callable[[str], bool] | None, base: Path, others: LeftOut | None) -> None:
        self.closed, self.base, self.others = closed, base, others
        self.memo: dict[Path, bool] = {}

    def holds(self, path: Path) -> bool:
        if self.closed is None:
            return False
        # the folders above the file's own, up to the glob's base (a closed folder's own files are taken)
        for folder in list(path.parents)[1:]:
            if folder not in self.memo:
                self.memo[folder] = self.closed(str(folder))
                if self.memo[folder] and self.others is not None:
                    self.others.closed.append(folder)
            if self.memo[folder]:
                return True
            if folder == self.base:
                return False
        return False


class _Under:
    """Whether a path is ``folder`` or inside it, ``folder`` resolved once (a walk of a million files resolved it,
    and each folder it met, component by component)."""

    def __init__(self, folder: Path) -> None:
        self.real = os.path.realpath(folder)
        try:
            st = os.stat(folder)
            self.id: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            self.id = None  # not made yet: nothing is in it

    def contains(self, path: str | Path) -> bool:
        real = os.path.realpath(path)
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)

    def is_it(self, folder: str) -> bool:
        """``folder`` is this one (a walk that does not descend into it meets nothing inside it: one stat)."""
        if self.id is None:
            return False
        try:
            st = os.stat(folder)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.id


def _file_id(path: Path) -> tuple[int, int] | str:
    """Its device and inode (the same for a symbolic link to it, another spelling of its path, a hard link); a path
    that is not there, as written."""
    try:
        st = os.stat(path)
    except OSError:
        return str(path)
    return st.st_dev, st.st_ino


def _sequence_stem(pattern: Path) -> str:
    import re

    stem = re.sub(r"%0?\d*d", "", pattern.stem).rstrip("_-. ")
    return stem or pattern.parent.name or "sequence"


def collect_inputs(inputs: Sequence[str | Path], out_dir: str | Path, *, unique_stems: bool = False,
                   others: LeftOut | None = None, closed: Callable[[str], bool] | None = None) -> list[tuple[Path, Path]]:
    """Expand files, directories (recursive; media extensions only, hidden files skipped) and glob
    patterns (``**`` recurses) into ``(source, relative_stem)`` pairs, in a stable order.

    ``relative_stem`` is the output path under ``out_dir`` without extension: the input's path relative
    to the directory given (or to the glob's fixed prefix; just the name for a single file). Image
    sequences are given as ``%04d`` patterns. Anything under ``out_dir`` is ignored when walking, so
    ``prep . -o prepped`` does not eat its own output. A missing file is returned as is (and fails
    later with a per-item reason); a pattern that matches nothing raises :class:`UsageError`.
    ``unique_stems``: two inputs that differ only by extension (``a.mov``, ``a.mp4``) keep it in their
    stems (``a_mov``, ``a_mp4``), so their outputs do not collide. ``others``: the files a folder walk left out
    (not media by extension) are counted in it (:class:`LeftOut`). ``closed``: folders whose subfolders a walk
    leaves out (their own files are taken), listed in ``others.closed``.
    """
    out_dir = Path(out_dir)
    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text)
        # (a sequence in a folder whose name reads as a glob, `shots[v2]/f_%04d.png`, is that sequence)
        if is_image_sequence(path) and (not glob.has_magic(text) or sequence_files(path)):
            if not sequence_files(path):
                raise UsageError(f"{text}: no image matches this sequence pattern")
            found.append((path, Path(_sequence_stem(path))))
        elif glob.has_magic(text) and not os.path.lexists(text):  # (a file named `take[1].mov` is that file)
            base = _glob_base(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            under = _Under(out_dir)
            shut = _Closed(closed, base, others)
            files = [m for m in matches if m.is_file() and not under.contains(m) and not shut.holds(m)]
            for d in (m for m in matches if m.is_dir()):
                files.extend(f for f in _walk(d, out_dir, others, closed))
            if not files:
                raise UsageError(f"{text}: the pattern matches no file")
            for f in files:
                found.append((f, f.relative_to(base).with_suffix("")))
        elif path.is_dir():
            for f in _walk(path, out_dir, others, closed):
                found.append((f, f.relative_to(path).with_suffix("")))
        else:
            found.append((path, Path(path.name).with_suffix("")))
    # Drop exact duplicates (a file given twice: by a folder and by name, through a link), keep order. A file is
    # known by its device and inode (one stat); the same inode under another resolved path (a hard link) is another
    # input, so only then are the paths resolved.
    first: dict[tuple[int, int] | str, int] = {}
    linked: dict[tuple[int, int] | str, list[str]] = {}  # the resolved paths of an inode met more than once
    unique = []
    for src, rel in found:
        key = _file_id(src)
        if key in first:
            names = linked.setdefault(key, [os.path.realpath(unique[first[key]][0])])
            real = os.path.realpath(src)
            if real in names:
                continue
            names.append(real)
        else:
            first[key] = len(unique)
        unique.append((src, rel))
    return _disambiguate(unique) if unique_stems else unique


def check_inputs_exist(sources: Sequence[Path]) -> None:
    """A named input that does not exist fails the command before any work, as bad input media (exit 5)
    like in every command; a file that exists but cannot be decoded fails on its own, the batch goes on.

    Raises:
        MediaError: naming the missing file(s).
    """
    missing = [src for src in sources if not is_image_sequence(src) and not src.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MediaError(f"{missing[0]}: file not found{more}", hint="check the path")


def _disambiguate(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Two inputs that differ only by extension (``a.mov``, ``a.mp4``) keep it in their names."""
    stems: dict[Path, int] = {}
    for _, rel in pairs:
        stems[rel] = stems.get(rel, 0) + 1
    return [(src, extension_stem(src, rel) if stems[rel] > 1 and src.suffix else rel) for src, rel in pairs]


def extension_stem(src: Path, rel: Path) -> Path:
    """``rel`` with ``src``'s extension kept in it (``take`` of ``take.mov``: ``take_mov``): the stem of one of two
    inputs that differ only by it."""
    return rel.with_name(f"{rel.name}_{src.suffix.lstrip('.')}")
