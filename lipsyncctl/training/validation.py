"""Validation through the sync code: every ``run.validate_every`` steps of a UNet run, the held-out clip is
rendered with the current UNet by the library's own clip pipeline (:func:`lipsyncctl.pipeline.clip.sync_clip`:
faces, VAE, whisper, denoising, paste-back, encode) and the render is scored on the official LSE scale
(:class:`~lipsyncctl.scoring.official.OfficialScorer`: S3FD tracks + SyncNet v2, ``eval_sync_conf.py``).

1. The clip: ``run.val_clip`` (a video with its audio), or by default the first kept clip of the ``val``
   split of ``DATA`` (its aligned face clip, which carries its own audio), its first ``run.val_seconds``.
2. The weights: the current UNet's full state dict (FSDP: gathered on rank 0; LoRA: merged into the official
   names) written as our safetensors (config in the header) under ``RUN/validation/``, then read back by
   the pipeline's strict loader, as ``sync --set model.checkpoint=...`` would.
3. The render: the run preset ``run.val_sync_preset`` (steps, guidance, faces; default ``latentsync-1.5``
   at 256 px, ``latentsync-1.6`` at 512) with the run's UNet architecture and VAE, on the training device,
   picture and audio cut to the same span, into ``RUN/validation/step-NNNNNN.mp4`` with its ``.run.yaml`` (kept: look at them).
4. The score: LSE-C / LSE-D of the render against its audio, logged as ``val_lse_c`` / ``val_lse_d``
   beside the held-out recon loss (``val_loss``). ``val_sync_measured`` is 0 when no face track was found
   (with the tiny preset's random S3FD that is always the case: its numbers mean nothing).

Only the main process renders and scores; the others wait at a barrier, so the process group's timeout
(``run.process_group_timeout``) must exceed a validation. The scorer's weights (``syncnet-v2``, ``sfd-face``)
are checked when the run starts: missing ones stop it with exit 4 unless ``run.val_sync`` is false.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import MediaError, MissingModelError, UsageError

if TYPE_CHECKING:
    import torch

    from lipsyncctl.config import Config
    from lipsyncctl.training.config import TrainConfig
    from lipsyncctl.training.data import ClipSet

#: the render preset per training resolution when ``run.val_sync_preset`` is empty
DEFAULT_PRESETS = {256: "latentsync-1.5", 512: "latentsync-1.6"}
FOLDER = "validation"


@dataclass(frozen=True)
class SyncValidation:
    """What one validation render needs, resolved when the run starts (fail fast)."""

    video: Path                 # the held-out clip (its own audio stream is the dialogue)
    seconds: float
    config: Config              # the render's run config (its model.checkpoint is set per validation)
    scorer_files: dict[str, Path]


def enabled(cfg: TrainConfig) -> bool:
    """Sync validation runs: a UNet run that validates and has ``run.val_sync`` on."""
    return cfg.kind == "unet" and bool(cfg.run.validate_every) and cfg.run.val_sync


def render_config(cfg: TrainConfig, device: torch.device | str) -> Config:
    """The run config of the validation render (module docstring, step 3)."""
    from lipsyncctl import config as run_config

    preset = cfg.run.val_sync_preset or DEFAULT_PRESETS.get(cfg.model.resolution, "latentsync-1.5")
    sets = [f"model.unet_config={cfg.model.unet_config}", f"model.vae={cfg.model.vae}",
            f"inference.device={device}", "sync.length_policy=cut",  # the span's own audio: same length
            f"model.mask={cfg.data.mask}"]
    if cfg.model.resolution in DEFAULT_PRESETS:
        sets.append(f"model.resolution={cfg.model.resolution}")
    return run_config.resolve(preset, sets)


def held_out_clip(cfg: TrainConfig, data: Path, val_clips: ClipSet | None = None) -> Path:
    """``run.val_clip``, or the aligned clip of the first kept ``val`` clip of ``data`` (``val_clips``: those clips,
    when the caller has read them).

    Raises:
        MediaError: no such file (exit 5, as every missing input).
        UsageError: no val clip (the hint names the settings that fix it)."""
    if cfg.run.val_clip:
        p = Path(cfg.run.val_clip).expanduser()
        if not p.is_file():
            raise MediaError(f"run.val_clip {p}: no such file",
                             hint="give a video with a face and its audio, or --set run.val_sync=false")
        return p
    from lipsyncctl.training import data as train_data

    clips = val_clips if val_clips is not None else \
        train_data.read_clips(data, split="val", kind=cfg.kind, num_frames=cfg.data.num_frames)
    if not clips.clips:
        raise UsageError(f"{data}: no held-out (val) clip to render for the sync validation",
                         hint="curate with a val split (curate.val_fraction), give --set run.val_clip=VIDEO, "
                              "or --set run.val_sync=false")
    return clips.clips[0].video


def prepare(cfg: TrainConfig, data: Path, device: torch.device, *,
            val_clips: ClipSet | None = None) -> SyncValidation | None:
    """Resolve the clip (:func:`held_out_clip`), the render config and the scorer's files (None when sync validation
    is off).

    Raises:
        MissingModelError: ``syncnet-v2`` / ``sfd-face`` (or a network of the render) not installed; the hint
            names ``--set run.val_sync=false``.
        UsageError: no held-out clip."""
    if not enabled(cfg):
        return None
    video = held_out_clip(cfg, data, val_clips)
    config = render_config(cfg, device)
    files = _scorer_files(config)
    from lipsyncctl.errors import LipsyncError
    from lipsyncctl.pipeline.clip import probe_inputs

    try:  # a file of the user's that is not a video with sound failed at the first validation, after the steps
        if cfg.run.val_clip:  # before it (curate's aligned clips are its own: a video and the span's sound)
            probe_inputs(video, video, config.sync.audio_stream, config.sync.sequence_fps)
    except LipsyncError as exc:
        # (the probe's own hint names sync's --audio/--video, which train has not)
        raise MediaError(f"run.val_clip {exc.message}", hint="give a video with a face and its sound "
                         "(--set run.val_clip=VIDEO), or --set run.val_sync=false") from None
    return SyncValidation(video, cfg.run.val_seconds, config, files)


def model_files(cfg: TrainConfig) -> dict[str, Path]:
    """The files sync validation loads besides the run's own networks: the scorer's (``syncnet-v2``,
    ``sfd-face``) and the render's whisper; ``{}`` when it is off (what ``doctor`` checks for a training preset).

    Raises:
        MissingModelError: as :func:`prepare`."""
    if not enabled(cfg):
        return {}
    config = render_config(cfg, "cpu")  # the models do not depend on the device
    return {**_scorer_files(config), "whisper": _whisper(config)}


def _whisper(config: Config) -> Path:
    from lipsyncctl.pipeline.networks import resolve_model_file

    return resolve_model_file(config.model.whisper, "whisper")


def _scorer_files(config: Config) -> dict[str, Path]:
    """The scorer's files of the render ``config`` (its whisper checked too)."""
    from lipsyncctl.curation.sync import FETCH
    from lipsyncctl.curation.sync import models as scorer_models

    try:
        files = scorer_models(config.model)
        _whisper(config)
    except MissingModelError as e:
        raise MissingModelError(f"validation through sync needs its scorer and whisper: {e.message}",
                                hint=f"run `{FETCH} {config.model.whisper}`, or --set run.val_sync=false "
                                     "(held-out loss only)") from None
    return files


def render_and_score(job: SyncValidation, weights: dict[str, torch.Tensor], *, run: Path, step: int, arch: Any,
                     arch_name: str) -> dict[str, float]:
    """Steps 2-4 of the module docstring on the main process; returns ``lse_c``, ``lse_d``, ``sync_measured``
    (and the render's frame count)."""
    import torch

    from lipsyncctl import config as run_config
    from lipsyncctl.checkpoints.io import write_safetensors
    from lipsyncctl.media.atomic import temp_path
    from lipsyncctl.pipeline.clip import sync_clip
    from lipsyncctl.training.state import weights_header

    folder = run / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"step-{step:06d}.mp4"
    unet = temp_path(folder / f"unet-step-{step:06d}.safetensors")
    try:
        write_safetensors(unet, {k: v.detach().cpu().float() for k, v in weights.items()},
                          weights_header("unet", arch, arch_name, step))
        config = run_config.resolve(job.config.to_dict(), [f"model.checkpoint={unet}"])
        rendered = sync_clip(job.video, job.video, out, config, start=0.0, end=job.seconds, overwrite=True)
    finally:
        unet.unlink(missing_ok=True)
    with torch.no_grad():
        scored = _score(job, out, config.inference.device, rendered.frames)
    result = {"sync_measured": 1.0 if scored.measured else 0.0, "render_frames": float(rendered.frames)}
    if scored.measured:
        result.update(lse_c=float(scored.lse_c), lse_d=float(scored.lse_d))
    return result


def _score(job: SyncValidation, video: Path, device: str, frames: int) -> Any:
    """The official LSE scores of ``video`` (its ``frames`` frames, streamed) against its own audio."""
    import torch

    from lipsyncctl.audio import MODEL_AUDIO_RATE
    from lipsyncctl.checkpoints.loaders import load_syncnet_eval
    from lipsyncctl.checkpoints.sfd import load_sfd_face
    from lipsyncctl.faces.detect_sfd import SfdFaceDetector
    from lipsyncctl.media.audio import read_audio
    from lipsyncctl.media.probe import probe
    from lipsyncctl.media.reader import read_range
    from lipsyncctl.runner.devices import resolve_device
    from lipsyncctl.scoring.lse import EVAL_FPS
    from lipsyncctl.scoring.official import OfficialScorer

    where = resolve_device(device)
    sfd = job.scorer_files["sfd-face"]
    scorer = OfficialScorer(SfdFaceDetector(load_sfd_face(sfd, device=where, dtype=torch.float32)),
                            load_syncnet_eval(job.scorer_files["syncnet-v2"], device=where,
                                              dtype=torch.float32).eval(), sfd)
    info = probe(video).video
    source = functools.partial(read_range, video, 0, frames)  # read twice, never held
    return scorer.score(source, read_audio(video, MODEL_AUDIO_RATE, 1), info.nominal_fps if info else EVAL_FPS,
                        count=frames)
