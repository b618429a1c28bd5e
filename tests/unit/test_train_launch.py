"""Launching ``lipsyncctl train`` in several processes: torch's elastic launcher (DDP) or ``accelerate launch``
with an accelerate config file (``--accelerate-config``). The shipped example files parse with accelerate's own
loader; the command line is the one accelerate's own launch parser reads back; DeepSpeed is refused before
anything starts (the loop does not support it yet), and so is FSDP on the CPU (accelerate would quietly run
DDP); FSDP on a GPU trains, resumes and matches plain training (gpu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lipsyncctl.errors import ConfigError
from lipsyncctl.training import launch

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--preset", "tiny", "--data", "d", "-o", "r"]


def test_shipped_configs_parse_with_accelerates_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    shipped = launch.accelerate_configs()
    assert set(shipped) == {"fsdp", "deepspeed_zero2"}
    fsdp = load_config_from_file(str(shipped["fsdp"]))
    assert isinstance(fsdp, ClusterConfig) and fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT" and fsdp.fsdp_config["fsdp_use_orig_params"]
    ds = load_config_from_file(str(shipped["deepspeed_zero2"]))
    assert ds.distributed_type == DistributedType.DEEPSPEED and ds.deepspeed_config["zero_stage"] == 2
    file, config = launch.read_accelerate_config("fsdp")
    assert file == shipped["fsdp"] and config.distributed_type == DistributedType.FSDP
    assert launch.read_accelerate_config(str(shipped["fsdp"]))[0] == shipped["fsdp"]
    # by its file name too, as the README and the folder name it, unless a file of that name is here
    monkeypatch.chdir(tmp_path)
    assert launch.read_accelerate_config("fsdp.yaml")[0] == shipped["fsdp"]
    (tmp_path / "fsdp.yaml").write_text((shipped["fsdp"]).read_text().replace("FULL_SHARD", "SHARD_GRAD_OP"))
    assert launch.read_accelerate_config("fsdp.yaml")[0] == Path("fsdp.yaml")


def test_deepspeed_and_bad_files_are_refused_before_launch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DeepSpeed is not supported") as e:
        launch.launch(ARGS, 2, accelerate_config="deepspeed_zero2")
    assert e.value.exit_code == 3 and "fsdp.yaml" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="no such file"):
        launch.read_accelerate_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: WARP_DRIVE\n")
    with pytest.raises(ConfigError, match="accelerate cannot read it"):
        launch.read_accelerate_config(bad)
    tpu = tmp_path / "tpu.yaml"
    tpu.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: XLA\n")
    with pytest.raises(ConfigError, match="XLA is not supported"):
        launch.read_accelerate_config(tpu)


def test_the_command_line_is_what_accelerate_launch_reads() -> None:
    from accelerate.commands.launch import launch_command_parser

    file = launch.accelerate_configs()["fsdp"]
    cmd = launch.launch_command(ARGS, 2, port=29611, accelerate_config=file)
    assert cmd[:4] == [sys.executable, "-m", launch.LAUNCHER, "accelerate"]  # accelerate launch, quietly
    args = launch_command_parser().parse_args(cmd[4:])
    # no --cpu: accelerate launch would start one plain process (a CPU group hides the GPUs instead)
    assert (args.config_file, args.num_processes, args.main_process_port, args.cpu) == (str(file), 2, 29611, False)
    assert args.module and args.training_script == "lipsyncctl" and args.training_script_args == ["train", *ARGS]
    # without N the file's num_processes stays; without a file: torch's elastic launcher (plain DDP)
    keep = launch_command_parser().parse_args(launch.launch_command(ARGS, None, port=1, accelerate_config=file)[4:])
    assert keep.num_processes is None
    ddp = launch.launch_command(ARGS, 3, port=1)
    assert ddp[1:4] == ["-m", launch.LAUNCHER, "torch"] and ddp[ddp.index("--nproc-per-node") + 1] == "3"


def test_the_cli_passes_everything_but_the_launch_options() -> None:
    from lipsyncctl.cli.train import _without_launch_options

    argv = ["lipsyncctl", "--json", "train", "--preset", "tiny", "--nproc", "2", "--accelerate-config", "fsdp",
            "--data", "d", "--gpus=2", "--accelerate-config=x.yaml", "-o", "r"]
    assert _without_launch_options(argv) == ["--preset", "tiny", "--data", "d", "-o", "r", "--json"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lipsyncctl", *args]


def test_fsdp_on_the_cpu_is_refused_not_silently_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate runs an FSDP config on the CPU as plain DDP: the launcher and the loop say so instead."""
    with pytest.raises(ConfigError, match="FSDP on GPUs only"):
        launch.launch(ARGS, 2, cpu=True, accelerate_config="fsdp")
    from lipsyncctl.training.config import resolve_train_config
    from lipsyncctl.training.loop import _sharded

    class CpuGroup:  # what accelerate reports for such a group
        distributed_type = "DistributedType.MULTI_CPU"

    cfg = resolve_train_config("tiny-syncnet")
    assert _sharded(CpuGroup(), cfg) is False
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP on GPUs only"):
        _sharded(CpuGroup(), cfg)


@pytest.mark.gpu  # accelerate runs FSDP on CUDA only (CPU groups become DDP)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fsdp_on_a_gpu_trains_resumes_and_matches_plain_training(tmp_path: Path) -> None:
    """One FSDP process on a GPU through the shipped fsdp.yaml: 2 steps, then a resume (its optimizer shard)
    to 3 steps equals 3 plain steps; the export gathers whole weights."""
    from safetensors.torch import load_file

    from tests.train_media import curated_folder

    data = curated_folder(tmp_path / "c").data
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = ["train", "--preset", "tiny-syncnet", "--data", str(data), "--save-every", "1", "--device", "cuda",
            "--mixed-precision", "no", "--set", "run.deterministic=true"]
    one = subprocess.run(_cli(*base, "-o", str(tmp_path / "one"), "--max-steps", "3"), env=env,
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    fsdp = [*base, "-o", str(tmp_path / "fsdp"), "--gpus", "1", "--accelerate-config", "fsdp"]
    first = subprocess.run(_cli(*fsdp, "--max-steps", "2"), env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    step2 = tmp_path / "fsdp" / "checkpoints" / "step-000002"
    assert {p.name for p in step2.iterdir()} >= {"model.safetensors", "state.pt", "state-rank0.pt"}
    again = subprocess.run(_cli(*fsdp, "--max-steps", "3", "--resume", "latest"), env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    wa = load_file(tmp_path / "one" / "export" / "syncnet.safetensors")
    wb = load_file(tmp_path / "fsdp" / "export" / "syncnet.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_ranks_error_reaches_the_caller_once_with_its_exit_code(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`train --nproc N`: a rank's error (here a missing --data: bad input, 5) is the command's, printed once
    (one JSON document), without the launcher's traceback."""
    from lipsyncctl.cli.main import main

    rc = main(["--json", "train", "--preset", "tiny", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "r"),
               "--nproc", "1"])
    out, err = capsys.readouterr()
    assert rc == 5
    doc = json.loads(out)  # exactly one document
    assert doc["ok"] is False and doc["error"]["exit_code"] == 5
    assert doc["error"]["message"] == f"rank 0: {tmp_path / 'none'}: no such folder or fileslist"
    assert "Traceback" not in err and err.count("error: rank 0:") == 1


SLEEPER = """
import os, signal, sys, time
out = sys.argv[1]
def stop(signum, frame):
    open(out + ".cleaned", "w").write("yes")  # what a rank does on SIGTERM: remove its temporaries, exit 130
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
open(out, "w").write(str(os.getpid()))
time.sleep(120)
"""


def test_stopping_a_group_stops_its_ranks(tmp_path: Path) -> None:
    """Ctrl-C/SIGTERM of `train --nproc/--gpus N` (:func:`launch.stop_group`): the ranks get SIGTERM through the
    launcher and clean up; none is left running (a killed launcher used to leave them training)."""
    import time

    script, pid_file = tmp_path / "rank.py", tmp_path / "rank.pid"
    script.write_text(SLEEPER)
    proc = subprocess.Popen([sys.executable, "-m", launch.LAUNCHER, "torch", "--nproc-per-node", "1",
                             "--master-port", str(launch.free_port()), str(script), str(pid_file)],
                            cwd=REPO, start_new_session=True, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "LOGLEVEL"})
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    rank = int(pid_file.read_text())
    launch.stop_group(proc, grace=20)
    assert proc.returncode is not None
    assert (tmp_path / "rank.pid.cleaned").read_text() == "yes"
    # the launcher's notices of the stop (a line a rank: "Sending process N closing signal SIGTERM") are not said
    assert proc.stderr is not None and "signal" not in proc.stderr.read()
    with pytest.raises(ProcessLookupError):
        os.kill(rank, 0)


def test_an_interrupted_launch_stops_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = []

    class Interrupted(subprocess.Popen):  # type: ignore[type-arg]
        def wait(self, timeout=None):  # type: ignore[no-untyped-def]
            if not stopped:
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(launch, "launch_command", lambda *a, **k: [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(launch.subprocess, "Popen", Interrupted)
    monkeypatch.setattr(launch, "stop_group", lambda proc: (stopped.append(proc), proc.kill(), proc.wait()))
    with pytest.raises(KeyboardInterrupt):
        launch.launch(ARGS, 1, cpu=True)
    assert len(stopped) == 1 and stopped[0].returncode is not None


def test_an_interrupted_group_says_how_far_its_ranks_got(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranks' own interrupt error (a checkpoint to resume, or none) is the command's, not a bare interrupt
    (whose hint said to resume a run that had no checkpoint)."""
    from lipsyncctl.errors import RANK_ERROR_FILE_ENV, Interrupted

    class Stopped(subprocess.Popen):  # type: ignore[type-arg]
        def wait(self, timeout=None):  # type: ignore[no-untyped-def]
            if timeout is None:
                raise KeyboardInterrupt
            return super().wait(timeout)

    rank = ("import json, os; json.dump({'message': 'interrupted', 'hint': 'nothing was checkpointed', "
            f"'exit_code': 130, 'rank': 1}}, open(os.environ['{RANK_ERROR_FILE_ENV}'], 'w'))")
    monkeypatch.setattr(launch, "launch_command", lambda *a, **k: [sys.executable, "-c", rank])
    monkeypatch.setattr(launch.subprocess, "Popen", Stopped)
    monkeypatch.setattr(launch, "stop_group", lambda proc: proc.wait(60))
    with pytest.raises(Interrupted, match="rank 1: interrupted") as err:
        launch.launch(ARGS, 2, cpu=True)
    assert err.value.hint == "nothing was checkpointed" and err.value.exit_code == 130


def test_gpus_without_that_many_gpus_is_exit_4_before_any_process(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`train --gpus 2` on a machine with fewer CUDA GPUs visible used to run two CPU processes, hours slower,
    without a word; it is a missing device now (exit 4, naming --nproc), and nothing is started."""
    from lipsyncctl.cli.main import main
    from lipsyncctl.errors import DeviceError

    def no_start(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a process was started")

    monkeypatch.setattr(launch.subprocess, "Popen", no_start)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"--gpus 2: this machine has 1 CUDA GPU\(s\) visible") as err:
        launch.launch(ARGS, 2)
    assert "--nproc" in err.value.hint
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["--json", "train", "--preset", "tiny", "--data", "d", "-o", "r", "--gpus", "1"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 4 and "0 CUDA GPU(s) visible" in doc["error"]["message"]
    with pytest.raises(AssertionError, match="a process was started"):  # --nproc: the CPU, no GPU needed
        launch.launch(ARGS, 2, cpu=True)


def test_a_launched_group_takes_its_run_folders_lock_before_any_rank_starts(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``train --gpus N --wait``: rank 0 waited alone for the lock while the other ranks timed out at the process
    group's barrier (30 min), failing the job; the launching process holds the folder for the group, its ranks are
    told so, and a busy folder stops the launch before any rank starts (exit 6)."""
    from lipsyncctl.errors import BusyError
    from lipsyncctl.runner.lock import folder_lock
    from lipsyncctl.training.runfolder import RUN_HELD_ENV

    started: list[dict[str, str]] = []
    monkeypatch.setattr(launch, "_launch", lambda argv, processes, cpu, file, extra: started.append(extra) or 0)
    run = tmp_path / "run"
    assert launch.launch(["--data", "d"], 2, cpu=True, run=run) == 0
    assert started == [{RUN_HELD_ENV: str(run.absolute())}]
    with folder_lock(run):  # a live run
        with pytest.raises(BusyError) as err:
            launch.launch(["--data", "d"], 2, cpu=True, run=run)
    assert err.value.exit_code == 6 and "--wait" in (err.value.hint or "") and len(started) == 1


def test_a_resume_under_another_process_count_is_refused_before_any_rank_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``train --resume latest --nproc 2`` of a one-process run started both ranks, each loading the checkpoint to
    refuse it, with torch elastic's own failure in stderr: the checkpoint's RNG files say how many processes wrote
    it, read before the launch (exit 2, the ranks' own message)."""
    from lipsyncctl.cli.main import main
    from lipsyncctl.errors import UsageError
    from lipsyncctl.training import state

    started: list[dict[str, str]] = []
    monkeypatch.setattr(launch, "_launch", lambda argv, processes, cpu, file, extra: started.append(extra) or 0)
    run = tmp_path / "run"
    step = run / "checkpoints" / "step-000002"
    step.mkdir(parents=True)
    for name in ("state.pt", "model.safetensors", "rng-rank0.pt"):
        (step / name).write_bytes(b"x")
    assert state.checkpoint_world(step) == 1
    with pytest.raises(UsageError, match=r"step-000002 was written by 1 process\(es\), this run has 2") as err:
        launch.launch(["--data", "d"], 2, cpu=True, run=run, resume="latest")
    assert "resume with 1 (--gpus/--nproc N)" in (err.value.hint or "") and not started
    (step / "rng-rank1.pt").write_bytes(b"x")  # written by two: a group of two resumes it
    assert launch.launch(["--data", "d"], 2, cpu=True, run=run, resume=str(step)) == 0 and len(started) == 1
    rc = main(["--json", "train", "--preset", "tiny", "--data", "d", "-o", str(run), "--nproc", "3",
               "--resume", "latest"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 2 and "written by 2 process(es), this run has 3" in doc["error"]["message"] and len(started) == 1
