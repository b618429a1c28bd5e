"""A training run's folder, its full checkpoints (resume bit for bit) and the weight files ``sync`` loads.

``RUN/``::

    train.yaml                   the resolved TrainConfig of the run (and its stream hash)
    checkpoints/step-000600/     one full checkpoint (written under a temporary name, then renamed):
        model.safetensors          the trained network, fp32, config in the header (``sync`` loads it)
        state.pt                   optimizer, GradScaler, EMA, step, counters, config + stream hash
        rng-rank0.pt ...           every rank's torch RNG states (CPU and CUDA)
        state-rank0.pt ...         FSDP runs: every rank's shard of the AdamW moments
    export/                      at the end (and on ``--export``): ``latentsync_unet.pt`` (official
                                 ``{"global_step", "state_dict"}``) or ``stable_syncnet.pt``, and
                                 ``unet.safetensors`` / ``syncnet.safetensors`` with the config in the header
    metrics.csv, tb/             one row per logged step; TensorBoard events

The data position needs no state of its own: samples are a function of (seed, global index) and the
indices of a step are a function of the step (:mod:`lipsyncctl.training.sampling`), so restoring the
step restores the stream. Non-finite weights are never written (:class:`NonFiniteError`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import __version__, paths
from lipsyncctl.errors import JobFailedError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE_VERSION = 1
#: export file names per trained network (official layout and ours)
EXPORT_NAMES = {"unet": ("latentsync_unet.pt", "unet.safetensors"),
                "syncnet": ("stable_syncnet.pt", "syncnet.safetensors")}


class NonFiniteError(JobFailedError):
    """Weights became NaN/Inf: nothing is saved (the last good checkpoint stays the latest)."""


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of ``run`` by step (temporary folders of an interrupted save are not listed)."""
    folder = run / "checkpoints"
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = STEP_DIR.match(p.name)
            if m and (p / "state.pt").is_file() and (p / "model.safetensors").is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def interrupted_hint(run: Path) -> str:
    """What to do after a run into ``run`` was stopped (Ctrl-C, SIGTERM): resume from its last checkpoint, or, with
    none, rerun the same command, which starts it again."""
    found = list_checkpoints(run)
    if found:
        step, folder = found[-1]
        hint = f"continue it: the same command with --resume latest (from its checkpoint at step {step})"
        exported = _export_step(run)
        if exported is not None and exported < step:  # (the hand-off to sync would render older weights, unsaid)
            hint += f"; {run / 'export'} holds step {exported}'s weights, older than the checkpoint's"
            hint += (f" ({folder / 'model.safetensors'}: model.checkpoint= for sync, --init for a new run)"
                     if _plain_unet(run) else " (the resumed run writes a new export at its end)")
        return hint
    return "rerun the same command: nothing was checkpointed, so it starts the run again"


def _export_step(run: Path) -> int | None:
    """The step of the weights in ``RUN/export/`` (its safetensors header), None without one."""
    from lipsyncctl.checkpoints.io import read_checkpoint
    from lipsyncctl.errors import LipsyncError

    for kind in EXPORT_NAMES.values():
        path = run / "export" / kind[1]
        if not path.is_file():
            continue
        try:  # (memory-mapped: the header is read, not the weights)
            return int((read_checkpoint(path).lipsyncctl_header or {})["global_step"])
        except (LipsyncError, OSError, KeyError, TypeError, ValueError):  # not ours, no step
            continue
    return None


def _plain_unet(run: Path) -> bool:
    """Whether ``run`` trains a UNet's own weights (its checkpoints' ``model.safetensors`` is what ``sync`` loads:
    not a SyncNet's, nor a LoRA run's, whose adapters only its export merges), by its ``train.yaml``."""
    import yaml

    try:
        doc = yaml.safe_load((run / "train.yaml").read_text(encoding="utf-8"))
        return doc.get("kind", "unet") == "unet" and not (doc.get("run") or {}).get("lora_rank")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return False


def find_resume(run: Path, resume: str) -> Path:
    """The checkpoint folder ``--resume latest|PATH`` names."""
    if resume == "latest":
        found = list_checkpoints(run)
        if not found and (run / "train.yaml").is_file():  # stopped before its first checkpoint
            raise UsageError(f"--resume latest: no complete checkpoint under {run / 'checkpoints'}: the run "
                             "stopped before its first one, so there is nothing to resume",
                             hint="rerun the same command without --resume: it starts the run again")
        if not found:
            raise UsageError(f"--resume latest: no training run in {run} (no complete checkpoint under "
                             f"{run / 'checkpoints'})", hint="check -o, or start without --resume")
        return found[-1][1]
    p = Path(resume).expanduser()
    if p.is_file() and p.name == "state.pt":
        p = p.parent
    if not (p / "state.pt").is_file() or not (p / "model.safetensors").is_file():
        raise UsageError(f"--resume {resume}: not a complete checkpoint folder (state.pt + model.safetensors)",
                         hint="give RUN/checkpoints/step-NNNNNN or 'latest'")
    return p


def checkpoint_world(folder: Path) -> int | None:
    """How many processes wrote a checkpoint (one RNG file each), read without loading it; None when it has none."""
    ranks = len(list(folder.glob("rng-rank*.pt")))
    return ranks or None


def check_finite(model: nn.Module | Mapping[str, torch.Tensor]) -> None:
    """A module's parameters or a state dict's tensors are all finite, else :class:`NonFiniteError`."""
    import torch

    items = model.items() if isinstance(model, Mapping) else model.named_parameters()
    for name, p in items:
        if not torch.isfinite(p).all():
            raise NonFiniteError(f"weight {name} is not finite: nothing was saved",
                                 hint="the last checkpoint is intact; resume from it with a lower lr, or "
                                      "check the data")


def weights_header(kind: str, arch: Any, arch_name: str, step: int, mask: str | None = None) -> dict[str, Any]:
    """The safetensors header of trained weights; ``mask``: a UNet's mouth mask when it is not the official one
    (``sync`` says when it renders with another)."""
    from lipsyncctl.checkpoints.convert import FORMAT_VERSION
    from lipsyncctl.checkpoints.loaders import header_json

    return {"format_version": FORMAT_VERSION, "kind": "unet" if kind == "unet" else "stable-syncnet",
            "config": header_json(arch), "config_name": arch_name, "global_step": step,
            "source": "lipsyncctl train", "written_by": f"lipsyncctl {__version__}",
            **({"mask": mask} if mask and mask != paths.OFFICIAL_MASK else {})}


def save_checkpoint(
    run: Path, step: int, *, model: nn.Module, kind: str, arch: Any, arch_name: str, state: dict[str, Any],
    rng: dict[str, Any], rank: int, is_main: bool, barrier: Any, keep: int,
    weights: dict[str, torch.Tensor] | None = None, rank_state: dict[str, Any] | None = None,
) -> Path | None:
    """Write a full checkpoint of ``step`` (every rank calls this; ``barrier()`` syncs them). Returns the
    folder on the main process. Older checkpoints beyond ``keep`` are removed. ``weights``: the full state
    dict gathered on the main process (FSDP; default ``model.state_dict()``); ``rank_state``: this rank's own
    values (FSDP: its optimizer shard), saved beside its RNG and merged into the state on load."""
    from lipsyncctl.checkpoints.io import write_safetensors

    check_finite(model if weights is None else weights)
    final = step_dir(run, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    try:
        _atomic_torch_save(rng, tmp / f"rng-rank{rank}.pt")
        if rank_state is not None:
            _atomic_torch_save(rank_state, tmp / f"state-rank{rank}.pt")
        if is_main:
            write_safetensors(tmp / "model.safetensors", model.state_dict() if weights is None else weights,
                              weights_header(kind, arch, arch_name, step))
            _atomic_torch_save({"version": STATE_VERSION, **state}, tmp / "state.pt")
    except BaseException as exc:  # nothing half-written left (a full disk: said as such, the earlier ones kept)
        written = _folder_size(tmp)
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # its own files only: the folder is rank 0's, which may still be writing into it
            for own in (f"rng-rank{rank}.pt", f"state-rank{rank}.pt"):
                (tmp / own).unlink(missing_ok=True)
        _raise_write_error(final, exc, written, _last_checkpoint_size(run), keep, first=not list_checkpoints(run))
        raise
    barrier()
    if not is_main:
        return None
    try:  # on disk before its name says complete (a power cut left empty files that --resume latest took)
        _flush(tmp)
    except OSError as exc:  # (a full disk or quota said only now: NFS, delayed allocation)
        written = _folder_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_write_error(final, exc, written, _last_checkpoint_size(run), keep, first=not list_checkpoints(run))
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _flush(final.parent, files=False)
    for _, old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _flush(folder: Path, *, files: bool = True) -> None:
    """fsync ``folder``'s files (with ``files``) and then the folder itself (its entries)."""
    for p in sorted(folder.iterdir()) if files else []:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # (a file system that cannot sync a folder)
        pass
    finally:
        os.close(fd)


def load_checkpoint(folder: Path, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(model state dict, state, this rank's RNG)`` of a checkpoint folder."""
    import torch

    from lipsyncctl.checkpoints.io import read_checkpoint

    weights = {k: v.clone() for k, v in read_checkpoint(folder / "model.safetensors", mmap_ok=False).state_dict.items()}
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    rng_file = folder / f"rng-rank{rank}.pt"
    rng = torch.load(rng_file, map_location="cpu", weights_only=False) if rng_file.is_file() else {}
    own = folder / f"state-rank{rank}.pt"
    if own.is_file():
        state.update(torch.load(own, map_location="cpu", weights_only=False))
    return weights, state, rng


def export_weights(run: Path, *, model: nn.Module, kind: str, arch: Any, arch_name: str, step: int,
                   name: str = "export", weights: dict[str, torch.Tensor] | None = None,
                   mask: str | None = None) -> dict[str, str]:
    """The files ``sync`` (UNet) or the sync loss (SyncNet) load: the official layout and our safetensors
    (LoRA adapters merged into the official names). ``weights``: a gathered full state dict (FSDP)."""
    from lipsyncctl.checkpoints.io import write_safetensors

    check_finite(model if weights is None else weights)
    folder = run / name
    folder.mkdir(parents=True, exist_ok=True)
    official, ours = EXPORT_NAMES[kind]
    state = {k: v.detach().cpu() for k, v in weights.items()} if weights is not None else \
        inference_state_dict(model)
    # both written beside their names first, then renamed: a failure leaves the export of before whole
    pending = [(folder / f".{name}.new", folder / name) for name in (official, ours)]
    try:
        _atomic_torch_save({"global_step": step, "state_dict": state}, pending[0][0])
        write_safetensors(pending[1][0], state, weights_header(kind, arch, arch_name, step, mask))
    except BaseException as exc:
        for new, _ in pending:
            new.unlink(missing_ok=True)
        _raise_write_error(folder, exc, 0, 2 * sum(v.numel() * v.element_size() for v in state.values()))
        raise
    for new, final in pending:
        os.replace(new, final)
    return {"official": str(folder / official), "safetensors": str(folder / ours)}


def _raise_write_error(path: Path, exc: BaseException, written: int, needed: int | None, keep: int = 1,
                       first: bool = False) -> None:
    """Raise the :class:`~lipsyncctl.errors.WriteError` of ``path`` (exit 1: the space free there and about what it
    needs) when ``exc`` is a failed write (torch's own writer says only "unexpected pos"; the OSError is its
    context); else return (the caller re-raises ``exc``). ``keep``: the run's ``--keep`` (a new checkpoint is
    written before the oldest is removed: fewer kept frees space only from 2 on). ``first``: the run's first
    checkpoint (none to resume from: the same command starts the run again)."""
    from lipsyncctl.media.atomic import write_error, write_failure

    if write_failure(exc) is not None:
        if first:
            hint = "free some space and rerun the same command: nothing was checkpointed yet, so it starts again"
        else:
            fewer = f" (or keep fewer checkpoints: --keep {keep - 1})" if keep > 1 else ""
            hint = (f"free some space{fewer} and resume with --resume latest: the checkpoints before this one are "
                    "intact")
        raise write_error(path, exc, written=written, needed=needed, hint=hint) from exc


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _last_checkpoint_size(run: Path) -> int | None:
    """About what a checkpoint of this run needs: the size of its latest one (None before the first)."""
    done = list_checkpoints(run)
    return _folder_size(done[-1][1]) if done else None


def inference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights ``sync`` loads of a trained module, on the CPU: LoRA adapters merged into the official names."""
    if any("lora_" in k for k in model.state_dict()):
        from lipsyncctl.training.lora import merged_state_dict

        return merged_state_dict(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:  # through a Python file: a full disk is an OSError (torch's own writer raises
            torch.save(obj, fh)     # a RuntimeError saying "unexpected pos"), the context of torch's error
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (the run draws from its own generators; these cover any library
    code that draws from the global ones)."""
    import torch

    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    if "cpu" in state:
        torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
