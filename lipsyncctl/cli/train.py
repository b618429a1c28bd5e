"""`lipsyncctl train`: train the LatentSync UNet (stage 1/2) or a StableSyncNet on a curated dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from lipsyncctl.cli import options
from lipsyncctl.cli import state as st
from lipsyncctl.cli.flags import limits
from lipsyncctl.config import LAUNCH_PROCESSES
from lipsyncctl.errors import JobFailedError, UsageError

if TYPE_CHECKING:
    from lipsyncctl.api import TrainResult

HELP = """Train the UNet (stage 1, stage 2) or a StableSyncNet on a dataset made by `lipsyncctl curate`
(the official LatentSync recipes, resumable bit for bit).

\b
Examples:
  lipsyncctl train --preset stage2 --data data/ -o runs/s2            # official stage 2 (needs its models)
  lipsyncctl train --preset stage2 --data data/ -o runs/s2 --resume latest
  lipsyncctl train --preset stage2 --data data/ -o runs/s2 --gpus 4   # DDP on 4 GPUs of this machine
  lipsyncctl train --preset stage2 --data data/ -o runs/s2 --gpus 4 --accelerate-config fsdp   # FSDP
  accelerate launch -m lipsyncctl train --preset stage2 --data data/ -o runs/s2   # multi-node
  lipsyncctl train --preset stage2 --init stage1:runs/s1/export/unet.safetensors --data data/ -o runs/s2
  lipsyncctl train --preset syncnet_16_pixel_attn --data data/ -o runs/syncnet
  lipsyncctl train --preset tiny --data data/ -o runs/tiny --max-steps 20     # tiny random nets on the CPU
  lipsyncctl train --preset stage2 --set loss.trepa=0 --print-config

\b
RUN gets train.yaml (the resolved config), checkpoints/step-NNNNNN/ (full state: weights, AdamW moments,
GradScaler, EMA, step, every rank's RNG; the last --keep kept), export/ (latentsync_unet.pt in the
official layout and unet.safetensors with its config: `lipsyncctl sync --set model.checkpoint=...`
loads either), metrics.csv and tb/ (TensorBoard), validation/ (UNet runs with --validate-every: the held-out
clip rendered through `sync` with the current weights, scored LSE-C/D on the official scale; needs
syncnet-v2 + sfd-face, or --set run.val_sync=false). Samples, noise and timesteps are functions of (seed,
step): the stream does not depend on the worker count, and a resume continues it exactly.
Exit codes: 0 done, 1 the run diverged (non-finite steps), a rank or a data-loader worker failed, or RUN cannot be
written (read-only, full), 2 usage (e.g. RUN holds a
checkpointed run: --resume or -y; a run stopped before its first checkpoint restarts with the same command), 3
bad config/preset (also DeepSpeed, FSDP on the CPU), 4 a network a weighted loss term or the sync validation needs
is not installed (`lipsyncctl models fetch ...`, or --set loss.TERM=0 / run.val_sync=false), 5 a --data, --init
file or run.val_clip that is not there (or not media), 6 another train is writing to RUN (a requeued job while the
first still runs; --wait waits), 130 interrupted (Ctrl-C, SIGTERM: every rank stops, --resume continues from the last checkpoint).
"""


def train_cmd(
    data: Path | None = typer.Option(None, "--data", "-d", help="A curated dataset folder (or its train.txt)."),
    out: Path | None = typer.Option(None, "--output", "-o", help="The run folder (created if needed)."),
    preset: str | None = typer.Option(None, "--preset", "-p", help="Training preset (`--list-presets`) or a YAML file; "
                                      "required, except with --resume (the run's own train.yaml)."),
    sets: list[str] | None = typer.Option(None, "--set", help="Override one key, e.g. --set loss.trepa=0 (repeatable; `lipsyncctl presets keys --train` lists them)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved configuration and exit."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the training presets and exit."),
    init: str | None = typer.Option(None, "--init", help="Start weights: official, none, PATH, stage1:PATH or sd15:PATH."),
    resume: str | None = typer.Option(None, "--resume", help="Continue a run: 'latest' or a checkpoint folder."),
    overwrite: bool = typer.Option(False, "--overwrite", "-y", help="Start over in a run folder that holds a run."),
    max_steps: int | None = typer.Option(None, "--max-steps", **limits("run.max_steps", train=True), help="Optimizer steps of the run."),
    batch_size: int | None = typer.Option(None, "--batch-size", **limits("data.batch_size", train=True), help="Samples per GPU per micro-step."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", **limits("optim.grad_accum", train=True), help="Micro-steps per optimizer step."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="auto, fp16, bf16 or no."),
    save_every: int | None = typer.Option(None, "--save-every", **limits("run.save_every", train=True), help="Full checkpoint every N steps."),
    keep: int | None = typer.Option(None, "--keep", **limits("run.keep", train=True), help="Full checkpoints kept."),
    validate_every: int | None = typer.Option(None, "--validate-every", **limits("run.validate_every", train=True), help="Validation every N steps (0 off)."),
    workers: int | None = typer.Option(None, "--workers", **limits("data.workers", train=True), help="Data-loader worker processes."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N (one process)."),
    gpus: int | None = typer.Option(None, "--gpus", **limits(bounds=LAUNCH_PROCESSES), help="Launch N processes, one per GPU (DDP)."),
    nproc: int | None = typer.Option(None, "--nproc", **limits(bounds=LAUNCH_PROCESSES), help="Launch N processes on the CPU (gloo)."),
    accelerate_config: str | None = typer.Option(
        None, "--accelerate-config", help="Launch through `accelerate launch` with this accelerate config file "
        "(FSDP...; shipped: fsdp, deepspeed_zero2 [not supported yet]); --gpus/--nproc N set its process count."),
    wait: bool = typer.Option(False, "--wait", help="When another run is writing to RUN, wait for it to finish "
                              "(otherwise exit 6 naming it)."),
) -> None:
    from lipsyncctl import api

    if list_presets:
        rows = api.presets(train=True)
        st.result({"presets": {r["name"]: r["path"] for r in rows}},
                  lambda c: c.print(st.table("training presets", ["name", "description"],
                                             [(r["name"], r["description"]) for r in rows])))
        return
    flags: dict[str, Any] = {
        "model.init": init, "run.max_steps": max_steps, "data.batch_size": batch_size,
        "optim.grad_accum": grad_accum, "run.mixed_precision": mixed_precision, "run.save_every": save_every,
        "run.keep": keep, "run.validate_every": validate_every, "data.workers": workers, "run.device": device,
    }
    if not print_config and (data is None or out is None):
        raise UsageError("give the dataset and the run folder: --data DATA -o RUN",
                         hint="lipsyncctl train --preset stage2 --data DATA -o RUN")
    if preset is None and resume is not None and out is not None and (out / "train.yaml").is_file():
        preset = str(out / "train.yaml")  # a resume without --preset continues the run as it was configured
    if preset is None and not print_config:  # (the schema's defaults train every parameter of the stage-2 UNet:
        # no recipe; a forgotten --preset started that, in silence)
        raise UsageError("give the training preset: --preset NAME (or a YAML file)",
                         hint="`lipsyncctl train --list-presets` lists them: stage2 is the official stage 2, tiny a "
                              "CPU demo")
    config = api.resolve_train_config(preset, sets or (), flags)
    if print_config:
        options.print_and_exit(config.to_dict())
    if gpus or nproc or accelerate_config:
        if gpus and nproc:
            raise UsageError("--gpus and --nproc are exclusive", hint="--gpus N on GPUs, --nproc N on the CPU")
        argv = _without_launch_options(["lipsyncctl", *st.state().argv])
        code = api.launch_train(argv, gpus or nproc, cpu=bool(nproc), accelerate_config=accelerate_config, run=out,
                                wait=wait, resume=resume)
        if code:
            raise JobFailedError(f"a training process failed (exit {code})", hint="its error is printed above")
        return
    result = api.train(data, out, config, resume=resume, overwrite=overwrite, wait=wait)
    if int(os.environ.get("RANK", "0")) == 0:
        st.result(result.to_dict, lambda console: _render(console, result))


_LAUNCH_OPTIONS = ("--gpus", "--nproc", "--accelerate-config")


def _without_launch_options(argv: list[str]) -> list[str]:
    """The arguments after ``train``, without ``--gpus/--nproc N`` and ``--accelerate-config FILE`` (each
    process runs one rank)."""
    args = argv[argv.index("train") + 1:] if "train" in argv else argv[1:]
    head = argv[1:argv.index("train")] if "train" in argv else []
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in _LAUNCH_OPTIONS:
            skip = True
            continue
        if a.startswith(tuple(f"{o}=" for o in _LAUNCH_OPTIONS)):
            continue
        out.append(a)
    return out + head


def _render(console: Console, result: TrainResult) -> None:
    rows = {
        "run": result.run, "preset": result.preset, "kind": result.kind,
        "steps": f"{result.start_step} -> {result.start_step + result.steps} (of {result.max_steps})",
        "processes": result.world_size, "device": result.device, "precision": result.mixed_precision,
        "trainable": f"{result.trainable['tensors']} tensors, {result.trainable['params']:,} parameters",
        "last losses": ", ".join(f"{k} {v:.5g}" for k, v in result.losses.items()) or "-",
        "skipped steps": result.skipped_steps, "samples/s": result.samples_per_second,
        "peak VRAM": f"{result.peak_vram_gb} GB" if result.peak_vram_gb is not None else "-",
        "export": result.export.get("safetensors", "-"),
    }
    if result.validation:
        rows["validation"] = ", ".join(f"{k} {v:.4g}" for k, v in result.validation.items())
    console.print(st.kv_table(f"train -> {result.run}", rows))


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP)(train_cmd)
