"""Write-then-rename, so a crash or Ctrl-C never leaves a half-written output under the real name; write
failures (disk full, quota, I/O error) reported as :class:`~lipsyncctl.errors.WriteError` naming the
output, never its temporary name; and the temporaries of a run that was killed removed by the next one.

Every temporary file or folder the package makes beside an output is named by :func:`temp_prefix`:
hidden, the output's stem, then ``~HOST-PID-`` and 8 random characters (``.o.~3fa1-41233-k2x9a0qz/``,
``.report.~3fa1-41233-0f3a9c1e.part.json``), so a rerun can tell whose it is. A ``kill -9`` removes
nothing; :func:`sweep_temps` removes the temporaries of processes of this host that are gone (and, for a
run that holds its output folder alone, those of other hosts).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lipsyncctl.errors import MediaError, TakenError, UsageError, WriteError
from lipsyncctl.media.container import (
    is_image_sequence,
    sequence_entries,
    sequence_file,
    sequence_files,
    sequence_number,
)

#: errno values that mean an output could not be written (the destination's fault, not the inputs')
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name the same file (resolving links; False if either is missing)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_not_input(path: str | Path, inputs: Iterable[str | Path]) -> None:
    """Raise :class:`UsageError` if ``path`` is one of ``inputs`` (we never overwrite an input).

    The one rule for every command: an output that names an input is a mistake in the arguments (exit 2),
    not bad media. An image sequence's pattern (output or input) stands for its files: an output
    ``shot.%d.png`` whose names an input ``shot.%04d.png``'s files are is refused too."""
    path = Path(path)
    for src in inputs:  # a file against a file: same_file (links too); against a sequence: by its names, no listing
        if same_file(path, src) or _names_an_input(path, Path(src)):
            raise UsageError(f"{path}: refusing to overwrite an input file",
                             hint="choose a different output path or directory (-o)")


def _names_an_input(path: Path, src: Path) -> bool:
    """Whether the output ``path`` would write an existing file of the input ``src``, either being an image
    sequence's pattern (a file output: one of the input sequence's names; a sequence output: a name of its own
    that an input file, or a file of the input sequence, has)."""
    out_seq, in_seq = is_image_sequence(path), is_image_sequence(src)
    if not (out_seq or in_seq):
        return False
    theirs = sequence_files(src) if in_seq and out_seq else [src] if out_seq else [path]
    pattern, folder = (path, path.parent) if out_seq else (src, src.parent)
    try:
        folder = folder.resolve()
        return any(p.parent.resolve() == folder and sequence_number(pattern, p) is not None and (folder / p.name).exists()
                   for p in theirs)
    except OSError:
        return False


def check_writable(path: str | Path, *, probe: bool = True, name: str | Path | None = None) -> None:
    """Fail fast when ``path`` could not be written: the nearest existing folder above it (the folders
    still missing would be created there) must be a writable folder. With ``probe`` (not in a dry run, which writes
    nothing) a hidden file is created there and removed: permission bits do not tell a pseudo file system
    (``/proc``), a full quota, nor a folder root may not write (they always say yes to root).

    Raises:
        OSError: ``EROFS`` (read-only file system), ``EACCES``/``EPERM`` (no permission), ``ENOTDIR`` (a file
            where a folder is needed) or what creating a file there raised, naming that folder; where it is not the
            output's own folder (folders to create), naming the output too (``name``: how to call it, default
            ``path``).
    """
    own = Path(os.path.abspath(path)).parent
    folder = own
    while not os.path.lexists(folder) and folder != folder.parent:  # a dangling link is in the way, not absent
        folder = folder.parent
    what = "the output" if folder == own else f"the folders of {name if name is not None else path}"
    if os.path.islink(folder) and not folder.exists():
        raise NotADirectoryError(errno.ENOTDIR, "a link to nothing is in the way of the output folder", str(folder))
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the output folder", str(folder))
    code = 0
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
    elif probe:
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix=temp_prefix(path, "probe"))
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            code = exc.errno or errno.EACCES
    verb = "write" if folder == own else "create"
    if code == errno.ENOENT:  # (not FileNotFoundError: an output's folder is not a missing input, exit 5)
        raise PermissionError(errno.EPERM, f"cannot {verb} {what} here (no file can be created there)", str(folder))
    if code:
        raise OSError(code, f"cannot {verb} {what} here ({os.strerror(code).lower()})", str(folder))


#: a temporary name of :func:`temp_prefix`: the writer's host (8 hex digits; 4 in names of versions before
#: 2026-12-08, which are another host's to every sweep) and pid, then 8 random characters (``tempfile``'s or ours),
#: optionally ``.part``/``.old`` and an extension
TEMP_NAME = re.compile(
    r"^\..*\.~(?P<host>[0-9a-f]{4}(?:[0-9a-f]{4})?)-(?P<pid>\d+)-[0-9a-z_]{8}(?:\.(?:part|old)(?:\.[^/]*)?)?$")
#: the labels of temporaries that belong to an output of that stem (:func:`sweep_temps`' ``stem``): its record
#: (``OUT.run.yaml``), its matte, prep's manifest and work folder, a write probe
_OWN_LABELS = ("run", "matte", "prep", "probe")


@functools.cache
def host_tag() -> str:
    """8 hex digits naming this machine and its process-id space (temporaries on shared storage say which host
    wrote them; a pid is that host's): its host name and its pid namespace, so that two nodes of a farm (4 digits
    of the name alone were alike for node052 and node112) or two containers sharing a host name (each with its own
    pids) do not take each other's live temporaries for their own dead ones."""
    try:
        space = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # (not Linux)
        space = 0
    return hashlib.sha1(f"{socket.gethostname()}\0{space}".encode()).hexdigest()[:8]


def temp_prefix(path: str | Path, label: str = "") -> str:
    """The start of a temporary name beside ``path``: ``.STEM[.LABEL].~HOST-PID-`` (add 8 random characters,
    e.g. as ``tempfile``'s ``prefix``, which does). An image sequence's ``%04d`` loses its ``%``: FFmpeg reads a
    ``%`` anywhere in a path it writes a sequence to as the frame number's place."""
    return f".{_stem_tag(Path(path).stem)}{'.' + label if label else ''}.~{host_tag()}-{os.getpid()}-"


def _stem_tag(stem: str) -> str:
    """An output's stem as its temporaries carry it (:func:`temp_prefix`): without ``%``."""
    return stem.replace("%", "")


def temp_path(path: str | Path, *, keep_suffix: bool = True) -> Path:
    """A fresh temporary name beside ``path`` (not created): ``.STEM.~HOST-PID-XXXXXXXX.part[.EXT]``.
    ``keep_suffix`` keeps the extension (PyAV and ffmpeg pick the container from it); without it the name
    ends in ``.part``, so a ``*.json`` glob never sees it."""
    path = Path(path)
    return path.with_name(f"{temp_prefix(path)}{secrets.token_hex(4)}.part{path.suffix if keep_suffix else ''}")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temps(folder: str | Path, *, stem: str | None = None, other_hosts: bool = False,
                depth: int = 0) -> list[Path]:
    """Remove the temporaries (:func:`temp_prefix` names) in ``folder`` whose process is gone: written on this
    host by a pid that no longer runs; with ``other_hosts`` also every one written on another host (only
    for a run that holds the folder alone: :mod:`lipsyncctl.runner.lock`). A live process's temporaries are
    never touched, nor any other name.

    Args:
        stem: only the temporaries of the output named ``stem`` (``.STEM.~``..., its matte's and record's too:
            :data:`_OWN_LABELS`; not those of ``STEM.v2``).
        depth: also sweep the subfolders down to this many levels (not inside the temporaries).

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    me = host_tag()
    try:
        entries = os.scandir(folder)  # read a name at a time (a dataset's records folder holds a million)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            match = TEMP_NAME.match(entry.name)
            if match is None:
                if depth > 0 and entry.is_dir(follow_symlinks=False):
                    removed += sweep_temps(entry.path, stem=stem, other_hosts=other_hosts, depth=depth - 1)
                continue
            if stem is not None and not _of_stem(entry.name, stem):
                continue
            mine = match["host"] == me
            if (mine and pid_alive(int(match["pid"]))) or (not mine and not other_hosts):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _of_stem(name: str, stem: str) -> bool:
    """Whether the temporary ``name`` is one of the output named ``stem`` (``.STEM.~``, ``.STEM.run.~``...), not of
    another output whose name starts alike (``shot.v2.mp4``'s for ``shot.mp4``)."""
    head = f".{_stem_tag(stem)}."
    return name.startswith(head) and (name[len(head):].startswith("~") or
                                      any(name[len(head):].startswith(f"{label}.~") for label in _OWN_LABELS))


def write_failure(exc: BaseException | None) -> OSError | None:
    """The :class:`OSError` behind ``exc`` (itself or along its ``__cause__``/``__context__`` chain) that says
    an output could not be written (:data:`WRITE_ERRNOS`; PyAV raises ``av.error.OSError``, an OSError), or
    None when ``exc`` is something else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def free_space(path: str | Path) -> int | None:
    """Bytes free for this user on the file system that holds ``path`` (its nearest existing folder)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def file_size(path: str | Path) -> int:
    """Size of ``path`` in bytes, 0 when it is gone."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns


def write_error(path: str | Path, exc: BaseException, *, written: int = 0, needed: int | None = None,
                what: str = "it", hint: str | None = None) -> WriteError:
    """The :class:`~lipsyncctl.errors.WriteError` for output ``path`` that failed with ``exc`` (a write
    failure, see :func:`write_failure`; or a WriteError about one of its temporary files, which is re-told
    for ``path``). When space ran out the message gives the free space there and ``needed`` (about what
    the whole output needs; unknown: what had been written when it failed). ``what``: what could not be
    written, when it is not ``path`` itself (a scratch file in that folder); ``hint``: the hint when space ran
    out (None: :class:`~lipsyncctl.errors.WriteError`'s)."""
    if isinstance(exc, WriteError):
        code, written = exc.errno, max(written, exc.written)
        needed = needed if needed is not None else exc.needed
    else:
        failure = write_failure(exc)
        code = failure.errno if failure is not None and failure.errno else errno.EIO
    reason = os.strerror(code)
    free = free_space(path)
    message = f"{path}: cannot write {what}: {reason}"
    if code in _NO_SPACE:
        space = f"{human_bytes(free)} free there" if free is not None else "free space unknown"
        need = (f"it needs about {human_bytes(needed)}" if needed
                else f"{human_bytes(written)} had been written when it failed")
        message += f" ({space}; {need})"
    else:
        hint = "check that the destination can be written (file system, disk, permissions) and rerun"
    return WriteError(message, hint, path=str(path), errno=code, written=written, needed=needed, free=free)


def space_needed(exc: WriteError, video_only: Path | None, stored: tuple[int, int], frames: int, *,
                 copies: int = 2) -> int:
    """About the bytes a video output needs beside it when ``exc`` stopped it: the encoded picture ``video_only``
    (None: written straight to the output), then its muxed copy (``copies``: both in the hidden folder until the
    rename), from the picture's size when the mux ran out of space, or extrapolated from what the encoder had
    stored of ``frames``: ``stored`` = (its packets in the file, the frames given to it). Per packet while few are
    in the file, the first (a key frame, several times a later one's size) would count for all: per frame given
    then, as the encoder holds back its lookahead (an estimate on the low side rather than tenfold)."""
    if video_only is not None and video_only.is_file():
        picture = file_size(video_only)
    else:
        packets, given = stored
        picture = exc.written * frames // max(packets if packets >= _STEADY_PACKETS else given, 1)
    return copies * max(picture, exc.written)


#: packets in a file from which its mean size per packet stands for the rest (one second or so)
_STEADY_PACKETS = 25


@contextlib.contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Create the missing folders above ``path`` and yield its folder; if the block fails (Ctrl-C
    included), the folders it created are removed again (only while empty), so nothing is left."""
    from lipsyncctl.folders import missing_folders, remove_empty

    folder = Path(path).parent
    created = missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        remove_empty(created)
        raise


def output_mode(path: str | Path) -> None:
    """Give a file that a library wrote private (safetensors' writer and ``tempfile.mkstemp`` make 0600 files) the
    mode of any output, ``0o666`` minus the umask, before it is renamed into place: a run folder or a dataset shared
    by a team stays readable by it."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # read, not set (setting it to read it races with other threads' new files)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _create_temp(path: Path) -> Path:
    """A new empty hidden file beside ``path``, created with mode ``0o666`` minus the umask like any
    output (``tempfile.mkstemp`` makes 0600 files, which the rename would carry into the result)."""
    for _ in range(100):
        tmp = temp_path(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise MediaError(f"{path}: cannot create a temporary file beside it")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name is hidden (:func:`temp_path`: ``.name.~HOST-PID-XXXXXXXX.part.ext``) and keeps the extension, so PyAV and
    ffmpeg still pick the container from it. On any exception — KeyboardInterrupt included — the
    temporary file is removed and the exception propagates (a write failure, such as a full disk, as
    :class:`~lipsyncctl.errors.WriteError` naming ``path``); an existing ``path`` is left as it was.
    ``inputs`` are files that must never be overwritten (raises :class:`UsageError` before writing).
    An image sequence (``shot.%04d.png``) is written as the same pattern in a hidden folder beside it, its files
    moved into place at the end (:func:`replace_sequence`).
    """
    path = Path(path)
    check_not_input(path, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_image_sequence(path):
        with _atomic_sequence(path) as tmp:
            yield tmp
        return
    tmp = _create_temp(path)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise MediaError(f"{path}: nothing was written")
        os.replace(tmp, path)
    except BaseException as exc:
        written = file_size(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(exc, WriteError) and write_failure(exc) is not None:
            raise write_error(path, exc, written=written) from exc
        raise


@contextlib.contextmanager
def _atomic_sequence(path: Path) -> Iterator[Path]:
    """:func:`atomic_output` for the image sequence ``path``: its pattern in a new hidden folder beside it."""
    for _ in range(100):
        folder = temp_path(path, keep_suffix=False)
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        break
    else:
        raise MediaError(f"{path}: cannot create a temporary folder beside it")
    tmp = folder / path.name
    try:
        yield tmp
        if not sequence_files(tmp):
            raise MediaError(f"{path}: nothing was written")
        replace_sequence(tmp, path)
    except BaseException as exc:
        written = sum(file_size(p) for p in sequence_files(tmp))
        if not isinstance(exc, WriteError) and write_failure(exc) is not None:
            raise write_error(path, exc, written=written) from exc
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: what to do about an output that is there (exit 2): the same words for one there at the start and one made meanwhile
OVERWRITE_HINT = "pass --overwrite/-y (Python: overwrite=True) to replace it, or choose another -o"


def taken_error(path: str | Path) -> TakenError:
    """The error of an output that another run put in place while this one worked (exit 2, as an output there at
    the start): that run's take is left as it is."""
    return TakenError(f"{path}: exists; another run wrote it while this one worked, and it is left as it is",
                      hint=OVERWRITE_HINT)


def move_new(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` to ``dst``, never replacing a ``dst`` that exists (another run's, made meanwhile): a hard link,
    then ``src`` removed, so of two runs exactly one gets ``dst``; where a hard link cannot be made (FAT, some
    network shares; whatever the error: a real one shows in the rename), a look and a rename.

    Raises:
        TakenError: ``dst`` exists (:func:`taken_error`).
    """
    try:
        os.link(src, dst)
    except FileExistsError:
        raise taken_error(dst) from None
    except OSError:  # no hard links here (EPERM, ENOTSUP, EINVAL from SMB/FAT, EACCES from some FUSE mounts...)
        if os.path.lexists(dst):
            raise taken_error(dst) from None
        os.replace(src, dst)
        return
    os.unlink(src)


def replace_sequence(src: str | Path, dst: str | Path) -> list[Path]:
    """Move the files of the image sequence ``src`` (a pattern, ``.../shot.%04d.png``) to the names of the pattern
    ``dst``, number for number (each move a rename), then remove the files of ``dst`` no new file replaced (the
    last frames of a longer take it overwrites), so ``dst`` is exactly the new take. Returns the new files."""
    src, dst = Path(src), Path(dst)
    old = set(sequence_files(dst))
    moved = []
    for number, file in sequence_entries(src):
        target = sequence_file(dst, number)
        os.replace(file, target)
        moved.append(target)
    for stale in old - set(moved):
        with contextlib.suppress(OSError):
            stale.unlink()
    return moved
