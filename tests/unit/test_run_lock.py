"""One run per output folder (lipsyncctl.runner.lock): a second run is refused naming the holder (exit 6) or
waits; a lock left by a ``kill -9`` is replaced; shards of one job share the folder; the timeline and
curate commands take it. Holders are real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsyncctl import progress
from lipsyncctl.errors import BusyError
from lipsyncctl.runner.lock import FolderLock, read_holder
from tests.conftest import REPO

HOLD = """
import sys, time
from lipsyncctl.runner.lock import FolderLock
lock = FolderLock(sys.argv[1], shard=(int(sys.argv[2]), int(sys.argv[3])), command="holder run")
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def _hold(folder: Path, shard: tuple[int, int] = (0, 1)) -> subprocess.Popen[str]:
    """A process holding ``folder``'s lock (as shard ``shard``) until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(shard[0]), str(shard[1])], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_second_run_is_refused_naming_the_holder(tmp_path: Path, holders) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    holders.append(holder := _hold(out))
    with pytest.raises(BusyError) as err:
        FolderLock(out).acquire()
    assert err.value.exit_code == 6 and "\n" not in str(err.value)
    assert f"pid {holder.pid} on " in str(err.value) and "holder run" in str(err.value) and str(out) in str(err.value)
    assert "--wait" in err.value.hint


def test_wait_starts_when_the_holder_finishes(tmp_path: Path, holders) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    holders.append(holder := _hold(out))
    threading.Timer(1.0, holder.terminate).start()
    sink = progress.RecordingSink()
    t0 = time.monotonic()
    with progress.use_sink(sink), FolderLock(out, wait=True) as lock:
        assert time.monotonic() - t0 >= 0.9
        assert read_holder(lock.path).pid == os.getpid()  # type: ignore[union-attr]
    assert any("waiting for the run writing to" in e[1] and f"pid {holder.pid}" in e[1]
               for e in sink.events if e[0] == "message")
    assert not (out / ".lipsyncctl" / "run.lock").exists()  # removed on release


def test_lock_of_a_killed_run_is_replaced(tmp_path: Path, holders) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    holders.append(holder := _hold(out))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    stale = read_holder(out / ".lipsyncctl" / "run.lock")
    assert stale is not None and stale.pid == holder.pid  # the file is still there, naming the dead run
    sink = progress.RecordingSink()
    with progress.use_sink(sink), FolderLock(out) as lock:
        assert read_holder(lock.path).pid == os.getpid()  # type: ignore[union-attr]
    assert any("replacing the lock of a run that is gone" in e[1] and f"pid {holder.pid}" in e[1]
               for e in sink.events if e[0] == "message")


def test_shards_share_the_folder_but_not_a_shard(tmp_path: Path, holders) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    holders.append(first := _hold(out, (0, 2)))
    with FolderLock(out, shard=(1, 2)):  # another shard of the job: side by side
        with pytest.raises(BusyError, match=f"pid {first.pid}"):
            FolderLock(out, shard=(0, 2)).acquire()  # the same shard again
        with pytest.raises(BusyError, match=f"pid {first.pid}"):
            FolderLock(out).acquire()  # a whole run beside shards
    first.kill()
    first.wait()
    with FolderLock(out):  # every shard gone: the whole run may start, and removes the shard's stale file
        assert [p.name for p in (out / ".lipsyncctl").iterdir()] == ["run.lock"]
    assert list((out / ".lipsyncctl").iterdir()) == []


def test_shards_of_another_split_are_kept_out(tmp_path: Path, holders) -> None:  # type: ignore[no-untyped-def]
    # 0/2 and 0/3 side by side computed the same items twice, and never covered the set together
    out = tmp_path / "out"
    holders.append(first := _hold(out, (0, 2)))
    with pytest.raises(BusyError) as err:
        FolderLock(out, shard=(0, 3)).acquire()
    assert f"shards of another job are writing to this folder: a shard of 2 (pid {first.pid}" in err.value.message
    assert "this run is a shard of 3" in err.value.message and "--shard I/N" in err.value.hint
    assert not (out / ".lipsyncctl" / "run.shard-0-of-3.lock").exists()  # took nothing
    with FolderLock(out, shard=(1, 2)):  # its own job's shard: beside it, as ever
        pass
    first.kill()
    first.wait()
    with FolderLock(out, shard=(0, 3)):  # that job gone: another split may start
        pass
    # shards of one count but other settings (their caller's job key) are another job too
    with FolderLock(out, shard=(0, 2), job="aaaa"):
        with pytest.raises(BusyError, match="a shard of other settings"):
            FolderLock(out, shard=(1, 2), job="bbbb").acquire()
        with pytest.raises(BusyError, match="a shard of other settings"):
            FolderLock(out, shard=(0, 2), job="bbbb").acquire()  # the same shard, other settings
        with FolderLock(out, shard=(1, 2), job="aaaa"):
            pass


def test_a_whole_run_keeps_shards_out(tmp_path: Path, holders) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    holders.append(whole := _hold(out))
    with pytest.raises(BusyError, match=f"pid {whole.pid}"):
        FolderLock(out, shard=(1, 2)).acquire()


def test_timeline_and_curate_refuse_a_held_folder(tmp_path: Path, holders, models_dir: Path,  # type: ignore[no-untyped-def]
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl.cli.main import main
    from tests.conftest import shared_path
    from tests.unit.test_timeline_backends import edit

    timeline, dub = edit(tmp_path), shared_path("fixtures", "demo1_audio.wav")
    out = tmp_path / "out"
    holders.append(holder := _hold(out))
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", "--timeline", str(timeline), "--audio", f"de={dub}", "-o", str(out),
               "--preset", "tiny"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert rc == 6 and doc["error"]["exit_code"] == 6 and f"pid {holder.pid}" in doc["error"]["message"]
    assert captured.err.count("error:") == 1 and f"pid {holder.pid}" in captured.err.splitlines()[0]
    assert sorted(p.name for p in out.rglob("*")) == [".lipsyncctl", "run.lock"]  # nothing written

    rc = main(["-q", "curate", str(tmp_path / "cam_a.mkv"), "-o", str(out), "--until", "probe"])
    assert rc == 6 and f"pid {holder.pid}" in capsys.readouterr().err
    # a dry run too (its plan would be a snapshot telling to rerun what the run is measuring; --wait waits)
    rc = main(["-q", "curate", str(tmp_path / "cam_a.mkv"), "-o", str(out), "--dry-run"])
    assert rc == 6 and f"pid {holder.pid}" in capsys.readouterr().err


def test_shards_take_a_step_one_at_a_time(tmp_path: Path) -> None:
    """``one_at_a_time``: a second holder (another shard's views) waits until the first one is done."""
    from lipsyncctl.runner.lock import one_at_a_time

    (tmp_path / ".lipsyncctl").mkdir()
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with one_at_a_time(tmp_path, "views"):
            order.append("first in")
            inside.set()
            time.sleep(0.5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    with one_at_a_time(tmp_path, "views"):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]
    assert not (tmp_path / ".lipsyncctl" / "views.lock").exists()  # removed by the last holder


def test_an_output_lock_in_a_folder_not_made_yet_locks_and_tidies(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two runs of one list into a new folder rendered every row twice: the first took no lock (its folder was not
    there yet). The folder is made to lock in, and removed again when the block fails and leaves it empty."""
    import pytest

    from lipsyncctl.errors import BusyError
    from lipsyncctl.runner.lock import output_lock

    out = tmp_path / "ep01" / "shots" / "x.run.yaml"
    with output_lock(out):
        assert out.parent.is_dir()
        with pytest.raises(BusyError, match="another run is writing this output"), output_lock(out):
            pass
    with pytest.raises(RuntimeError), output_lock(tmp_path / "ep02" / "shots" / "y.run.yaml"):
        raise RuntimeError("the render failed")
    assert not (tmp_path / "ep02").exists()


def test_a_lock_file_is_never_written_through_a_link(tmp_path: Path) -> None:
    """A link planted under a lock file's name (a shared, group-writable output folder) had its target emptied and
    overwritten with the lock's JSON, then the link removed. Now it is refused, naming it, and nothing is touched."""
    import pytest

    from lipsyncctl.errors import UsageError
    from lipsyncctl.runner.lock import folder_lock, output_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("user data")
    (tmp_path / ".x.run.yaml.lock").symlink_to(victim)
    with pytest.raises(UsageError, match="x.run.yaml.lock is not a lock file lipsyncctl made"), \
            output_lock(tmp_path / "x.run.yaml"):
        pass
    (tmp_path / "out" / ".lipsyncctl").mkdir(parents=True)
    (tmp_path / "out" / ".lipsyncctl" / "run.lock").symlink_to(victim)
    with pytest.raises(UsageError, match="run.lock is not a lock file"), folder_lock(tmp_path / "out"):
        pass
    assert victim.read_text() == "user data" and (tmp_path / ".x.run.yaml.lock").is_symlink()


def test_another_users_lock_file_locks_through_a_read_only_descriptor(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In a shared folder another user's lock file (0644 by their umask) cannot be opened for writing: the block ran
    unlocked, beside the other user's. It is flock'd through a read-only descriptor now."""
    import fcntl
    import os
    import threading

    from lipsyncctl.runner.lock import taking_turns

    lock = tmp_path / ".fetch.lock"
    lock.write_text("")
    real = os.open

    def as_another_user(path, flags, *args):  # type: ignore[no-untyped-def]
        if str(path) == str(lock) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", as_another_user)
    theirs = real(str(lock), os.O_RDONLY)
    fcntl.flock(theirs, fcntl.LOCK_EX)  # the other user's run holds it
    entered = threading.Event()

    def mine() -> None:
        with taking_turns(lock):
            entered.set()

    thread = threading.Thread(target=mine)
    thread.start()
    assert not entered.wait(1.0)  # it waits (it ran at once)
    fcntl.flock(theirs, fcntl.LOCK_UN)
    os.close(theirs)
    thread.join(10)
    assert entered.is_set()
