"""``lipsyncctl train --gpus N``: start N training processes on this machine, one per GPU, or N gloo processes
on the CPU (``--nproc N``: tests and laptops). Each process runs ``lipsyncctl train`` with the same arguments;
accelerate reads the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR...) and wraps the model.

Two launchers:

- plain DDP: torch's elastic launcher (``torch.distributed.run``, what ``torchrun`` and ``accelerate launch``
  use underneath);
- ``--accelerate-config FILE``: ``accelerate launch --config_file FILE`` (FSDP or another engine the file
  names; ``presets/accelerate/`` ships examples). The file is read with accelerate's own loader first; N,
  when given, overrides its ``num_processes``.

Several machines: use ``accelerate launch`` or ``torchrun`` with their multi-node options and
``-m lipsyncctl train ...`` directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lipsyncctl import paths
from lipsyncctl.errors import RANK_ERROR_FILE_ENV, ConfigError, rank_error

#: the module every launch goes through (:mod:`lipsyncctl.cli.launcher`, a process entry point like the
#: CLI: the failing rank's exit status, no launcher traceback)
LAUNCHER = "lipsyncctl.cli.launcher"
#: seconds the launcher (and through it its ranks) gets to stop after SIGTERM; then the rest of its process
#: group gets SIGTERM and, LEFTOVER_GRACE_SECONDS later, SIGKILL
STOP_GRACE_SECONDS = 30.0
LEFTOVER_GRACE_SECONDS = 3.0

#: the example accelerate config files shipped with the package (``--accelerate-config NAME`` finds them)
ACCELERATE_DIR = "accelerate"
#: accelerate engines the training loop runs (``distributed_type`` of a config file)
SUPPORTED_ENGINES = ("NO", "MULTI_GPU", "MULTI_CPU", "FSDP")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_configs() -> dict[str, Path]:
    """The shipped example accelerate config files by name (``fsdp``, ``deepspeed_zero2``)."""
    folder = paths.PRESETS_DIR / ACCELERATE_DIR
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def check_engine(distributed_type: str, where: str, *, cpu: bool = False) -> None:
    """Refuse an engine the loop does not run (``where`` names the file or the environment it came from).

    Raises:
        ConfigError: DeepSpeed (see ``presets/accelerate/deepspeed_zero2.yaml``), another unknown engine, or
            FSDP on the CPU (``cpu``: accelerate would run the group as plain DDP without a word)."""
    name = str(distributed_type).rsplit(".", 1)[-1].upper()
    if name == "FSDP" and cpu:
        raise ConfigError(f"{where}: accelerate runs FSDP on GPUs only (a CPU group would silently be plain DDP)",
                          hint="use --gpus N with FSDP, or --nproc N without --accelerate-config (DDP on the CPU)")
    if name == "DEEPSPEED":
        raise ConfigError(f"{where}: DeepSpeed is not supported by the training loop yet (its engine steps the "
                          "optimizer inside backward, where the NaN guard and the loop's gradient accumulation "
                          "cannot run; deepspeed was never installable where the loop is tested)",
                          hint=f"shard with {accelerate_configs().get('fsdp', 'presets/accelerate/fsdp.yaml')} "
                          "(FSDP) or train with plain DDP (--gpus N without --accelerate-config)")
    if name not in SUPPORTED_ENGINES:
        raise ConfigError(f"{where}: accelerate engine {name} is not supported by the training loop",
                          hint="use distributed_type MULTI_GPU (DDP) or FSDP")


def read_accelerate_config(path: str | Path, *, cpu: bool = False) -> tuple[Path, Any]:
    """``(file, accelerate's config object)`` of ``--accelerate-config`` (a path or a shipped name), read by
    accelerate's own loader and checked with :func:`check_engine`.

    Raises:
        ConfigError: no such file, or accelerate cannot read it (its message), or an unsupported engine."""
    from accelerate.commands.config.config_args import load_config_from_file

    shipped = accelerate_configs()
    file = shipped[str(path)] if str(path) in shipped else Path(path).expanduser()
    if not file.is_file() and str(path) == file.name and file.suffix == ".yaml" and file.stem in shipped:
        file = shipped[file.stem]  # a shipped file by its file name (fsdp.yaml), none of that name here
    if not file.is_file():
        raise ConfigError(f"--accelerate-config {path}: no such file",
                          hint=f"give a file written by `accelerate config`, or one of {sorted(shipped)}")
    try:
        config = load_config_from_file(str(file))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"--accelerate-config {file}: accelerate cannot read it ({exc})",
                          hint="write it with `accelerate config --config_file FILE`, or start from "
                               f"{shipped.get('fsdp', 'presets/accelerate/fsdp.yaml')}") from exc
    check_engine(config.distributed_type, str(file), cpu=cpu or bool(config.use_cpu))
    return file, config


def launch_command(argv: list[str], processes: int | None, *, port: int,
                   accelerate_config: Path | None = None) -> list[str]:
    """The launcher's command line: torch's elastic launcher, or ``accelerate launch --config_file`` when
    ``accelerate_config`` is given (``processes`` None keeps the file's ``num_processes``)."""
    if accelerate_config is None:
        return [sys.executable, "-m", LAUNCHER, "torch", "--nnodes", "1", "--nproc-per-node",
                str(processes or 1), "--master-addr", "127.0.0.1", "--master-port", str(port),
                "-m", "lipsyncctl", "train", *argv]
    cmd = [sys.executable, "-m", LAUNCHER, "accelerate", "--config_file", str(accelerate_config),
           "--main_process_port", str(port)]
    if processes:
        cmd += ["--num_processes", str(processes)]
    # no --cpu here: accelerate launch then starts one plain process whatever the file says; a CPU group is
    # the file's engine with no GPU visible (launch() hides them) and the loop's Accelerator(cpu=True)
    return [*cmd, "-m", "lipsyncctl", "train", *argv]


def launch(argv: list[str], processes: int | None, *, cpu: bool = False,
           accelerate_config: str | Path | None = None, run: Path | None = None, wait: bool = False,
           resume: str | None = None) -> int:
    """Run the group and return its exit status (the first failing rank's, as the launcher reports).
    Ctrl-C or SIGTERM here stops the group (:func:`stop_group`) before it propagates. ``run``: the run folder,
    locked here for the whole group (one run per folder; ``wait``: wait for the one holding it), before any rank
    starts. ``resume``: ``latest`` or a checkpoint, whose process count must be the group's (checked before any rank
    starts: each rank would load the checkpoint to refuse it).

    Raises:
        ConfigError: an unreadable or unsupported ``accelerate_config`` (before any process starts).
        LipsyncError: the error a rank stopped with (its class, message and hint: exit 2 for a bad --data,
            4 for a missing model...), read from :data:`~lipsyncctl.errors.RANK_ERROR_FILE_ENV`."""
    from lipsyncctl.config import LAUNCH_PROCESSES, check_count

    if processes is not None:
        check_count("--nproc" if cpu else "--gpus", processes, LAUNCH_PROCESSES)
    file, settings = read_accelerate_config(accelerate_config, cpu=cpu) if accelerate_config is not None else (None, None)
    if not cpu and not (settings is not None and settings.use_cpu):  # a GPU group: its GPUs, or exit 4 now
        from lipsyncctl.runner.devices import check_gpu_count

        wanted = processes or (settings.num_processes if settings is not None else None) or 1
        check_gpu_count(wanted, f"--gpus {wanted}")
    if run is not None:
        from lipsyncctl.training.runfolder import RUN_HELD_ENV, run_folder

        run = Path(run).absolute()
        with run_folder(run, wait=wait):
            if resume is not None:
                _check_world(run, resume, processes or (settings.num_processes if settings is not None else None) or 1)
            return _launch(argv, processes, cpu, file, {RUN_HELD_ENV: str(run)})
    return _launch(argv, processes, cpu, file, {})


def _check_world(run: Path, resume: str, processes: int) -> None:
    """The checkpoint ``resume`` names was written by ``processes`` processes (its RNG files say how many), else the
    refusal each rank would give (:func:`lipsyncctl.training.runfolder.world_mismatch`)."""
    from lipsyncctl.training import state
    from lipsyncctl.training.runfolder import world_mismatch

    folder = state.find_resume(run, resume)
    written = state.checkpoint_world(folder)
    if written is not None and written != processes:
        raise world_mismatch(folder, written, processes)


def _launch(argv: list[str], processes: int | None, cpu: bool, file: Path | None, extra: dict[str, str]) -> int:
    from lipsyncctl.runner.workers import worker_threads

    env = {**os.environ, **extra}
    env.setdefault("OMP_NUM_THREADS", str(worker_threads(processes or 1)))  # (each rank its share of the cores)
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="lipsyncctl-launch-") as tmp:
        error_file = Path(tmp) / "error.json"
        env[RANK_ERROR_FILE_ENV] = str(error_file)
        proc = subprocess.Popen(launch_command(argv, processes, port=free_port(), accelerate_config=file), env=env,
                                start_new_session=True)  # a terminal's Ctrl-C reaches this process only
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            stop_group(proc)
            if error_file.is_file():  # the ranks' own interrupt: how far they got (a checkpoint to resume, or none)
                raise rank_error(error_file) from None
            raise
        except BaseException:
            stop_group(proc)
            raise
        if code and error_file.is_file():
            raise rank_error(error_file)
    return code


def stop_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a launched group: SIGTERM to the launcher, which passes it to its ranks (each ends as on Ctrl-C:
    temporaries removed, exit 130); then whatever is left of its process group (a rank the launcher did not
    reach) gets SIGTERM, and SIGKILL after a few seconds. ``grace``: seconds the launcher gets."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _group_ended(proc, 0.0):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if _group_ended(proc, LEFTOVER_GRACE_SECONDS):
            return


def _group_ended(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """True once no process of ``proc``'s group is left, waiting up to ``seconds`` (the launcher is reaped on
    the way: its zombie still counts as a member of the group)."""
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True

