"""Timeline workers beyond this process: the runner's pool on a trivial task (progress in completion
order, threads per worker), the typed outcome across processes, Ray on a local CPU instance (~15 s; skipped
without the ``ray`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.timeline.job import run_timeline
from lipsyncctl.timeline.types import ShotOutcome, ShotStatus, TimelineJob
from tests.conftest import shared_path
from tests.timeline_media import clip, write_edit, write_sources


def edit(tmp_path: Path) -> Path:
    write_sources(tmp_path, shared_path("fixtures", "demo1_video.mp4"))
    return write_edit(tmp_path / "two.otio", [clip("A1", "cam_a.mkv", 4, 8, available=(0, 40)),
                                              clip("B1", "cam_b.mkv", 86408, 8, available=(86400, 30))],
                      name="two", start=86400)


def tiny_config() -> cfg.Config:
    return cfg.resolve("tiny", ["inference.steps=1", "timeline.handles=1", "faces.detect_every=3"])


@pytest.mark.slow  # opt-in (-m slow): keeps the default suite under 10 min
def test_ray_backend_on_a_local_cpu_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        job = TimelineJob(timeline=edit(tmp_path), output=tmp_path / "out",
                          audio=[("de", shared_path("fixtures", "demo1_audio.wav"))], backend="ray")
        res = run_timeline(job, tiny_config())
    finally:
        ray.shutdown()
    assert res.counts()["rendered"] == 2 and not res.failed
    shots = res.languages["de"].shots
    assert [s.rendered_frames for s in shots] == [10, 10]
    assert all(s.output is not None and Path(s.output).is_file() for s in shots)


def _slow_square(task: int, cache: dict, device: str | None) -> ShotOutcome:
    """A module-level executor (spawned workers import it): task 0 is slow, so it finishes last."""
    import time

    time.sleep(1.5 if task == 0 else 0.0)
    cache["calls"] = cache.get("calls", 0) + 1
    return ShotOutcome(ShotStatus.DONE, f"k{task}", segment=str(task), frames=task * task, seconds=0.1)


def test_pool_reports_each_task_as_it_finishes() -> None:
    from lipsyncctl import progress
    from lipsyncctl.runner.workers import run_tasks, worker_threads

    assert worker_threads(2, cpu_count=2) == 1 and worker_threads(1, cpu_count=16) == 16
    assert worker_threads(3, cpu_count=2) == 1
    done: list[tuple[int, ShotOutcome]] = []
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        run_tasks([0, 1, 2], _slow_square, lambda t, o: (done.append((t, o)), progress.message(f"done {t}")),
                  jobs=2, label="squares")
    assert sorted(t for t, _ in done) == [0, 1, 2] and done[-1][0] == 0  # completion order: the slow one last
    assert all(isinstance(o, ShotOutcome) and o.frames == t * t for t, o in done)  # typed, across processes
    messages = [e[1] for e in sink.events if e[0] == "message"]
    assert any("2 worker processes (" in m for m in messages)
    assert messages[-3:] == ["done 1", "done 2", "done 0"] or messages[-3:] == ["done 2", "done 1", "done 0"]
    starts = [e for e in sink.events if e[0] == "start" and e[2] == "squares"]
    task_id = starts[0][1]
    assert sum(e[2] for e in sink.events if e[0] == "advance" and e[1] == task_id) == 3


def test_outcome_round_trips_through_the_store_and_pickle(tmp_path: Path) -> None:
    import pickle

    from lipsyncctl.runner.store import JobStore

    oc = ShotOutcome(ShotStatus.NO_FACE, "abc", language="de", segment="001_A1", frames=10, faces_found=0,
                     no_face_frames=10, seconds=1.25, warnings=["w"], error="no face")
    assert pickle.loads(pickle.dumps(oc)) == oc
    store = JobStore(tmp_path)
    store.put("abc", oc.to_dict())
    back = ShotOutcome.from_dict(store.get("abc") or {})
    assert back == oc and back.status is ShotStatus.NO_FACE and oc.to_dict()["status"] == "no_face"
    assert ShotStatus.UNDER_MIN_SYNC.is_failure and not ShotStatus.NO_FACE.is_failure


def test_a_records_render_is_found_under_out_whatever_the_working_folder(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from lipsyncctl.runner.store import JobStore

    out = tmp_path / "show" / "out"
    render = out / ".lipsyncctl" / "renders" / "k.mov"
    render.parent.mkdir(parents=True)
    render.write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "show")
    JobStore(Path("out/.lipsyncctl/jobs")).put("k", {"status": "done", "output": "out/.lipsyncctl/renders/k.mov"})
    assert json.loads((out / ".lipsyncctl" / "jobs" / "k.json").read_text())["output"] == ".lipsyncctl/renders/k.mov"
    monkeypatch.chdir(tmp_path)
    assert JobStore(Path("show/out/.lipsyncctl/jobs")).get("k")["output"] == "show/out/.lipsyncctl/renders/k.mov"
    assert JobStore(out / ".lipsyncctl" / "jobs").get("k")["output"] == str(render)
    # a record an earlier version wrote (the path as its run's working folder named it) finds its render too
    (out / ".lipsyncctl" / "jobs" / "old.json").write_text(json.dumps({"status": "done", "output": "out/x/k.mov"}))
    assert JobStore(out / ".lipsyncctl" / "jobs").get("old")["output"] == str(render)
    # its render emptied or cut short since (a delivered version links to it, and a tool rewrote that file in place):
    # not finished (it was reused, and every later version linked the empty file); a touch is no change
    os.utime(render)
    assert JobStore(out / ".lipsyncctl" / "jobs").get("k") is not None
    render.write_bytes(b"")
    assert JobStore(out / ".lipsyncctl" / "jobs").get("k") is None
    assert JobStore(out / ".lipsyncctl" / "jobs").get("old")["output"] == str(render)  # (an older record: no size)
    render.unlink()
    assert JobStore(out / ".lipsyncctl" / "jobs").get("k") is None  # its render gone: not finished


def _children(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of the live (not zombie) child processes of ``pid`` (Linux /proc)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and stat[0] != "Z":
                found[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
@pytest.mark.slow  # 16 s (a process with two spawned workers); SIGTERM of one sync: test_cli_outputs
def test_sigterm_stops_worker_processes_within_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14.3: SIGTERM to a ``--jobs 2`` run (its pid only, as a scheduler's time limit sends it) ends the
    run and both workers within a few seconds (exit 130), and leaves no half-written shot or temporary."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lipsyncctl", "-q", "sync", "--timeline", str(edit(tmp_path)), "--audio",
           f"de={shared_path('fixtures', 'demo1_audio.wav')}", "-o", str(out), "--preset", "tiny", "--steps", "8",
           "--handles", "1", "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shots = out / ".lipsyncctl" / "renders"  # the render cache (deliveries link to it)
    deadline = time.monotonic() + 180
    while not (shots.is_dir() and any(p.name.startswith(".") for p in shots.iterdir())):  # a shot is being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    workers = [pid for pid, cmdline in _children(proc.pid).items() if "spawn_main" in cmdline]
    assert len(workers) == 2
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    took = time.monotonic() - t0
    for _ in range(50):  # the workers were joined by the parent; allow /proc a moment
        if not any(_alive(pid) for pid in workers):
            break
        time.sleep(0.1)
    assert rc == 130 and took < 5.0, (rc, took)
    assert not any(_alive(pid) for pid in workers)
    assert "error: interrupted" in (proc.stderr.read().decode() if proc.stderr else "")
    if out.exists():  # no temporary left, and a shot that is there was finished (renamed complete)
        from lipsyncctl.media.probe import probe

        assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.name != ".lipsyncctl"]
        assert all(probe(p).video.frame_count == 10 for p in out.rglob("*.mp4"))  # type: ignore[union-attr]


def _killed_on_two(task: int, cache: dict, device: str | None) -> int:
    """Task 2 dies as the out-of-memory killer would kill it."""
    import os
    import signal
    import time

    if task == 2:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    return task


def test_a_worker_killed_from_outside_fails_the_job_with_a_reason() -> None:
    """kill -9 of a worker (the OOM killer): a JobFailedError (exit 1) saying so and what to do, not an internal
    error about a broken process pool; what finished before was reported."""
    from lipsyncctl.errors import JobFailedError
    from lipsyncctl.runner.workers import run_tasks

    done: list[int] = []
    with pytest.raises(JobFailedError) as err:
        run_tasks([0, 1, 2, 3], _killed_on_two, lambda t, o: done.append(o), jobs=2)
    assert "worker process died" in err.value.message and "--jobs" in err.value.hint
    assert err.value.exit_code == 1 and set(done) <= {0, 1, 3}


def test_a_worker_killed_from_outside_loses_its_task_only_when_the_caller_says_how() -> None:
    """With ``lost``, the task whose worker was killed is reported with the caller's failure outcome and every
    other task still finishes in fresh workers (a batch went on without the other worker's clip: exit 1, 8 rows
    unfinished)."""
    from lipsyncctl.runner.workers import run_tasks

    done: dict[int, object] = {}
    run_tasks(list(range(6)), _killed_on_two, lambda t, o: done.__setitem__(t, o), jobs=2,
              lost=lambda t, why: f"lost: {why}")
    assert sorted(done) == list(range(6))
    assert str(done[2]).startswith("lost: its worker process died running it")
    assert all(done[t] == t for t in (0, 1, 3, 4, 5))


def _parent_of_workers() -> None:  # pragma: no cover - runs in a child process
    """A job whose two workers write their pids to ``$PIDS_FILE`` and sleep; it waits to be killed."""
    import time

    from lipsyncctl.runner.workers import run_tasks

    run_tasks([0, 1], _write_pid_and_sleep, lambda t, o: None, jobs=2)
    time.sleep(60)


def _write_pid_and_sleep(task: int, cache: dict, device: str | None) -> int:
    import os
    import time

    with open(os.environ["PIDS_FILE"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(60)
    return task


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of the job: its workers end within seconds (they rendered on for nobody, their outputs unrecorded,
    ~700 MB each held for good)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    pids = tmp_path / "pids"
    code = "import sys; sys.path.insert(0, '.'); from tests.unit.test_timeline_backends import _parent_of_workers; " \
        "_parent_of_workers()"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PIDS_FILE": str(pids)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = [int(p) for p in pids.read_text().split()]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    try:
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "the workers outlived their killed parent"
    finally:  # none left behind by a failure
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _staged(task: int, cache: dict, device: str | None) -> int:
    """A task with a stage of its own (as a clip's faces, denoise, render) and a note."""
    from lipsyncctl import progress

    with progress.Task(f"stage {task}", total=3) as stage:
        stage.advance(2)
        stage.advance(1)
    progress.message("face detector: dlib")
    progress.warning("said once")
    return task


def test_a_workers_progress_is_shown_under_the_jobs_task() -> None:
    """With ``--jobs N`` each worker's stages reach the parent's progress (a farm's log saw only the clips as they
    finished: 0 % for a whole clip), under the job's task, with this process's ids, each named after the task its
    worker runs (two workers' ``lines`` interleave in a log)."""
    from lipsyncctl import progress
    from lipsyncctl.runner.workers import run_tasks

    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        run_tasks([0, 1], _staged, lambda t, o: None, jobs=2, label="clips", name=lambda t: f"clip{t}.mov")
    starts = {e[2]: e for e in sink.events if e[0] == "start"}
    clips = starts["clips"][1]
    for name in ("clip0.mov: stage 0", "clip1.mov: stage 1"):
        _, task_id, _, total, parent = starts[name]
        assert total == 3 and parent == clips and task_id != clips
        assert sum(e[2] for e in sink.events if e[0] == "advance" and e[1] == task_id) == 3
        assert ("finish", task_id) in sink.events
    notes = sorted(e[1] for e in sink.events if e[0] == "message" and "dlib" in e[1])
    assert notes == ["clip0.mov: face detector: dlib", "clip1.mov: face detector: dlib"]


def test_in_this_process_each_tasks_stages_are_named_as_a_workers_are() -> None:
    # one process (the default --jobs 1) showed `faces 40/90` for every row of a 500-row batch: which row, a farm's
    # log could not say (workers' lines said `[2/9] out.mp4: faces`)
    from lipsyncctl import progress
    from lipsyncctl.runner.workers import run_tasks

    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        run_tasks([0, 1], _staged, lambda t, o: progress.message(f"done {t}"), label="clips",
                  name=lambda t: f"clip{t}.mov")
        with progress.Task("after") as after:  # outside a task's work: as it was
            pass
    starts = {e[2]: e for e in sink.events if e[0] == "start"}
    assert set(starts) == {"clips", "clip0.mov: stage 0", "clip1.mov: stage 1", "after"} and after.description == "after"
    assert starts["clip1.mov: stage 1"][4] == starts["clips"][1]  # under the job's task
    said = [e[1] for e in sink.events if e[0] == "message"]
    assert [m for m in said if "done" in m] == ["done 0", "done 1"]  # the caller's own: unnamed
    # a task's notes name it (two workers' "face detector: dlib" could not be told apart); warnings are said once
    assert [m for m in said if "dlib" in m] == ["clip0.mov: face detector: dlib", "clip1.mov: face detector: dlib"]
    assert [m for m in said if "said once" in m] == [progress.WARNING_PREFIX + "said once"] * 2


def _quick(task: int, cache: dict, device: str | None) -> int:
    return task


def _dies_idle_after_zero(task: int, cache: dict, device: str | None) -> int:
    """Task 0 waits until task 1 has started in the other worker (``$STARTED_FILE``; else its own worker could take
    task 1 once free), returns, and its worker is killed half a second later, idle (no task left for it); task 1
    runs on in the other worker meanwhile."""
    import os
    import signal
    import threading
    import time

    marker = os.environ["STARTED_FILE"]
    if task == 0:
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGKILL)).start()
    else:
        open(marker, "w").close()
        time.sleep(2.0)
    return task


def test_a_long_list_and_a_worker_killed_between_tasks_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3000 tasks with ``lost`` (the batch's case) finish: the workers' start records once filled a pipe nobody read
    and the job hung for good; a worker killed between two tasks loses none of them (the job stopped)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys; sys.path.insert(0, '.'); from lipsyncctl.runner.workers import run_tasks; "
            "from tests.unit.test_timeline_backends import _quick; done = []; "
            "run_tasks(list(range(3000)), _quick, lambda t, o: done.append(o), jobs=2, lost=lambda t, w: None); "
            "assert sorted(done) == list(range(3000)), len(done)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=180)

    from lipsyncctl.runner.workers import run_tasks

    monkeypatch.setenv("STARTED_FILE", str(tmp_path / "started"))
    done: dict[int, object] = {}
    run_tasks([0, 1], _dies_idle_after_zero, lambda t, o: done.__setitem__(t, o), jobs=2,
              lost=lambda t, why: f"lost: {why}")
    assert done == {0: 0, 1: 1}  # task 1, cut short by the pool's end, ran again in a fresh worker


def test_a_workers_advances_are_added_up_between_sends() -> None:
    """A worker sent one queue message (a pickle and a pipe write) per frame for a line shown at most once a second:
    its advances go at most every ADVANCE_EVERY seconds and when the task reaches its total, the rest before its
    finish; the parent sees the same count."""
    from lipsyncctl.runner.workers import _QueueSink

    class Events(list):  # type: ignore[type-arg]
        def put(self, event: tuple) -> None:  # type: ignore[type-arg]
            self.append(event)

    events = Events()
    sink = _QueueSink(events)
    sink.start(1, "faces", 100, None)
    for _ in range(100):
        sink.advance(1, 1)
    sink.start(2, "count", None, None)
    for _ in range(7):
        sink.advance(2, 1)
    sink.finish(2)
    sink.finish(1)
    advances = {k: [e[3] for e in events if e[0] == "advance" and e[2] == k] for k in (1, 2)}
    assert sum(advances[1]) == 100 and len(advances[1]) < 10  # the total's step is sent at once
    assert sum(advances[2]) == 7 and len(advances[2]) <= 2  # the rest before its finish
    assert [e[0] for e in events if e[2] == 2][-1] == "finish"


def test_the_pool_holds_a_few_tasks_a_worker_in_flight_and_runs_every_one() -> None:
    """Tasks go to the pool a few a worker at a time (``IN_FLIGHT``), each submitted as one finishes: all submitted at
    once, each wait for the next completion walked every unfinished future (4k tasks 1.1 ms each, 32k 3 ms:
    quadratic, hours at a million sources). Every task runs once, its outcome reported once."""
    from concurrent.futures import ProcessPoolExecutor

    from lipsyncctl.runner import workers

    submitted: list[int] = []
    done: list[int] = []
    in_flight: list[int] = []
    submit = ProcessPoolExecutor.submit

    def counting(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        submitted.append(args[1])
        in_flight.append(len(submitted) - len(done))
        return submit(self, fn, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessPoolExecutor, "submit", counting)
        workers.run_tasks(list(range(300)), _quick, lambda t, o: done.append(o), jobs=2)
    assert sorted(done) == list(range(300)) and sorted(submitted) == list(range(300))
    assert max(in_flight) == 2 * workers.IN_FLIGHT  # the window is full, never more


def _logged_and_two_dies(task: int, cache: dict, device: str | None) -> int:
    """Each run of a task is logged in ``$RUNS_FILE``; task 2's worker is killed 0.7 s into it."""
    import os
    import signal
    import time

    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(f"{task}\n")
    if task == 2:
        time.sleep(0.7)
        os.kill(os.getpid(), signal.SIGKILL)
    return task


def test_tasks_finished_beside_a_worker_death_found_at_submit_are_not_run_again(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent busy reporting a task (``on_done``) while a worker dies finds the pool broken when it submits the
    next: the tasks that finished meanwhile are collected first, reported once and not run again (a batch row
    rendered twice, or reported 'skipped' as if made by another run); the dead worker's task is lost, the rest run."""
    import time

    from lipsyncctl.runner.workers import run_tasks

    runs = tmp_path / "runs"
    monkeypatch.setenv("RUNS_FILE", str(runs))
    done: list[object] = []

    def on_done(task: int, outcome: object) -> None:
        if task == 0:
            time.sleep(2.0)  # the worker running task 2 dies meanwhile, the other finishes what it was given
        done.append(outcome)

    run_tasks(list(range(20)), _logged_and_two_dies, on_done, jobs=2, lost=lambda t, why: f"lost {t}")
    assert sorted(int(n) for n in runs.read_text().split()) == list(range(20))  # each run once
    assert sorted(str(o) for o in done) == sorted([*(str(t) for t in range(20) if t != 2), "lost 2"])


@pytest.mark.slow  # opt-in (-m slow): a Ray instance of its own
def test_ray_gets_a_window_of_tasks_and_runs_each_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More tasks than Ray's window (IN_FLIGHT a CPU of the cluster, at least RAY_IN_FLIGHT): each runs once, each
    outcome reported once."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    from lipsyncctl.runner import workers

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(workers, "RAY_IN_FLIGHT", 2)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        done: list[int] = []
        workers.run_tasks(list(range(23)), _quick, lambda t, o: done.append(o), backend="ray")
        # a task whose Ray worker dies (killed for memory) is lost alone where the caller says how, as with --jobs
        # (it stopped the whole job: a curate's other sources too)
        outcomes: list[Any] = []
        from lipsyncctl import progress

        sink = progress.RecordingSink()
        with progress.use_sink(sink):
            workers.run_tasks([0, 1, 2], _dies_on_one, lambda t, o: outcomes.append(o), backend="ray",
                              lost=lambda t, why: ("lost", t, "Ray worker died" in why), name=lambda t: f"task{t}")
        # each says it has finished, by name (a Ray run's progress was the count alone)
        assert sorted(e[1] for e in sink.events if e[0] == "message" and "finished" in e[1]) == [
            "task0: finished", "task1: finished", "task2: finished"]
    finally:
        ray.shutdown()
    assert sorted(done) == list(range(23))
    assert sorted(outcomes, key=str) == sorted([0, 2, ("lost", 1, True)], key=str)


def _dies_on_one(task: int, cache: dict, device: str | None) -> int:
    import os

    if task == 1:
        os._exit(1)  # (as the out-of-memory killer ends a worker)
    return task


def test_workers_share_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # a SLURM task's or container's cpuset: workers sized by the machine's core count oversubscribed it
    import os

    from lipsyncctl.runner import workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert workers.available_cores() == 4 and workers.worker_threads(2) == 2 and workers.worker_threads(8) == 1


def test_a_ray_address_that_does_not_answer_is_said_before_ray_tries_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # ray.init retried an unreachable RAY_ADDRESS for minutes with its own log lines; a SIGTERM then (its handler's,
    # not the CLI's) ended the run with exit 15 and no JSON
    import socket

    from lipsyncctl.errors import MissingToolError
    from lipsyncctl.runner import workers

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(MissingToolError, match=f"RAY_ADDRESS=127.0.0.1:{port} does not answer") as err:
        workers._check_ray_address(f"127.0.0.1:{port}")
    assert err.value.exit_code == 4 and "ray start --head" in err.value.hint
    for left_to_ray in ("", "auto", "local", "http://127.0.0.1:9"):  # (a dashboard's address: Ray's own rules)
        workers._check_ray_address(left_to_ray)
