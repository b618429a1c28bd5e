"""The training loop (``lipsyncctl train``), on Hugging Face accelerate: one process, DDP over ``--gpus N``
(or ``accelerate launch -m lipsyncctl train``), DeepSpeed/FSDP through accelerate config files.

Read it top to bottom: :func:`train` is steps 1-7. What makes a run reproducible and resumable bit for bit:
the samples of a step and their random draws are functions of (seed, step) only
(:mod:`lipsyncctl.training.sampling`, :func:`lipsyncctl.training.step.sample_draws`), and a checkpoint
holds the weights, AdamW moments, GradScaler, EMA, counters and every rank's RNG
(:mod:`lipsyncctl.training.state`).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import progress
from lipsyncctl.errors import ConfigError, JobFailedError, UsageError
from lipsyncctl.training.runfolder import (
    RUN_HELD_ENV,
    check_resumable,
    check_run_folder,
    clear_run,
    run_folder,
    set_aside_later,
    sweep_partial_saves,
)

if TYPE_CHECKING:
    import torch

    from lipsyncctl.training.config import TrainConfig


class DivergedError(JobFailedError):
    """Too many non-finite steps in a row: the run stops; the last checkpoint is intact."""


#: the fp16 GradScaler halves its scale (from 2**16) at every overflowing step and doubles it after 2000 good
#: ones; a scale this small means the gradients are not finite at any scale (NaN), not an overflow
MIN_LOSS_SCALE = 2.0**-14


def _scaler_skipped(acc: Any, step: int) -> bool:
    """True when the fp16 GradScaler skipped this optimizer step (non-finite gradients: its scale backs off).

    Raises:
        DivergedError: the scale fell under :data:`MIN_LOSS_SCALE`.
    """
    if acc.scaler is None or not acc.optimizer_step_was_skipped:
        return False
    scale = float(acc.scaler.get_scale())
    if scale < MIN_LOSS_SCALE:
        raise DivergedError(f"the fp16 loss scale fell to {scale:g} at step {step + 1}: the gradients are not "
                            "finite at any scale; stopped", hint="the last checkpoint is intact: resume it in bf16 "
                            "(--resume latest --mixed-precision bf16) where the GPU has it, check the data, or start "
                            "a new run from its weights with a lower optim.lr (--init RUN/checkpoints/step-N/"
                            "model.safetensors)")
    return True


@dataclass
class TrainResult:
    """What a training run did (``--json`` prints :meth:`to_dict`)."""

    run: str
    kind: str
    preset: str
    start_step: int
    steps: int
    max_steps: int
    world_size: int
    mixed_precision: str
    device: str
    trainable: dict[str, int]
    init_report: list[str]
    losses: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0
    checkpoints: list[str] = field(default_factory=list)
    export: dict[str, str] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples_per_second: float = 0.0
    peak_vram_gb: float | None = None
    skipped_clips: int = 0
    #: how the training clips were curated where not as the official pipeline: what -> clips (ClipSet.gaps)
    data_gaps: dict[str, int] = field(default_factory=dict)
    #: what was said as a warning about the data (files read from outside DATA, no val clips)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: the official fp16 autocast + GradScaler on a CUDA GPU, none elsewhere (bf16 only when asked: it
    needs no loss scaling but is not the recipe the official weights were trained with)."""
    if name != "auto":
        if name != "no" and device.type == "cpu":
            raise ConfigError(f"run.mixed_precision {name} needs a GPU", hint="use --mixed-precision no on the CPU")
        return name
    return "fp16" if device.type == "cuda" else "no"


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): ``optim.lr``, ramped up linearly over the first
    ``optim.warmup_steps`` (a function of the step, so a resume continues it)."""
    warmup = cfg.optim.warmup_steps
    return cfg.optim.lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0)


def _clips_hash(clips: Sequence[Any]) -> str:
    """What the sample stream draws from: the training clips (ids and frame counts), hashed
    (:meth:`ClipTable.ids_frames_hash`)."""
    from lipsyncctl.training.clips import ClipTable

    return ClipTable.of(clips).ids_frames_hash()


def _data_content(cfg: TrainConfig, clips: Any) -> dict[str, Any]:
    """What a checkpoint records of the data's content beyond the clips' ids and lengths: the clips' files
    (:meth:`~lipsyncctl.training.data.ClipSet.content_hash`) and, for the UNet, the mouth mask's file (size, mtime, sha256 of its bytes)."""
    from lipsyncctl.faces.mask import mask_path
    from lipsyncctl.runner.store import content_record

    out: dict[str, Any] = {"clips_content": clips.content_hash()}
    if cfg.kind == "unet":
        out["mask_content"] = content_record(mask_path(cfg.data.mask))
    return out


#: DDP compares a gradient's strides with its bucket's exactly, while torch ignores the strides of size-1 dimensions:
#: a 1x1 convolution's weight gradient ([C, C, 1, 1] with strides [C, 1, C, C]) draws "Grad strides do not match
#: bucket view strides ... may impair performance" once per rank about a layout that is the same (no parameter of
#: the run is channels-last). Not shown: it was the only line of a CPU `train --nproc 2` run's log.
_DDP_SIZE_1_STRIDES = "Grad strides do not match bucket view strides"


def train(cfg: TrainConfig, *, data: Path, out: Path, resume: str | None = None, overwrite: bool = False,
          cpu: bool | None = None, wait: bool = False) -> TrainResult:
    """Train ``cfg.kind`` on the curated ``data`` into the run folder ``out`` (see module docstring). One run
    writes to ``out`` at a time: the first process (rank 0) holds its folder lock for the whole run, so a second
    launch (a requeued job while the first still runs, ``--resume`` or ``-y`` into a live run) is refused
    (:class:`~lipsyncctl.errors.BusyError`, exit 6, naming the holder) or, with ``wait``, waits for it. A group
    started by ``train --gpus/--nproc`` has its lock taken by the launching process, before any rank starts (a rank
    waiting alone would leave the others to time out)."""
    if resume is not None and overwrite:  # (every rank, before any work)
        raise UsageError("--resume and --overwrite/-y: continue the run, or replace it, not both",
                         hint="drop -y to continue it (--resume), or --resume to start over (-y)")
    out = Path(out).absolute()  # the result's paths (and --json's) are absolute, as curate's
    held = os.environ.get(RUN_HELD_ENV) == str(out)  # the launching process holds it for the group
    mine = not held and os.environ.get("RANK", "0") in ("0", "")  # (a group of the user's own launcher: rank 0)
    with run_folder(out, wait=wait) if mine else contextlib.nullcontext():
        try:
            return _train(cfg, data=data, out=out, resume=resume, overwrite=overwrite, cpu=cpu)
        except RuntimeError as exc:  # raised by torch wherever the loop is when it notices (its SIGCHLD handler)
            if _loader_worker_died(exc) and ("signal: Terminated" in str(exc) or "signal: Interrupt" in str(exc)):
                from lipsyncctl.errors import (
                    Interrupted,  # stopped as the run is (a process group's SIGTERM): 130
                )
                from lipsyncctl.training.state import interrupted_hint

                raise Interrupted("interrupted (a data-loader worker was stopped)", hint=interrupted_hint(out)) from exc
            if _loader_worker_died(exc):
                raise _worker_died_error(exc, cfg) from exc
            raise


def _train(cfg: TrainConfig, *, data: Path, out: Path, resume: str | None, overwrite: bool,
           cpu: bool | None) -> TrainResult:
    import torch
    import yaml
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from lipsyncctl.media.atomic import atomic_output, host_tag
    from lipsyncctl.runner import devices
    from lipsyncctl.runner.devices import resolve_device
    from lipsyncctl.training import data as train_data
    from lipsyncctl.training import noise, sampling, state, trainable, validation
    from lipsyncctl.training.networks import enable_gradient_checkpointing, load_train_networks, resolve_files

    t_start = time.monotonic()
    # 1. device, precision; before any work: RUN can be written, every file the networks load is there; processes
    device = resolve_device(cfg.run.device) if cpu is None else torch.device("cpu" if cpu else "cuda")
    precision = resolve_precision(cfg.run.mixed_precision, device)
    if device.type == "cuda" and device.index is not None and "WORLD_SIZE" not in os.environ:
        torch.cuda.set_device(device)  # accelerate's one process takes the current GPU: --device cuda:N's
    resolve_files(cfg)  # a missing --init file (exit 5) or model (exit 4), before the data is read
    if cfg.kind == "unet":  # a model.trainable part that names no parameter (exit 3), before the networks load
        trainable.check_for_config(cfg.model.unet_config, cfg.model.trainable)
    import datetime

    acc = Accelerator(cpu=device.type == "cpu", mixed_precision=precision,
                      kwargs_handlers=[InitProcessGroupKwargs(
                          timeout=datetime.timedelta(seconds=cfg.run.process_group_timeout))])
    device, rank, world, is_main = acc.device, acc.process_index, acc.num_processes, acc.is_main_process
    sharded = _sharded(acc, cfg)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    if device.type == "cpu" and not devices.reproducible_cpu_math():  # a CPU run repeats bit for bit only with it
        progress.message(f"note: MKL was used in this process before the run, so its results may differ in the last "
                         f"bits from another process's (set MKL_CBWR={devices.MKL_CBWR} in the environment for a run "
                         "that repeats bit for bit)")
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    resume_from, replace = check_run_folder(out, cfg, resume, overwrite, data) if is_main else (None, False)
    acc.wait_for_everyone()
    if not is_main and resume is not None:
        resume_from = state.find_resume(out, resume)

    # 2. data: the clips and the index-driven dataset; the held-out clip and scorer of sync validation ----
    clips = train_data.read_clips(data, split="train", kind=cfg.kind, num_frames=cfg.data.num_frames,
                                  warn=is_main)
    clips_hash, content = _clips_hash(clips.clips), _data_content(cfg, clips)
    dataset = train_data.make_dataset(cfg, clips)
    per_step = cfg.data.batch_size * cfg.optim.grad_accum * world
    if is_main and per_step > len(clips.clips):
        progress.message(f"note: a step draws {per_step} samples from {len(clips.clips)} training clip(s): clips "
                         "repeat within a step (other windows of them)")
    # the held-out clips, read once (every validation draws the same samples from them; the sync validation renders
    # the first)
    val_clips = train_data.read_clips(data, split="val", kind=cfg.kind, num_frames=cfg.data.num_frames,
                                      warn=is_main) \
        if cfg.run.validate_every else None
    sync_val = validation.prepare(cfg, data, device, val_clips=val_clips)  # every rank: a missing scorer stops them all
    said = [*clips.warnings, *(val_clips.warnings if val_clips is not None else ())]  # warned as they were read
    if val_clips is not None and is_main and not val_clips.clips:
        said.append(f"run.validate_every {cfg.run.validate_every}: {data} has no val clips, so no held-out loss "
                    f"is logged ({train_data.val_hint(data)} splits DATA again without running a stage)")
        progress.warning(said[-1])

    # 3. networks, the trained parameters, the optimizer -----------------------------------------------
    nets = load_train_networks(cfg, device, weight_dtype)
    rule = cfg.model.trainable if cfg.kind == "unet" else ()
    params = [p for _, p in trainable.select_trainable(nets.model, rule)]
    counts = trainable.count(nets.model.named_parameters(), rule)
    if cfg.run.lora_rank and cfg.kind == "unet":
        from lipsyncctl.training.lora import add_lora

        params = add_lora(nets.model, cfg.run.lora_rank, rule, seed=cfg.run.seed)
        counts = trainable.count(nets.model.named_parameters(), ("lora_",))
    enable_gradient_checkpointing(nets, cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    ema = [p.detach().clone() for p in params] if cfg.run.ema_decay else None

    # 4. resume the whole state (weights, moments, scaler, EMA, counters, RNG) ---------------------------
    start_step, skipped, nan_streak = 0, 0, 0
    if resume_from is not None:
        weights, saved, rng = state.load_checkpoint(resume_from, rank)
        check_resumable(saved, resume_from, cfg, world, clips_hash, precision, content)
        nets.model.load_state_dict(weights, strict=True)
        if not sharded:  # FSDP: each rank's own shard of the AdamW moments, once FSDP wrapped the model (below)
            optimizer.load_state_dict(saved["optimizer"])
        start_step, skipped, nan_streak = saved["step"], saved["skipped"], saved["nan_streak"]
        if cfg.run.max_steps < start_step:
            raise UsageError(f"--resume: {resume_from} is at step {start_step}, past run.max_steps "
                             f"{cfg.run.max_steps}", hint=f"give --max-steps above {start_step} to train on")
        if ema is not None and saved.get("ema") is not None:
            for e, v in zip(ema, saved["ema"], strict=True):
                e.copy_(v)
        state.set_rng_state(rng)
    model, optimizer = acc.prepare(nets.model, optimizer)
    if resume_from is not None and sharded:
        optimizer.load_state_dict(saved["optimizer_shards"])
    if resume_from is not None and acc.scaler is not None and saved.get("scaler"):
        acc.scaler.load_state_dict(saved["scaler"])
    resumed_from = f"resume: {resume_from} (step {start_step}"  # (the log's line and the result's init report)
    acc.wait_for_everyone()  # every rank has passed its checks (a rank that failed stops the group here)
    if is_main:
        if replace:  # every check has passed (data, validation, networks, the resume's): the old run goes now
            clear_run(out)
        set_aside = set_aside_later(out, start_step) if resume_from is not None else []
        sweep_partial_saves(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_output(out / "train.yaml") as tmp:  # (what tells the run: never written half)
            tmp.write_text(yaml.safe_dump(
                {**cfg.to_dict(), "stream_hash": cfg.stream_hash(), "data": {**cfg.to_dict()["data"],
                                                                              "path": os.path.abspath(data)},
                 "writer": {"host": host_tag(), "pid": os.getpid()}}, sort_keys=False))  # (a rerun: is it gone?)
        if resume_from is not None:  # the init's weights were replaced by the checkpoint's: said as such
            progress.message(f"{resumed_from}: weights, optimizer, RNG, data position)")
            if set_aside:
                progress.message(f"resume: the later checkpoints of the run before (step "
                                 f"{', '.join(map(str, set_aside))}) moved to {out / 'set-aside'} (another branch "
                                 "now: --resume latest would have taken them)")
            changed = cfg.changes_from(saved.get("config"), only=("optim.lr",))
            if changed:  # a schedule changed on purpose: said, and each step's lr is in metrics.csv
                progress.message(f"resume: {changed} from step {start_step} on")
        else:
            for line in nets.init_report:
                progress.message(line)
        if clips.gaps_note():
            progress.message(clips.gaps_note())
        progress.message(f"trainable: {counts.tensors} tensors, {counts.params:,} parameters "
                         f"(frozen {counts.frozen_tensors} / {counts.frozen_params:,})")
    acc.wait_for_everyone()  # (a run replaced or set aside by rank 0 before any rank writes there)

    alphas = noise.alphas_cumprod().to(device)
    batch_size, accum = cfg.data.batch_size, cfg.optim.grad_accum
    loader = sampling.make_loader(dataset, start_step=start_step, rank=rank, world=world, batch=batch_size,
                                  accum=accum, workers=cfg.data.workers)
    batches = iter(loader)
    metrics = _Metrics(out / "metrics.csv", out / "tb", enabled=is_main, append=resume_from is not None,
                       after=start_step)
    result = TrainResult(run=str(out), kind=cfg.kind, preset=cfg.name, start_step=start_step, steps=0,
                         max_steps=cfg.run.max_steps, world_size=world, mixed_precision=precision,
                         device=str(device), trainable=counts.to_dict(),
                         init_report=[f"{resumed_from})"] if resume_from is not None else nets.init_report,
                         skipped_clips=len(clips.skipped), data_gaps=dict(clips.gaps), warnings=said)
    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # 5. the loop: accumulate micro-batches, guard, clip, step, log, save ---------------------------------
    t_loop, samples_done = time.monotonic(), 0
    with warnings.catch_warnings(), progress.Task(f"train {cfg.name}", total=cfg.run.max_steps - start_step) as task:
        warnings.filterwarnings("ignore", message=_DDP_SIZE_1_STRIDES, category=UserWarning)  # the loop's only
        for step in range(start_step, cfg.run.max_steps):
            model.train()
            terms: dict[str, float] = {}
            finite = True
            for micro in range(accum):
                batch = next(batches)
                if isinstance(batch, sampling.ItemError):  # a clip that cannot be read, from any loader worker
                    raise batch.error()
                sync_ctx = acc.no_sync(model) if micro < accum - 1 else contextlib.nullcontext()
                with sync_ctx:
                    loss, values = _micro_step(cfg, nets, model, batch, alphas, device, acc)
                    finite &= bool(torch.isfinite(loss.detach()))
                    acc.backward(loss / accum)
                for k, v in values.items():
                    terms[k] = terms.get(k, 0.0) + v / accum
            # every rank takes the same decision: a non-finite loss anywhere skips the step everywhere
            finite = bool(acc.reduce(torch.tensor([0.0 if finite else 1.0], device=device), "sum").item() == 0)
            clipped = model.parameters() if sharded else params  # FSDP clips its own (sharded) parameters
            grad_norm = acc.clip_grad_norm_(clipped, cfg.optim.max_grad_norm) if finite else torch.tensor(math.nan)
            grad_norm = float(grad_norm)
            if not finite or (not math.isfinite(grad_norm) and acc.scaler is None):
                optimizer.zero_grad(set_to_none=True)
                skipped, nan_streak = skipped + 1, nan_streak + 1
                progress.warning(f"step {step + 1}: non-finite {'loss' if not finite else 'gradients'}; skipped "
                                 f"on every rank ({nan_streak} in a row)")
                if nan_streak >= cfg.run.nan_abort_after:
                    raise DivergedError(f"{nan_streak} non-finite steps in a row at step {step + 1}: stopped",
                                        hint="the last checkpoint is intact; lower optim.lr or check the data")
            else:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, step)
                optimizer.step()  # with fp16 the GradScaler skips an overflowing step and lowers its scale
                optimizer.zero_grad(set_to_none=True)
                if _scaler_skipped(acc, step):
                    skipped += 1  # counted (a run's first steps back the scale off a few times: no warning)
                else:
                    nan_streak = 0
                    if ema is not None:
                        with torch.no_grad():
                            for e, p in zip(ema, params, strict=True):
                                e.lerp_(p.detach(), 1 - cfg.run.ema_decay)
            samples_done += batch_size * world * accum
            done = step + 1
            result.steps, result.losses = done - start_step, {k: round(v, 8) for k, v in terms.items()}
            task.advance()  # the step is done (a validation or a checkpoint after it is not the next step's)
            if done % cfg.run.log_every == 0 or done == cfg.run.max_steps:
                terms = {k: float(acc.reduce(torch.tensor([v], device=device), "mean").item()) for k, v in terms.items()}
                rate = samples_done / max(1e-9, time.monotonic() - t_loop)
                metrics.write(done, {**terms, "grad_norm": grad_norm, "lr": lr_at(cfg, step),
                                     "loss_scale": acc.scaler.get_scale() if acc.scaler is not None else 1.0,
                                     "samples_per_s": rate, "peak_vram_gb": _peak_vram(device), "skipped": skipped})
                if is_main:  # the log's line (a cluster job's log has no metrics.csv to tail)
                    progress.message(step_line(done, cfg.run.max_steps, terms, lr_at(cfg, step), rate))
            if cfg.run.validate_every and done % cfg.run.validate_every == 0:
                result.validation = _validate(cfg, nets, model, val_clips, alphas, device, acc, sharded=sharded)
                if validation.enabled(cfg):  # the render needs whole weights: FSDP gathers them (every rank)
                    full = acc.get_state_dict(model) if sharded else (
                        state.inference_state_dict(acc.unwrap_model(model)) if is_main else {})
                    if sync_val is not None and is_main:
                        result.validation.update(validation.render_and_score(
                            sync_val, full, run=out, step=done, arch=nets.arch, arch_name=nets.arch_name))
                    acc.wait_for_everyone()
                metrics.write(done, {f"val_{k}": v for k, v in result.validation.items()})
            if done % cfg.run.save_every == 0 or done == cfg.run.max_steps:
                _check_finite_everywhere(acc, model, device)
                saved_to = state.save_checkpoint(
                    out, done, model=acc.unwrap_model(model), kind=cfg.kind, arch=nets.arch,
                    weights=acc.get_state_dict(model) if sharded else None,
                    rank_state={"optimizer_shards": optimizer.state_dict()} if sharded else None,
                    arch_name=nets.arch_name, rank=rank, is_main=is_main, barrier=acc.wait_for_everyone,
                    keep=cfg.run.keep, rng=state.rng_state(),
                    state={"optimizer": None if sharded else optimizer.state_dict(), "step": done, "skipped": skipped,
                           "nan_streak": nan_streak, "scaler": acc.scaler.state_dict() if acc.scaler else None,
                           "ema": ema, "config": cfg.to_dict(), "stream_hash": cfg.stream_hash(),
                           "world_size": world, "clips": clips_hash, "precision": precision, **content})
                if saved_to is not None:  # the ones --keep leaves
                    kept = {str(p) for _, p in state.list_checkpoints(out)}
                    result.checkpoints = [c for c in [*result.checkpoints, str(saved_to)] if c in kept]
    metrics.close()

    # 6. export the weights sync loads (and the EMA weights beside them) ---------------------------------
    _check_finite_everywhere(acc, model, device)
    full = acc.get_state_dict(model) if sharded else None  # FSDP: gathered on rank 0 (every rank takes part)
    if is_main:
        unwrapped = acc.unwrap_model(model)
        mask = cfg.data.mask if cfg.kind == "unet" else None  # the header says it: sync warns without it
        result.export = state.export_weights(out, model=unwrapped, kind=cfg.kind, arch=nets.arch,
                                             arch_name=nets.arch_name, step=cfg.run.max_steps, weights=full, mask=mask)
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, params, strict=True):
                    p.copy_(e)
            ema_files = state.export_weights(out, model=unwrapped, kind=cfg.kind, arch=nets.arch,
                                             arch_name=nets.arch_name, step=cfg.run.max_steps, name="export-ema",
                                             mask=mask)
            result.export.update({f"ema_{k}": v for k, v in ema_files.items()})
    acc.wait_for_everyone()

    # 7. the result ---------------------------------------------------------------------------------------
    result.skipped_steps = skipped
    result.seconds = round(time.monotonic() - t_start, 3)
    result.samples_per_second = round(samples_done / max(1e-9, time.monotonic() - t_loop), 3)
    result.peak_vram_gb = _peak_vram(device)
    acc.end_training()
    return result


def step_line(done: int, total: int, terms: Mapping[str, float], lr: float, samples_per_s: float) -> str:
    """``step 40/1000: loss 0.1234 (recon 0.1, lpips 0.02), lr 1e-05, 3.2 samples/s``: the loss terms of a logged
    step (every ``run.log_every``), as metrics.csv has them."""
    parts = [f"{k} {v:.4g}" for k, v in terms.items() if k != "loss"]
    if "loss" in terms:  # its terms beside it, unless one term is the loss itself (stage 1)
        said = f"loss {terms['loss']:.4g}" + (f" ({', '.join(parts)})" if len(parts) > 1 else "")
    else:
        said = ", ".join(parts)
    return f"step {done}/{total}: {said}, lr {lr:.3g}, {samples_per_s:.3g} samples/s"


def _loader_worker_died(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's report of a data-loader worker process that died: "DataLoader worker (pid(s) N)
    exited unexpectedly" (seen when a batch is awaited) or "DataLoader worker (pid N) is killed by signal: Killed."
    (its SIGCHLD handler, wherever the loop then is)."""
    text = str(exc)
    return "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal" in text)


def _worker_died_error(exc: BaseException, cfg: TrainConfig) -> JobFailedError:
    """A data-loader worker killed from outside (the out-of-memory killer, most often, with an official preset's
    batch on a small machine) said as such (it was an "internal error ... report the traceback")."""
    return JobFailedError(f"a data-loader worker process died ({exc}): killed from outside, most often by the "
                          "out-of-memory killer",
                          hint="check `dmesg`; use less memory: "
                          + (f"--batch-size below {cfg.data.batch_size} (--grad-accum keeps the effective batch), "
                             if cfg.data.batch_size > 1 else "")
                          + f"--workers below {max(1, cfg.data.workers)}, "
                          "or a tiny-* preset on a laptop; then rerun the same command (--resume latest after a "
                          "checkpoint)")


def _sharded(acc: Any, cfg: TrainConfig) -> bool:
    """True under FSDP (parameters, gradients and AdamW moments sharded over the ranks: checkpoints gather the
    weights on rank 0 and keep one optimizer shard per rank). DeepSpeed and other engines are refused
    (:func:`lipsyncctl.training.launch.check_engine`); so are EMA and LoRA under FSDP (their copies and the
    merged export read whole parameters)."""
    from accelerate.utils import DistributedType

    from lipsyncctl.errors import ConfigError
    from lipsyncctl.training.launch import check_engine

    check_engine(str(acc.distributed_type), "accelerate launch")
    if acc.distributed_type != DistributedType.FSDP:
        # accelerate quietly drops an FSDP (or DeepSpeed) config on the CPU and runs plain DDP: say so
        for engine in ("FSDP", "DEEPSPEED"):
            if os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true":
                check_engine(engine, "accelerate launch", cpu=True)
        return False
    if cfg.run.ema_decay or cfg.run.lora_rank:
        raise ConfigError("run.ema_decay and run.lora_rank are not supported under FSDP yet",
                          hint="train with plain DDP (--gpus N), or --set run.ema_decay=0 run.lora_rank=0")
    return True


def _check_finite_everywhere(acc: Any, model: Any, device: Any) -> None:
    """Every rank checks its (shard of the) weights; a non-finite value anywhere stops every rank before
    anything is written (:class:`~lipsyncctl.training.state.NonFiniteError`)."""
    import torch

    from lipsyncctl.training.state import NonFiniteError

    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()), None)
    if float(acc.reduce(torch.tensor([0.0 if bad is None else 1.0], device=device), "sum").item()):
        raise NonFiniteError(f"weight {bad or 'of another rank'} is not finite: nothing was saved",
                             hint="the last checkpoint is intact; resume from it with a lower lr, or check the data")


def _micro_step(cfg: TrainConfig, nets: Any, model: Any, batch: dict[str, Any], alphas: Any, device: Any,
                acc: Any) -> tuple[Any, dict[str, float]]:
    """The loss of one micro-batch (through the DDP-wrapped ``model``) and its terms for the log."""
    from lipsyncctl.training.step import syncnet_micro_step, unet_micro_step

    trained = nets.model
    nets.model = model
    try:
        if cfg.kind == "unet":
            losses = unet_micro_step(nets, batch, cfg, alphas=alphas, device=device, autocast=acc.autocast)
            return losses.total, losses.values()
        loss, _ = syncnet_micro_step(nets, batch, device=device, autocast=acc.autocast, cfg=cfg)
        return loss, {"loss": float(loss.detach())}
    finally:
        nets.model = trained


def _validate(cfg: TrainConfig, nets: Any, model: Any, clips: Any, alphas: Any, device: Any,
              acc: Any, *, sharded: bool = False) -> dict[str, float]:
    """Held-out loss on the val split's ``clips`` (fixed samples and draws: comparable across steps); SyncNet runs
    also report accuracy (``cos > 0.5``, as ``eval_syncnet_acc.py``)."""
    import torch

    from lipsyncctl.training import data as train_data
    from lipsyncctl.training.step import syncnet_micro_step, unet_micro_step

    if not clips.clips:
        return {}
    dataset = train_data.make_dataset(cfg, clips)
    n = cfg.data.val_samples if cfg.kind == "syncnet" else min(cfg.data.val_samples, 8)
    mine = list(range(acc.process_index, n, acc.num_processes))
    bs = cfg.data.batch_size
    # every rank runs as many forwards as the busiest one (FSDP gathers parameters in each forward: a rank
    # that stopped early would leave the others waiting); a rank's extra forwards are not counted
    busiest = math.ceil(n / acc.num_processes) if sharded else len(mine)
    batches = math.ceil(busiest / bs)
    total, correct, count = 0.0, 0.0, 0
    recon_only = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"lpips": 0.0, "sync": 0.0, "trepa": 0.0})})
    model.eval()
    trained, nets.model = nets.model, model
    try:
        with torch.no_grad():
            for i in range(batches):
                chunk = mine[i * bs:(i + 1) * bs]
                batch = train_data.collate([dataset[k] for k in chunk or [0]])
                if cfg.kind == "unet":  # the held-out loss is the recon MSE: no decode and pixel terms for it
                    loss = unet_micro_step(nets, batch, recon_only, alphas=alphas, device=device,
                                           autocast=acc.autocast).recon
                else:
                    loss, cos = syncnet_micro_step(nets, batch, device=device, autocast=acc.autocast, cfg=cfg)
                    if chunk:
                        correct += float(((cos > 0.5).float() == batch["label"].to(device)).float().sum())
                b = len(chunk)
                total, count = total + float(loss) * b, count + b
    finally:
        nets.model = trained
        model.train()
    sums = acc.reduce(torch.tensor([total, correct, float(count)], device=device), "sum").tolist()
    out = {"loss": sums[0] / max(1.0, sums[2]), "samples": sums[2]}
    if cfg.kind == "syncnet":
        out["accuracy"] = sums[1] / max(1.0, sums[2])
    return out


def _peak_vram(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


class _Metrics:
    """``metrics.csv`` (one row per logged step; columns grow as terms appear) and TensorBoard events."""

    def __init__(self, csv_path: Path, tb_dir: Path, *, enabled: bool, append: bool, after: int = 0) -> None:
        """``append``: continue the file of a resumed run from step ``after`` (the rows a killed run logged
        after its last checkpoint are dropped: those steps run again)."""
        self.enabled, self.path, self.rows = enabled, csv_path, 0
        self.tb = None
        if not enabled:
            return
        if not append:
            csv_path.unlink(missing_ok=True)
        elif csv_path.is_file():
            with csv_path.open(newline="") as f:
                rows = list(csv.reader(f))
            kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= after]
            if len(kept) < len(rows):
                from lipsyncctl.media.atomic import atomic_output

                with atomic_output(csv_path) as tmp, tmp.open("w", newline="") as f:
                    csv.writer(f).writerows(kept)
        try:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run's events past ``after`` (logged by the killed run, run again now) are purged, as its
            # CSV rows are: TensorBoard showed those steps twice
            self.tb = SummaryWriter(str(tb_dir), purge_step=after + 1 if append else None)
        except ImportError:  # the `train` extra is not installed: CSV only, said
            self.tb = None
            progress.message(f"note: no TensorBoard events in {tb_dir} (the tensorboard package is not installed: "
                             "pip install 'lipsyncctl[train]'); metrics.csv has every logged value")

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: v for k, v in values.items() if v is not None}}
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "name", "value"])
            for k, v in row.items():
                if k != "step":
                    w.writerow([step, k, v])
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
