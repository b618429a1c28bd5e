"""A training run's folder (``-o RUN``): what it holds and the rules of ``--resume`` and ``-y`` over it, which
checkpoint a run may resume (:func:`check_resumable`), its lock (one run writes to it at a time)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import progress
from lipsyncctl.errors import UsageError

if TYPE_CHECKING:
    from lipsyncctl.training.config import TrainConfig


#: the way on from a checkpoint that cannot be resumed
_FRESH = "start a new run folder from its weights instead (--init PATH)"


def check_resumable(saved: Mapping[str, Any], folder: Path, cfg: TrainConfig, world: int, clips_hash: str,
                     precision: str, content: Mapping[str, Any] | None = None) -> None:
    """A checkpoint continues only the run it was part of: the same configuration (:meth:`TrainConfig.stream_hash`;
    RUN/train.yaml is checked too, but a checkpoint may come from another folder), the same process count
    (step k takes samples from k x batch x processes x accumulation on), the same training clips and the same
    mixed precision as resolved (``auto`` on another machine may resolve otherwise; fp16's GradScaler state would be
    dropped or missing).

    Raises:
        UsageError: saying which differs (checkpoints written before a key was stored are not checked on it).
    """
    if not cfg.continues(saved.get("stream_hash"), saved.get("config")):
        raise UsageError(f"--resume: {folder} was trained with another configuration ({_changes(cfg, saved.get('config'))})",
                         hint=f"resume with the preset and --set values it was trained with, or {_FRESH}")
    if saved.get("world_size") not in (None, world):
        raise world_mismatch(folder, saved["world_size"], world)
    if saved.get("clips") not in (None, clips_hash):
        raise UsageError(f"--resume: the training clips are not the ones {folder} was trained on (another --data, "
                         "or DATA changed since)", hint=f"resume on the same data, or {_FRESH}")
    content = content or {}
    if None not in (saved.get("clips_content"), content.get("clips_content")) \
            and saved["clips_content"] != content["clips_content"]:
        raise UsageError(f"--resume: the training clips' files are not the ones {folder} was trained on (the same "
                         "clips and lengths, other content: DATA re-curated or replaced since)",
                         hint=f"resume on the data it was trained on, or {_FRESH}")
    if saved.get("mask_content") is not None and cfg.kind == "unet":
        from lipsyncctl.faces.mask import mask_path
        from lipsyncctl.runner.store import same_content

        if same_content(saved["mask_content"], mask_path(cfg.data.mask)) is False:
            raise UsageError(f"--resume: the mouth mask {cfg.data.mask} is not the file {folder} was trained with "
                             "(it changed since)", hint=f"resume with the mask it was trained with, or {_FRESH}")
    recorded = saved.get("precision")
    if recorded is None and saved.get("scaler") is not None:  # written before the precision was recorded
        recorded = "fp16"
    if recorded is None and "scaler" in saved and precision == "fp16":
        # no loss scaling then: bf16 (what auto chose on bf16 GPUs before it became the official fp16) or fp32
        raise UsageError(f"--resume: {folder} was trained without fp16 loss scaling (in bf16, which auto chose on "
                         "this GPU before, or fp32), this run would use fp16",
                         hint=f"resume with --mixed-precision bf16 (or no), or {_FRESH}")
    if recorded is not None and recorded != precision:
        where = " on a GPU" if recorded != "no" else ""
        raise UsageError(f"--resume: {folder} was trained with mixed precision {recorded}, this run would use "
                         f"{precision}", hint=f"resume with --mixed-precision {recorded}{where}, or {_FRESH}")


def world_mismatch(folder: Path, written: int, world: int) -> UsageError:
    """The refusal of a checkpoint written by another number of processes than this run's."""
    return UsageError(f"--resume: {folder} was written by {written} process(es), this run has {world} (each step's "
                      "samples, and so the data position, depend on it)",
                      hint=f"resume with {written} (--gpus/--nproc N), or {_FRESH}")


def _changes(cfg: TrainConfig, saved: Any) -> str:
    """What differs from the ``saved`` configuration, for a refusal's message."""
    return cfg.changes_from(saved) or "data, model, losses or optimizer settings differ"


def _exports(*kinds: str) -> re.Pattern[str]:
    from lipsyncctl.training.state import EXPORT_NAMES

    names = "|".join(re.escape(name) for kind in kinds for name in EXPORT_NAMES[kind])
    # (a file being replaced: .NAME.new; the writers' temporaries of either, a killed export's: ..NAME.new.PID.tmp,
    # ..NAME.new.tmp-PID)
    return re.compile(rf"^\.{{0,2}}({names})(\.new)?(\.\d+\.tmp|\.tmp-\d+)?$")


#: the folders and files a training run writes in ``RUN/``, and in each folder what of it is the run's (a pattern
#: of names): nothing else there is removed by ``-y``, and a new run is refused where another file holds one of them
RUN_FOLDERS = {
    "checkpoints": re.compile(r"^\.?step-\d{6,}(\.tmp)?$"),  # (state.STEP_DIR, and a save's .step-N.tmp)
    "export": _exports("unet", "syncnet"),
    "export-ema": _exports("unet"),
    "validation": re.compile(r"^\.?(unet-)?step-\d{6,}"),  # (clips, their records, a render's temporaries)
    "tb": re.compile(r"^events\.out\.tfevents\."),
    "set-aside": re.compile(r"^from-step-\d{6,}-"),
}
RUN_FILES = ("train.yaml", "metrics.csv")


def foreign_files(run: Path) -> list[Path]:
    """What is in the run's own folders (:data:`RUN_FOLDERS`) that no training run wrote (the official
    repository's ``checkpoints/latentsync_unet.pt``, a file of the user's), by name."""
    found = []
    for sub, ours in RUN_FOLDERS.items():
        with contextlib.suppress(OSError):  # (not there, or not a folder)
            found += sorted(p for p in (run / sub).iterdir() if not ours.match(p.name))
    return found


def clear_run(run: Path) -> None:
    """Remove the run in ``run`` that a new one replaces: what a run writes (its checkpoints, exports, validation
    clips, logs and train.yaml, :data:`RUN_FOLDERS`), and the folders it leaves empty; nothing else."""
    import shutil

    for sub, ours in RUN_FOLDERS.items():
        folder = run / sub
        if folder.is_symlink() or not folder.is_dir():
            continue
        for p in folder.iterdir():
            if ours.match(p.name):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # (holds the user's files: kept)
            folder.rmdir()
    for f in RUN_FILES:
        (run / f).unlink(missing_ok=True)


def sweep_partial_saves(run: Path) -> None:
    """Remove the temporary folders of checkpoint saves cut short (``checkpoints/.step-N.tmp``: a killed or
    out-of-memory run's, gigabytes of a full UNet and its optimizer; only a save of the same step removed one).
    Called while the run holds its folder: no save is going on."""
    import shutil

    with contextlib.suppress(OSError):
        for p in (run / "checkpoints").iterdir():
            if p.name.endswith(".tmp") and RUN_FOLDERS["checkpoints"].match(p.name):
                shutil.rmtree(p, ignore_errors=True)


def set_aside_later(run: Path, step: int) -> list[int]:
    """A resume from an earlier checkpoint of ``run`` (step ``step``: to change the learning rate from there, say)
    starts another branch: the checkpoints past it are moved to ``RUN/set-aside/from-step-K-TIME/step-N`` (kept),
    so that ``--resume latest`` never takes the abandoned branch's. Returns their steps."""
    from lipsyncctl.training import state

    later = [(n, p) for n, p in state.list_checkpoints(run) if n > step]
    if later:
        aside = run / "set-aside" / f"from-step-{step:06d}-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir(parents=True, exist_ok=True)
        for _, p in later:
            os.replace(p, aside / p.name)
    return [n for n, _ in later]


def check_run_folder(run: Path, cfg: TrainConfig, resume: str | None, overwrite: bool,
                     data: Path | None = None) -> tuple[Path | None, bool]:
    """Check ``RUN/`` against ``--resume`` / ``-y``: the checkpoint to resume from (or None), and whether the run
    there is to be replaced (:func:`clear_run`, by the caller once nothing else can refuse the run: a ``-y`` with a
    wrong ``--data`` removed a finished run, then stopped).

    A folder that holds a run needs ``--resume`` or ``-y``, except a run stopped before its first checkpoint
    (Ctrl-C, a crash) rerun with the same configuration and data: nothing of it can be resumed and nothing is
    lost, so it starts again (the logs of the stopped attempt are replaced).

    Raises:
        UsageError: the folder holds a run (checkpoints, exports, or another configuration) and neither
            ``resume`` nor ``overwrite`` is given; ``resume`` names no usable checkpoint or another configuration;
            the folder is ``data`` or inside it.
    """
    import yaml

    from lipsyncctl.training import state

    inside = Path(os.path.abspath(run))
    if data is not None and Path(os.path.abspath(data)) in (inside, *inside.parents):
        raise UsageError(f"-o {run}: inside the dataset it trains on ({data}): the run's checkpoints and logs would "
                         "be mixed into the curated data", hint="give a folder outside --data for -o")
    saved = run / "train.yaml"
    if resume is not None:
        folder = state.find_resume(run, resume)
        try:  # (damaged or unreadable: the checkpoint's own record is checked all the same, check_resumable)
            recorded = yaml.safe_load(saved.read_text()) if saved.is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            recorded = None
        if isinstance(recorded, dict):
            if not cfg.continues(recorded.get("stream_hash"), recorded):
                raise UsageError(f"--resume: {run} was trained with another configuration ({_changes(cfg, recorded)})",
                                 hint="resume with the same preset and --set values, or start a new run folder "
                                 "(--init RUN/checkpoints/step-N/model.safetensors starts from its weights)")
        return folder, False
    if saved.is_file() or state.list_checkpoints(run):
        if not overwrite and not _stopped_before_first_checkpoint(run):
            raise UsageError(f"{run} already holds a training run", hint="continue it with --resume latest, "
                             "start over with --overwrite/-y, or give another -o")
        if not overwrite and not _same_run(run, cfg, data):
            raise UsageError(f"{run} holds a run stopped before its first checkpoint, with another configuration "
                             "or data", hint="start over with --overwrite/-y (nothing was checkpointed), rerun "
                             "with its preset, --set values and --data, or give another -o")
        if not overwrite:
            progress.message(f"{run}: the run stopped before its first checkpoint; starting it again "
                             "(the logs of the stopped attempt are replaced)")
        return None, True
    # no run here: one would write its folders and files beside what is there; where those names hold the user's
    # files (a clone of the official repository's checkpoints/, a metrics.csv), it would mix into them, or replace
    # them, and a later -y would remove what it wrote there
    theirs = [p for p in (run / f for f in RUN_FILES) if os.path.lexists(p)] + foreign_files(run)
    if theirs:
        listed = ", ".join(str(p.relative_to(run)) for p in theirs[:3]) + \
            (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
        raise UsageError(f"-o {run} holds files no training run wrote where a run writes its own ({listed})",
                         hint="give a new or empty folder for -o")
    return None, False


def _stopped_before_first_checkpoint(run: Path) -> bool:
    """Nothing in ``run`` to resume or keep: no complete checkpoint, no export (only train.yaml and logs), and the
    run that wrote it is gone (a run still going before its first checkpoint looks the same: a second launch of the
    same command must not take its folder). Called while holding the run folder's lock, which a live run holds:
    a writer of another host or process space (a requeued container, an earlier version's record) is taken as gone;
    one of this host is looked for by its pid too (a file system without locks)."""
    import yaml

    from lipsyncctl.media.atomic import host_tag, pid_alive
    from lipsyncctl.training import state

    if state.list_checkpoints(run) or any((run / name).exists() for name in ("export", "export-ema")):
        return False
    try:
        writer = (yaml.safe_load((run / "train.yaml").read_text()) or {}).get("writer") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        writer = {}
    return not (writer.get("host") == host_tag() and pid_alive(int(writer.get("pid") or 0)))


def _same_run(run: Path, cfg: TrainConfig, data: Path | None) -> bool:
    """``run/train.yaml`` has this run's configuration (:meth:`TrainConfig.stream_hash`: the changes a resume
    accepts are the same run) and data: the same command, rerun."""
    import yaml

    try:
        saved = yaml.safe_load((run / "train.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(saved, dict) or saved.get("stream_hash") is None or not cfg.continues(saved["stream_hash"], saved):
        return False
    section = saved.get("data")
    path = section.get("path") if isinstance(section, dict) else None
    return data is None or path is None or Path(path).resolve() == Path(data).resolve()  # (recorded absolute)


#: set by :func:`lipsyncctl.training.launch.launch` for the ranks it starts: the run folder whose lock it holds
RUN_HELD_ENV = "LIPSYNCCTL_TRAIN_RUN_HELD"
#: the busy error's hint of a run folder
BUSY_HINT = "wait for that run to finish (--wait starts this one when it does), or give another -o"



@contextlib.contextmanager
def run_folder(out: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the run folder ``out`` for the block (one run per folder): checked for write access first (an OSError
    naming it, exit 1, as every command's -o), busy (exit 6, naming the holder) or, with ``wait``, waited for; an
    interrupt while waiting says that nothing of this run had started (the checkpoints there are the other's)."""
    from lipsyncctl.errors import Interrupted
    from lipsyncctl.media.atomic import check_writable
    from lipsyncctl.runner.lock import folder_lock

    check_writable(out / "train.yaml", name=out)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(folder_lock(out, wait=wait, hint=BUSY_HINT))
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while waiting for the run writing to {out}",
                              hint="nothing of this run had started: rerun the same command") from None
        yield
