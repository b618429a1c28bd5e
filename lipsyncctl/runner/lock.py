"""One run per output folder: a lock under ``FOLDER/.lipsyncctl/`` held for as long as a job writes there.

Two runs writing the same folder at once undo each other's work (one deletes the other's dub cuts, the one
finishing last writes a report of the other's failures over intact renders), so a run takes the folder's
lock before it writes anything and a second run refuses (:class:`~lipsyncctl.errors.BusyError`, naming the
holder) or, with ``wait``, waits for it.

The lock is ``fcntl.flock`` on ``.lipsyncctl/run.lock``: the kernel releases it when its holder exits,
however it exits (``kill -9`` included), so a killed run never blocks the next one. The file holds the
holder's pid, host, start time and command (JSON), for the message of a run that is refused; a file left
by a killed run is recognised as stale (nobody holds its lock) and replaced, with a note naming the dead
run. A finished run removes its lock file (and the ``.lipsyncctl`` folder if it created it and left it
empty).

Shards of an array job are meant to write one folder together: shard ``I/N`` takes the folder's lock
*shared* and an exclusive lock of its own, ``run.shard-I-of-N.lock``; a run of the whole job (shard
``0/1``) takes the folder's lock exclusively. So different shards run side by side, while the same shard
twice, or a whole run beside any shard, is refused.

Once it holds the folder, a run removes the temporaries that killed runs left in it (hidden folders and
``.part`` files beside the outputs, :func:`lipsyncctl.media.atomic.sweep_temps`): those of processes of
this host that are gone, and for a whole run (which holds the folder alone) those of any host. A run that
ends with an error or an interrupt sweeps once more before it lets go (a worker process killed in the
middle of a task, :mod:`lipsyncctl.runner.workers`, could not clean up after itself).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from lipsyncctl import progress
from lipsyncctl.errors import BusyError, UsageError
from lipsyncctl.media.atomic import sweep_temps

#: the lock files' folder, inside the output folder
LOCK_FOLDER = ".lipsyncctl"
MAIN = "run.lock"
#: seconds between two tries while waiting (``wait=True``)
POLL_SECONDS = 0.5
#: folder levels below the output folder swept for temporaries (OUT/.lipsyncctl/renders, OUT/LANG, DATA/.lipsyncctl/records/clips/SRC)
SWEEP_DEPTH = 4


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: written into the lock file, read by a run that is refused."""

    pid: int
    host: str
    started: str      # ISO 8601, UTC
    command: str

    @classmethod
    def me(cls, command: str | None = None) -> Holder:
        argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
        return cls(os.getpid(), socket.gethostname(),
                   datetime.now(UTC).isoformat(timespec="seconds"), command or shlex.join(argv))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"


def read_holder(path: Path) -> Holder | None:
    """The holder written in lock file ``path`` (None: no file, empty, or not ours)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Flock:
    """One flock'd file: taken with :meth:`take`, dropped (and its file removed when nobody else holds it)
    with :meth:`drop`."""

    def __init__(self, path: Path, shared: bool) -> None:
        self.path = path
        self.shared = shared
        self.fd: int | None = None
        self.readonly = False  # another user's lock file, opened for reading: flock'd all the same, not written

    def take(self) -> bool:
        """Try once without blocking; True when held. A file that was removed or replaced between our
        open and our lock (its holder finished) is opened again."""
        while True:
            try:  # (never through a link: the lock file is written, then removed)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
                self.readonly = False
            except PermissionError as denied:  # another user's file (0644 by their umask) in a shared folder: a
                # read-only descriptor locks too (it was not locked at all there)
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError:  # (none to open: a folder this process cannot write)
                    raise denied from None
                self.readonly = True
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                fd = -1
            if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
                if fd >= 0:
                    os.close(fd)
                raise UsageError(f"{self.path} is not a lock file lipsyncctl made (a link, or not a plain file)",
                                 hint="move it away: lipsyncctl makes this file and removes it itself")
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                self.fd = fd
                return True
            os.close(fd)  # locked a file its last holder had just removed: take the new one

    def write(self, holder: Holder) -> None:
        assert self.fd is not None
        if self.readonly:  # (the refused run's message then names no holder)
            return
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(asdict(holder)).encode() + b"\n", 0)

    def drop(self) -> None:
        """Remove the file if no other run holds it, then release (a shared holder first asks for the lock
        exclusively, so it never removes a file that another shard still holds)."""
        if self.fd is None:
            return
        try:
            if self.shared:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another shard holds it: it removes the file when it finishes
            with contextlib.suppress(OSError):
                self.path.unlink()
        finally:
            os.close(self.fd)
            self.fd = None


class FolderLock:
    """The lock of one output folder for one run (see the module docstring). A context manager.

    Args:
        folder: the output folder (``-o``); the lock files live in ``folder/.lipsyncctl/``.
        shard: ``(index, count)`` of this run (``(0, 1)``: the whole job).
        wait: wait for the holder to finish instead of raising :class:`~lipsyncctl.errors.BusyError`.
        command: what the lock file says this run is (default: this process's command line).
        hint: the busy error's hint (None: :class:`~lipsyncctl.errors.BusyError`'s, which names shards).
        job: a shard's job, as its caller keys it (the settings every shard of one job shares): a live shard of
            another job (another count, other settings) keeps this one out, as a whole run does.
    """

    def __init__(self, folder: str | Path, *, shard: tuple[int, int] = (0, 1), wait: bool = False,
                 command: str | None = None, hint: str | None = None, job: str | None = None) -> None:
        self.folder = Path(folder)
        self.job = job
        self.hint = hint
        self.shard = shard
        self.wait = wait
        self.command = command
        self.lock_dir = self.folder / LOCK_FOLDER
        sharded = shard[1] > 1
        self._main = _Flock(self.lock_dir / MAIN, shared=sharded)
        # (a shard's file names its job, the settings its caller keys it by: shards of other settings are another job)
        own = self.lock_dir / f"run.shard-{shard[0]}-of-{shard[1]}{f'.{job}' if job else ''}.lock" if sharded else None
        self._own = _Flock(own, shared=False) if own is not None else None
        self._created: list[Path] = []
        self.swept: list[Path] = []  # temporaries of runs that are gone, removed when the lock was taken
        self._other_job: str | None = None  # the last try found shards of another job holding the folder

    @property
    def path(self) -> Path:
        """The file that names this run while it holds the lock."""
        return (self._own or self._main).path

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # interrupted or failed: a worker killed mid-task left its temporaries
            sweep_temps(self.folder, depth=SWEEP_DEPTH)
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise :class:`~lipsyncctl.errors.BusyError` naming the holder (``wait``: wait).

        Raises:
            BusyError: another run holds the folder (exit 6).
            OSError: the lock file cannot be created (the folder is not writable).
        """
        from lipsyncctl.folders import missing_folders

        announced = False
        while True:
            # (again on each try: a holder that created the folder removes it when it leaves it empty)
            self._created += [p for p in missing_folders(self.lock_dir) if p not in self._created]
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            try:
                if self._try():
                    break
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                progress.warning(f"{self.folder}: this file system cannot lock files ({exc.strerror}); "
                                 "make sure no other run writes to this folder")
                return
            announced = self._refused(announced)
        if self._own is None:  # held exclusively: no shard can hold its file now, so any left is stale
            for path in self.lock_dir.glob("run.shard-*.lock"):
                with contextlib.suppress(OSError):
                    path.unlink()
        me = Holder.me(self.command)
        stale = read_holder(self.path)  # written by a run that is gone: a live one would hold the lock
        if stale is not None and (stale.pid, stale.host) != (me.pid, me.host):
            progress.message(f"{self.path}: replacing the lock of a run that is gone ({stale.describe()})")
        (self._own or self._main).write(me)
        self.swept = sweep_temps(self.folder, other_hosts=self._own is None, depth=SWEEP_DEPTH)
        if self.swept:
            progress.message(f"removed {len(self.swept)} temporary file(s)/folder(s) left in {self.folder} by runs "
                             "that are gone")

    def check_free(self) -> None:
        """For a run that only reads the folder (a dry run: it writes nothing there, not even a lock file, and
        leaves a stale lock and temporaries to the next run): refuse or wait as :meth:`acquire` while a run (or a
        shard of one) holds it; nothing is taken, so a run may start right after.

        Raises:
            BusyError: a run holds the folder (not with ``wait``).
        """
        announced = False
        while not _free(self._main.path) or any(_held_by(p) is not None for p in self.lock_dir.glob("run.shard-*.lock")):
            announced = self._refused(announced)

    def _refused(self, announced: bool) -> bool:
        """The folder is held: raise :class:`~lipsyncctl.errors.BusyError` naming the holder, or (``wait``) say once
        that this run waits for it and pause; returns that it was said."""
        if self._other_job is not None:
            if not self.wait:
                raise BusyError(f"{self.folder}: shards of another job are writing to this folder: "
                                f"{self._other_job}; this run is a shard of {self.shard[1]}",
                                hint="the shards of one job share one --shard I/N count and its settings (or wait "
                                "with --wait)")
            who = self._other_job
        else:
            who = self.holder()
        if not self.wait:
            raise BusyError(f"{self.folder}: another run is writing to this folder ({who})", hint=self.hint)
        if not announced:
            progress.message(f"waiting for the run writing to {self.folder} to finish ({who})")
        time.sleep(POLL_SECONDS)
        return True

    def _try(self) -> bool:
        self._other_job = None
        if not self._main.take():
            return False
        if self._own is not None and not self._own.take():
            self._main.drop()
            return False
        if self._own is not None and (other := self._other_shards()) is not None:
            # shards of another split (0/2 beside 0/3) would compute the same items twice and never cover the set
            self._other_job = other
            self._own.drop()
            self._main.drop()
            return False
        return True

    def _other_shards(self) -> str | None:
        """A live shard of another job holding the folder (another split of the work, ``I/M`` with M not this run's
        count, or other settings: ``job``): who."""
        for path in self.lock_dir.glob("run.shard-*-of-*.lock"):
            count, _, job = path.stem.rsplit("-of-", 1)[-1].partition(".")
            if not count.isdigit() or (int(count), job or None) == (self.shard[1], self.job):
                continue
            if (who := _held_by(path)) is not None:
                what = f"a shard of {count}" if int(count) != self.shard[1] else "a shard of other settings"
                return f"{what} ({who})"
        return None

    def holder(self) -> str:
        """Who holds the folder now, as far as its lock files say (for the refusal message)."""
        paths = [self._own.path] if self._own is not None else sorted(self.lock_dir.glob("run.shard-*.lock"))
        for path in paths:  # a shard: the same shard first; a whole run: any shard first
            found = _held_by(path)
            if found is not None:
                return found
        holder = read_holder(self._main.path)
        return holder.describe() if holder is not None else UNNAMED

    def release(self) -> None:
        """Drop the lock (removing its files when no other run holds them) and the folders it created
        when they are left empty."""
        from lipsyncctl.folders import remove_empty

        if self._own is not None:
            self._own.drop()
        self._main.drop()
        remove_empty(self._created)
        self._created = []


UNNAMED = "another run (it has not written its name yet)"


def _free(path: Path) -> bool:
    """Whether no whole run holds the folder lock file ``path`` (none there, or nobody holds it exclusively: a job's
    shards hold it shared, and their own files say they run; a file system without locks counts as free, as
    :meth:`FolderLock.acquire` goes on there). Asked with a shared lock on a read-only descriptor, which NFS grants
    (an exclusive one there needs the file open for writing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # dropped with the descriptor
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF):
            return True
        raise
    finally:
        os.close(fd)


def _held_by(path: Path) -> str | None:
    """Who holds lock file ``path`` if a live run holds it now (a file nobody holds is stale: None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(path)
            return holder.describe() if holder is not None else UNNAMED
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, shard: tuple[int, int] = (0, 1), wait: bool = False,
                command: str | None = None, hint: str | None = None, job: str | None = None) -> Iterator[FolderLock]:
    """``with folder_lock(OUT):`` hold ``OUT``'s lock for the block (see :class:`FolderLock`)."""
    with FolderLock(folder, shard=shard, wait=wait, command=command, hint=hint, job=job) as lock:
        yield lock


@contextlib.contextmanager
def one_at_a_time(folder: str | Path, name: str) -> Iterator[None]:
    """A step the shards of one job (which share ``folder``'s lock) take one after another, waiting for each
    other: ``name`` (e.g. ``views``: a shard rebuilding the dataset's views from every record must not rename
    its files after those of a shard that finished later and saw more). Call it while holding the folder."""
    with taking_turns(Path(folder) / LOCK_FOLDER / f"{name}.lock"):
        yield


@contextlib.contextmanager
def taking_turns(lock_file: Path, *, waiting: str | None = None) -> Iterator[None]:
    """Hold ``lock_file`` (flock'd; made, and removed by its last holder) for the block, waiting while another
    process holds it; ``waiting``, said once when it has to wait (with the holder). Where the file system cannot
    lock, the block runs unlocked."""
    lock = _Flock(lock_file, shared=False)
    try:
        said = False
        while not lock.take():
            if waiting is not None and not said:
                progress.message(f"{waiting} ({_held_by(lock.path) or UNNAMED})")
                said = True
            time.sleep(POLL_SECONDS / 5)
        lock.write(Holder.me())
    except OSError as exc:  # (no lock file can be made here: a folder this process cannot write)
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES, errno.EROFS):
            raise
        if waiting is not None and exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            progress.warning(f"{lock_file.parent}: this file system cannot lock files ({exc.strerror}); make sure "
                             "no other run writes there now")
    try:
        yield
    finally:
        lock.drop()


def clear_output_lock(output: str | Path) -> bool:
    """Remove the lock file :func:`output_lock` left for ``output`` when nobody holds it (its holder was killed:
    the kernel let go of the lock, the file stayed); True when one was removed."""
    lock = _Flock(Path(output).parent / f".{Path(output).name}.lock", shared=False)
    if not lock.path.exists():
        return False
    try:
        if not lock.take():
            return False  # a live run holds it
    except OSError:
        return False
    lock.drop()
    return True


@contextlib.contextmanager
def output_lock(output: str | Path, *, what: str | Path | None = None, shared: str | None = None) -> Iterator[None]:
    """One run per output file (``sync -o OUT``; ``what`` names it where ``output`` is the file that stands for it, its
    record ``OUT.run.yaml``, which ``x.mov`` and ``x.mkv`` share: ``shared`` says which outputs do, in the refusal's
    hint): a hidden ``.NAME.lock`` beside it, flock'd for the block (the kernel
    lets go when the run ends, however it ends), naming its holder. A second run of the same output is refused at
    once (:class:`~lipsyncctl.errors.BusyError`, exit 6) rather than rendering a take that would replace the first's
    or be refused at its end. The output's folders still missing are made first, so a first run into a new folder
    locks too (two runs of one list rendered every row twice), and removed again if the block fails and leaves them
    empty. Nothing is locked where the file system cannot lock (a take another run put in place meanwhile is still
    refused at the end: :func:`lipsyncctl.media.atomic.move_new`).

    Raises:
        BusyError: another run is writing ``output``.
    """
    output = Path(output)
    lock = _Flock(output.parent / f".{output.name}.lock", shared=False)
    made: list[Path] = []  # the folders still missing, deepest first
    for folder in (output.parent, *output.parent.parents):
        if os.path.lexists(folder):
            break
        made.append(folder)
    if made:
        with contextlib.suppress(OSError):  # (an unwritable place: the run's own check names it)
            output.parent.mkdir(parents=True, exist_ok=True)
    ok = False
    if output.parent.is_dir():
        try:
            if not lock.take():
                holder = _held_by(lock.path) or UNNAMED
                if what is None:
                    raise BusyError(f"{output}: another run is writing this output ({holder})",
                                    hint="wait for it to finish, or write another -o")
                raise BusyError(f"{what}: another run is writing this output or another of its record {output.name} "
                                f"({holder})", hint="wait for it to finish, or write another -o"
                                + (f" ({shared})" if shared else ""))
            lock.write(Holder.me())
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES, errno.EROFS):
                raise
    try:
        yield
        ok = True
    finally:
        lock.drop()
        for folder in made if not ok else ():
            with contextlib.suppress(OSError):  # (not empty: another run's, or a file the block left)
                folder.rmdir()
