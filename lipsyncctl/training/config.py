"""Training run settings: ``TrainConfig`` and the training presets (``lipsyncctl/presets/train/*.yaml``).

The official recipes (LATENTSYNC.md §3: ``configs/unet/stage*.yaml``, ``configs/syncnet/*.yaml``) are
presets here; every value has its bounds in this schema, once. Resolution follows the run presets' one
rule (:func:`lipsyncctl.config.resolve`): defaults < preset < ``--set`` < flags.

The resolved config is saved into every checkpoint (``train.yaml`` beside it and in its state), and its
hash is part of the resume check: a resume under a changed config is refused unless the change is one
that cannot alter the sample stream (see :data:`RESUMABLE_CHANGES`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from lipsyncctl import config as run_config
from lipsyncctl import paths

#: keys added after runs were written, and their defaults: at its default such a key is left out of
#: :meth:`TrainConfig.stream_hash`, so those runs' checkpoints still resume
ADDED_LATER = {"loss.noise": "mixed", "optim.warmup_steps": 0, "data.mask": paths.OFFICIAL_MASK}
#: keys made resumable after runs were written, group by group in the order they were: a run's hash holds the keys of
#: the groups made resumable after it was written (runs of before the first group hold all). ``model.init``: a resume
#: takes its weights from the checkpoint; ``run.mixed_precision``: the precision it resolves to is checked against
#: the checkpoint's; ``optim.lr``: a deliberate change of the schedule from the resume on (said at the resume, and
#: each step's lr is in metrics.csv)
MADE_RESUMABLE_GROUPS = (("model.init", "run.mixed_precision"), ("optim.lr",))
MADE_RESUMABLE = tuple(k for group in MADE_RESUMABLE_GROUPS for k in group)
#: keys a resume may change (they do not alter which samples or noise a step sees)
RESUMABLE_CHANGES = (*MADE_RESUMABLE, "run.max_steps", "run.save_every", "run.keep", "run.validate_every", "run.log_every",
                     "data.workers", "run.nan_abort_after", "name", "description", "run.val_sync",
                     "run.val_sync_preset", "run.val_clip", "run.val_seconds", "run.process_group_timeout")


#: the ``model`` keys that name a file or folder (or a registry name, a built-in config): a path given relative is
#: stored absolute (a resume from another working folder found no file there, and refused the same file's absolute
#: path as another configuration)
PATH_KEYS_OF_MODEL = ("unet_config", "syncnet_config", "vae", "syncnet", "lpips", "vgg", "videomae", "init")
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".yaml", ".yml", ".json", ".model"})


def model_reference(value: str) -> str:
    """A ``model`` setting as stored: a registry or built-in name as it is (``stable-syncnet``, ``stage2``, ``none``),
    a path (a separator, a leading ``.`` or ``~``, or a weights or config file's extension) made absolute, also after
    ``stage1:`` / ``sd15:``."""
    prefix, _, rest = value.partition(":") if value.startswith(("stage1:", "sd15:")) else ("", "", value)
    if rest and (os.sep in rest or "/" in rest or rest.startswith((".", "~"))
                 or Path(rest).suffix.lower() in _WEIGHT_SUFFIXES):
        rest = str(Path(rest).expanduser().absolute())
    return f"{prefix}:{rest}" if prefix else rest


class TrainModel(run_config.StrictModel):
    """The network trained and the frozen ones it needs."""

    unet_config: str = Field("stage2", description="UNet architecture (configs/unet name or path); kind unet")
    syncnet_config: str = Field(
        "syncnet_16_pixel_attn", description="StableSyncNet architecture (configs/syncnet name or path): the "
        "network trained (kind syncnet) or the sync-loss network (kind unet)"
    )
    resolution: Literal[64, 128, 256, 512] = Field(256, description="face size in pixels (64/128: tiny runs)")
    vae: str = Field("sd-vae-ft-mse", description="registry name or path of the VAE (frozen)")
    syncnet: str = Field("stable-syncnet", description="registry name or path of the sync-loss StableSyncNet")
    lpips: str = Field("lpips-vgg", description="registry name or path of LPIPS' linear heads (vgg.pth)")
    vgg: str = Field("vgg16-imagenet", description="registry name or path of torchvision's VGG16 weights")
    videomae: str = Field("videomae-v2-g", description="registry name or path of the TREPA VideoMAE-v2")
    videomae_config: Literal["giant", "tiny"] = Field("giant", description="VideoMAE-v2 architecture")
    init: str = Field(
        "official", description="UNet start weights: official (the registry UNet of this resolution), none "
        "(random), PATH (weights), stage1:PATH (stage-1 weights, fresh motion modules), sd15:PATH (a Stable Diffusion 1.5 "
        "image UNet, as the paper's stage 1: conv_in and attn2 k/v fresh); SyncNet: none or PATH"
    )
    trainable: tuple[str, ...] = Field(
        (), description="UNet parameters trained: names containing any of these; empty = all (stage 1)"
    )

    @field_validator(*PATH_KEYS_OF_MODEL)
    @classmethod
    def _path(cls, v: str) -> str:
        return model_reference(v)


class TrainData(run_config.StrictModel):
    num_frames: int = Field(16, ge=2, le=64, description="frames per sample (official: 16)")
    batch_size: int = Field(1, ge=1, le=4096, description="samples per GPU per micro-step")
    workers: int = Field(2, ge=0, le=64, description="data-loader worker processes (0 = in the main process)")
    lower_half: bool = Field(True, description="SyncNet sees the lower half of the face (official pixel configs)")
    mask: str = Field(paths.OFFICIAL_MASK, description="UNet runs: the mouth mask (white = kept): the official mask.png, or a "
                      "PNG path (official data.mask_image_path; a relative one is made absolute); sync must then use "
                      "it too (model.mask)")

    @field_validator("mask")
    @classmethod
    def _mask(cls, v: str) -> str:
        return paths.setting_path(v)
    latent_space: bool = Field(
        False, description="SyncNet runs: the network sees VAE latents (model.vae, posterior sample x 0.18215) of "
        "the frames, 4 channels per frame, instead of pixels (official syncnet_16_latent); kind syncnet only"
    )
    val_samples: int = Field(2048, ge=0, le=1_000_000, description="SyncNet validation samples (official: 2048)")


class TrainLoss(run_config.StrictModel):
    """Weights of the UNet loss terms (0 disables a term on purpose; a weighted term whose network is
    missing is an error, never silently dropped)."""

    recon: float = Field(1.0, ge=0, le=1000, description="MSE of the predicted noise")
    lpips: float = Field(0.1, ge=0, le=1000, description="LPIPS-VGG on the lower half (pixel supervision)")
    sync: float = Field(0.05, ge=0, le=1000, description="StableSyncNet BCE (pixel supervision)")
    trepa: float = Field(10.0, ge=0, le=1000, description="TREPA: VideoMAE-v2 feature MSE (pixel supervision)")
    mixed_noise_alpha: float = Field(1.0, ge=0, le=100, description="mixed noise: shared/independent ratio; 0 = i.i.d.")
    noise: Literal["mixed", "shared", "iid"] = Field(
        "mixed", description="training noise over a sample's frames: mixed (official use_mixed_noise, "
        "mixed_noise_alpha), shared (one draw repeated over the frames: the official fallback), iid (independent)")


#: an AdamW beta (torch refuses one outside [0, 1) when the optimizer is made: after the networks loaded)
Beta = Annotated[float, Field(ge=0, lt=1)]


class TrainOptim(run_config.StrictModel):
    lr: float = Field(1e-5, gt=0, le=1, description="AdamW learning rate (official: constant; optim.warmup_steps "
                      "ramps it up)")
    warmup_steps: int = Field(0, ge=0, le=10**9, description="linear warm-up of the learning rate over the first N "
                              "optimizer steps (official: 0)")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay (torch default 0.01)")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0, le=1, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="gradient clipping norm")
    grad_accum: int = Field(1, ge=1, le=1024, description="micro-steps per optimizer step")


class TrainRun(run_config.StrictModel):
    seed: int = Field(1247, ge=0, le=2**62, description="seed of samples, noise and timesteps (official: 1247)")
    max_steps: int = Field(10_000, ge=1, le=10**9, description="optimizer steps of the run")
    save_every: int = Field(10_000, ge=1, le=10**9, description="full checkpoint every N steps (and at the end)")
    keep: int = Field(3, ge=1, le=1000, description="full checkpoints kept (older ones removed)")
    validate_every: int = Field(0, ge=0, le=10**9, description="validation every N steps (0 = off)")
    val_sync: bool = Field(
        True, description="UNet runs: each validation also renders the held-out clip through `sync` with the "
        "current UNet and scores LSE-C/D on the official scale (needs syncnet-v2 + sfd-face: exit 4 without them)"
    )
    val_sync_preset: str = Field(
        "", description="run preset of that render (steps, guidance, faces); empty = latentsync-1.5 at 256 px, "
        "latentsync-1.6 at 512"
    )
    val_clip: str = Field("", description="video (with its audio) to render; empty = the first val clip of DATA")
    val_seconds: float = Field(10.0, gt=0, le=3600, description="seconds of that clip rendered and scored")
    process_group_timeout: int = Field(
        1800, ge=60, le=86400, description="seconds a rank waits for the others (a validation runs on rank 0 "
        "while they wait: keep it above one validation)"
    )
    log_every: int = Field(10, ge=1, le=10**6, description="every N steps: a line with the loss terms in the log, "
                           "a row of metrics.csv and TensorBoard")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto = fp16 autocast + GradScaler on a CUDA GPU (official), no elsewhere; bf16 when "
        "asked"
    )
    grad_checkpointing: bool = Field(True, description="recompute activations in backward (UNet, VAE, SyncNet)")
    deterministic: bool = Field(False, description="deterministic algorithms (bit-exact resume; slower on GPU)")
    nan_abort_after: int = Field(5, ge=1, le=10**6, description="abort after this many non-finite steps in a row")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of the trained weights (0 = off)")
    lora_rank: int = Field(0, ge=0, le=1024, description="train LoRA adapters of this rank instead (0 = off)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps (single-process runs)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return run_config.device_name(v)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no(cls, v: Any) -> Any:
        return "no" if v is False else v  # `--set run.mixed_precision=no`: YAML reads a bare no as false


class TrainConfig(run_config.StrictModel):
    """A resolved training configuration (what ``train --print-config`` shows and checkpoints store)."""

    #: the command that lists its keys, types, limits and meanings (configuration errors' hints)
    KEYS_COMMAND: ClassVar[str] = "lipsyncctl presets keys --train"

    name: str = Field("defaults", description="the preset's name")
    description: str = Field("", description="what the preset is for")
    kind: Literal["unet", "syncnet"] = Field("unet", description="the network trained")
    model: TrainModel = TrainModel()
    data: TrainData = TrainData()
    loss: TrainLoss = TrainLoss()
    optim: TrainOptim = TrainOptim()
    run: TrainRun = TrainRun()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def pixel_supervision(self) -> bool:
        """Official ``pixel_space_supervise``: decode the one-step x0 and apply the pixel losses."""
        return self.kind == "unet" and any((self.loss.lpips, self.loss.sync, self.loss.trepa))

    def stream_hash(self, *, legacy: Mapping[str, Any] | None = None, generation: int = 0,
                    model: Mapping[str, Any] | None = None) -> str:
        """Hash of everything that decides the samples, noise and updates (not the keys of
        :data:`RESUMABLE_CHANGES`): a resume under a different one is refused. ``legacy``: the hash a run written
        before a group of :data:`MADE_RESUMABLE_GROUPS` was resumable has: the keys of the groups from ``generation``
        on, with their values from ``legacy`` (the run's saved configuration; this one's where it has none).
        ``model``: these ``model`` values in place of this one's (a run recorded with a relative path)."""
        tree = self.to_dict()
        tree["model"].update(model or {})
        kept: tuple[str, ...] = ()
        if legacy is not None:
            kept = tuple(k for group in MADE_RESUMABLE_GROUPS[generation:] for k in group)
            saved = run_config.dotted(legacy)
            for key in kept:
                section, name = key.split(".")
                tree[section][name] = saved.get(key, tree[section][name])
        run_config.drop_keys(tree, [k for k in RESUMABLE_CHANGES if k not in kept], ADDED_LATER)
        return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]

    def continues(self, saved_hash: str | None, saved_config: Mapping[str, Any] | None = None) -> bool:
        """Whether a run whose stream hash is ``saved_hash`` (None: not recorded) and configuration ``saved_config``
        (its train.yaml or checkpoint's) continues under this config: the hash of now, or of a run written before
        a group of keys was made resumable."""
        if saved_hash is None or saved_hash == self.stream_hash():
            return True
        # a run recorded before its relative model paths were stored absolute: those values as it wrote them
        relative = self._relative_paths(saved_config)
        if relative and saved_hash == self.stream_hash(model=relative):
            return True
        return any(saved_hash == self.stream_hash(legacy=saved_config or {}, generation=g, model=model)
                   for g in range(len(MADE_RESUMABLE_GROUPS)) for model in ({}, relative))

    def _relative_paths(self, saved: Mapping[str, Any] | None) -> dict[str, str]:
        """The ``model`` paths the ``saved`` configuration gives relative where this one has them absolute (the same
        files, named from the working folder, as runs recorded them before :func:`model_reference`)."""
        saved_model = (saved or {}).get("model")
        if not isinstance(saved_model, Mapping):
            return {}
        mine = self.to_dict()["model"]
        return {k: saved_model[k] for k in PATH_KEYS_OF_MODEL if isinstance(saved_model.get(k), str)
                and saved_model[k] != mine[k] and model_reference(saved_model[k]) == mine[k]}

    def changes_from(self, saved: Mapping[str, Any] | None, limit: int = 4, *,
                     only: Iterable[str] | None = None) -> str:
        """``optim.warmup_steps 0 -> 100, ...``: the keys (not :data:`RESUMABLE_CHANGES`; or those of ``only``)
        whose values differ from the ``saved`` configuration (a run's train.yaml or checkpoint), or "" when it
        cannot say or none differs."""
        if not isinstance(saved, Mapping):
            return ""
        old, new = run_config.dotted(saved), run_config.dotted(self.to_dict())
        old.update({f"model.{k}": new[f"model.{k}"] for k in self._relative_paths(saved)})  # (the same files)
        skip = {*RESUMABLE_CHANGES, "stream_hash", "data.path"}
        chosen = set(only) if only is not None else None
        wanted = (lambda k: k in chosen) if chosen is not None else \
            (lambda k: k not in skip and not k.startswith("writer."))
        keys = [k for k in new if wanted(k) and k in old
                and json.dumps(old[k], default=str) != json.dumps(new[k], default=str)]
        said = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in keys[:limit])
        return said + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def presets_dir() -> Path:
    return paths.PRESETS_DIR / "train"


def list_train_presets() -> dict[str, Path]:
    return run_config.list_presets(presets_dir())


def resolve_train_config(
    preset: str | Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """defaults < training preset < ``--set`` < flags (the run presets' one precedence function). A run's own
    ``RUN/train.yaml`` is a preset too (its record's keys dropped: the stream hash, the writer, the data path,
    which ``--data`` gives): a run started again, or a new one, as that run was configured."""
    source = preset_source(preset)
    named = str(preset) if isinstance(source, dict) and isinstance(preset, str) else "preset"  # (a run's train.yaml)
    cfg: TrainConfig = run_config.resolve(source, sets, flags, schema=TrainConfig, folder=presets_dir(), named=named)
    return cfg


def preset_source(preset: Any) -> Any:
    """A training preset as given (a name, a path, a mapping), or a run's ``train.yaml`` it names as its mapping
    (:func:`run_record`): what resolving and showing it read."""
    if isinstance(preset, str) and preset not in list_train_presets() and Path(preset).expanduser().is_file():
        record = run_record(Path(preset).expanduser())
        if record is not None:
            return record
    return preset


def run_record(path: Path) -> dict[str, Any] | None:
    """A run's ``train.yaml`` (it has a ``stream_hash``) as a preset: without the record's own keys; None for any
    other file (read as a preset, its errors naming it)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "stream_hash" not in data:
        return None
    data = {k: v for k, v in data.items() if k not in ("stream_hash", "writer")}
    if isinstance(data.get("data"), dict):
        data["data"] = {k: v for k, v in data["data"].items() if k != "path"}
    return data

