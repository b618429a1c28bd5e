"""One public loader per model. Strict, weights-only, memory-mapped, never downloading.

Each loader reads the official file (or our converted safetensors, whose header carries the config),
builds the network with its parameters on the meta device, checks every name and shape, and adopts
the file's tensors as parameters (see :mod:`lipsyncctl.checkpoints.materialize`).

==========================  ============================================================  ==========================
loader                      accepts                                                       returns (eval mode)
==========================  ============================================================  ==========================
:func:`load_unet`           ``latentsync_unet.pt`` ``{"state_dict"}``, converted file      ``UNet3DConditionModel``
:func:`load_whisper_encoder` OpenAI ``{"dims", "model_state_dict"}`` (e.g. ``tiny.pt``)   ``WhisperFeatureEncoder``
:func:`load_vae`            diffusers folder, single safetensors / .bin (legacy names ok)  diffusers ``AutoencoderKL``
:func:`load_stable_syncnet` ``stable_syncnet.pt`` (plain or ``{"state_dict"}``)            ``StableSyncNet``
:func:`load_syncnet_eval`   ``syncnet_v2.model`` (flat state dict)                         ``SyncNetEval``
``sfd.load_sfd_face``       ``sfd_face.pth`` (flat, official S3FD names; own key map)      ``S3FD``
:func:`load_hyperiqa`       ``koniq_pretrained.pkl`` (flat ``HyperNet.state_dict()``)       ``HyperNet``
==========================  ============================================================  ==========================

:func:`check_checkpoint` runs the same checks without materialising any weight (``models verify``).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.checkpoints.io import Checkpoint, read_checkpoint
from lipsyncctl.checkpoints.keys import KeyReport, compare_state_dict
from lipsyncctl.checkpoints.materialize import build_empty, load_into
from lipsyncctl.errors import ArchConfigError, CheckpointError

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL
    from torch import nn

    from lipsyncctl.nets.hyperiqa import HyperNet
    from lipsyncctl.nets.syncnet import StableSyncNet, StableSyncNetConfig
    from lipsyncctl.nets.syncnet_eval import SyncNetEval
    from lipsyncctl.nets.unet import UNet3DConditionModel
    from lipsyncctl.nets.unet_config import UNetConfig
    from lipsyncctl.nets.whisper import WhisperFeatureEncoder

PathLike = str | os.PathLike[str]

#: The published ``stabilityai/sd-vae-ft-mse`` config.json (diffusers ``AutoencoderKL`` arguments).
SD_VAE_FT_MSE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
#: LatentSync sets these after loading whatever the config says (scripts/inference.py).
VAE_SCALING_FACTOR = 0.18215
VAE_SHIFT_FACTOR = 0.0
#: Old diffusers names of the VAE mid-block attention (only there; shapes unchanged).
_VAE_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass
class LoadPlan:
    """What a loader will do: build ``build()`` and load ``state_dict`` into it, then ``finish`` it."""

    what: str
    source: Path
    build: Callable[[], nn.Module]
    state_dict: dict[str, torch.Tensor]
    ignore_missing: tuple[str, ...] = ()
    finish: Callable[[Any], Any] = field(default=lambda m: m)
    hint: str | None = None
    config: Any = None  # the architecture config used (UNetConfig, StableSyncNetConfig, dims, VAE dict)
    config_name: str | None = None  # its name (a UNet file's header names the one it states)
    header: dict[str, Any] = field(default_factory=dict)  # a lipsyncctl file's header (train's export: its mask)

    def execute(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Any:
        model = build_empty(self.build)
        model = load_into(
            model, self.state_dict, what=self.what, source=self.source, device=device, dtype=dtype,
            ignore_missing=self.ignore_missing, hint=self.hint,
        )
        return self.finish(model)

    def check(self) -> KeyReport:
        """Compare names and shapes without allocating any weight."""
        import torch

        with torch.device("meta"):
            expected = self.build().state_dict()
        return compare_state_dict(expected, self.state_dict, ignore_missing=self.ignore_missing)


# --------------------------------------------------------------------------------------------------
# UNet


def resolve_unet_config(config: UNetConfig | Mapping[str, Any] | PathLike) -> tuple[UNetConfig, str]:
    """``(UNetConfig, label)`` from a config object, a ``model:`` mapping, a name (``stage2``) or a YAML path."""
    from lipsyncctl.checkpoints import archs
    from lipsyncctl.nets.unet_config import UNetConfig

    if isinstance(config, UNetConfig):
        return config, "config object"
    if isinstance(config, Mapping):
        section = config.get("model", config)
        return archs.unet_config_from_dict(dict(section)), "config mapping"
    return archs.load_unet_config(config), str(config)


def plan_unet(config: UNetConfig | Mapping[str, Any] | PathLike | None, checkpoint: PathLike) -> LoadPlan:
    from lipsyncctl.nets.unet import UNet3DConditionModel

    ck = read_checkpoint(checkpoint)
    header = ck.lipsyncctl_header or {}
    carries = header.get("kind") == "unet" and isinstance(header.get("config"), Mapping)
    if config is None or carries:  # a file that states its architecture (train's export) is built as it says
        from lipsyncctl.checkpoints import archs

        carried = _header_config(ck, "unet", "UNet",
                                 "pass the architecture config, e.g. stage2 (LatentSync 1.5) or stage2_512 (1.6)")
        cfg = archs.unet_config_from_dict(dict(carried), source=str(ck.path))
        name = label = str(header.get("config_name") or "from file header")
        if config is not None and resolve_unet_config(config)[0] != cfg:
            label += f", the file's own architecture, not {config if isinstance(config, (str, Path)) else 'the given'}"
    else:
        cfg, label = resolve_unet_config(config)
        name = label
    _expect_container(ck, ("state_dict", "flat", "lipsyncctl"), "a UNet")
    return LoadPlan(f"UNet ({label})", ck.path, lambda: UNet3DConditionModel(cfg), ck.state_dict, config=cfg,
                    config_name=name, header=dict(header))


def load_unet(
    config: UNetConfig | Mapping[str, Any] | PathLike | None,
    checkpoint: PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> UNet3DConditionModel:
    """Load a LatentSync UNet.

    Args:
        config: ``stage2`` / ``stage2_512`` / ... (``models/configs/unet/``), a YAML path, a ``model:``
            mapping or a :class:`UNetConfig`; None for a converted file that carries its config. A file that
            carries one (``models convert``, a training run's export) is built as it states whatever ``config``
            says (``model.unet_config``'s default names no trained variant), strictly against its own tensors;
            :func:`plan_unet`'s label names both when they differ, and the run's record names the file's.
        checkpoint: ``latentsync_unet.pt`` (``{"state_dict": ...}``, a ``module.`` prefix is stripped)
            or a file written by :func:`lipsyncctl.checkpoints.convert.convert_checkpoint`.
        device: where the weights go.
        dtype: floating-point dtype of the weights (None keeps the file's; official files are fp32).

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable file or any name/shape difference (readable report).
        ConfigError: bad or missing architecture config.
    """
    return plan_unet(config, checkpoint).execute(device, dtype)


# --------------------------------------------------------------------------------------------------
# Whisper


def plan_whisper_encoder(path: PathLike) -> LoadPlan:
    from lipsyncctl.checkpoints.whisper import convert_openai_whisper
    from lipsyncctl.nets.whisper import WhisperFeatureEncoder, build_whisper_encoder

    ck = read_checkpoint(path)
    header = ck.lipsyncctl_header
    dims = ck.metadata.get("dims")
    if dims is None and header is not None and header.get("kind") == "whisper":
        dims = header.get("config")
    if not isinstance(dims, Mapping):
        if dims is not None:  # openai's ModelDimensions dataclass (only in non-weights-only pickles)
            dims = vars(dims)
        else:
            raise CheckpointError(
                f"{ck.path}: not an openai-whisper checkpoint (no 'dims'; container: {ck.container})",
                hint="expected whisper/tiny.pt ({'dims', 'model_state_dict'}) or a file made by "
                "`lipsyncctl models convert`",
            )
    hf_config, state = convert_openai_whisper(ck.state_dict, dims)
    return LoadPlan(
        "whisper encoder", ck.path, lambda: build_whisper_encoder(hf_config), state,
        finish=lambda enc: WhisperFeatureEncoder(enc).eval(), config=dict(dims),
    )


def load_whisper_encoder(
    path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> WhisperFeatureEncoder:
    """Load the whisper encoder (all hidden states, no final norm) from an OpenAI-layout checkpoint.

    Decoder entries are ignored. The official ``tiny.pt`` is float16; pass ``dtype=torch.float32`` to
    compute in float32 as LatentSync does on CPU (None keeps the file's dtype).
    """
    return plan_whisper_encoder(path).execute(device, dtype)


# --------------------------------------------------------------------------------------------------
# VAE


def _vae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy mid-block attention names (``query`` -> ``to_q`` ...)."""
    out = {}
    for name, t in state_dict.items():
        parts = name.split(".")
        if len(parts) == 6 and parts[1:4] == ["mid_block", "attentions", "0"] and parts[4] in _VAE_LEGACY_ATTENTION:
            name = ".".join([*parts[:4], _VAE_LEGACY_ATTENTION[parts[4]], parts[5]])
        out[name] = t
    return out


def _vae_init_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    from diffusers import AutoencoderKL

    accepted = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    unknown = sorted(k for k in config if not k.startswith("_") and k not in accepted)
    if unknown:
        raise ArchConfigError(f"VAE config: unknown key {unknown[0]!r} for diffusers AutoencoderKL")
    return {k: v for k, v in config.items() if k in accepted}


def plan_vae(path_or_folder: PathLike) -> LoadPlan:
    from diffusers import AutoencoderKL

    ck = read_checkpoint(path_or_folder)
    header = ck.lipsyncctl_header
    if ck.container == "diffusers":
        config = ck.metadata["config"]
    elif header is not None and header.get("kind") == "vae" and isinstance(header.get("config"), Mapping):
        config = header["config"]
    else:
        config = SD_VAE_FT_MSE_CONFIG
    kwargs = _vae_init_kwargs(config)

    def finish(vae: AutoencoderKL) -> AutoencoderKL:
        vae.register_to_config(scaling_factor=VAE_SCALING_FACTOR, shift_factor=VAE_SHIFT_FACTOR)
        return vae.eval()

    return LoadPlan(
        "VAE (AutoencoderKL)", ck.path, lambda: AutoencoderKL(**kwargs), _vae_state_dict(ck.state_dict),
        finish=finish, config=kwargs,
    )


def load_vae(
    path_or_folder: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> AutoencoderKL:
    """Load the SD VAE (diffusers ``AutoencoderKL``) with LatentSync's scaling 0.18215 and shift 0.

    Accepts a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``/``.bin``), a
    converted file with its config in the header, or a single safetensors/.bin file of the
    sd-vae-ft-mse architecture. Legacy mid-block attention names (``query/key/value/proj_attn``) are
    renamed to the current ones.
    """
    return plan_vae(path_or_folder).execute(device, dtype)


# --------------------------------------------------------------------------------------------------
# SyncNets


def resolve_syncnet_config(config: StableSyncNetConfig | Mapping[str, Any] | PathLike) -> tuple[StableSyncNetConfig, str]:
    """``(StableSyncNetConfig, label)`` from an object, a mapping, a name (``syncnet_16_pixel_attn``) or a YAML."""
    from lipsyncctl.nets.syncnet import StableSyncNetConfig

    if isinstance(config, StableSyncNetConfig):
        return config, "config object"
    if not isinstance(config, Mapping):  # a name or a YAML: the one validated reader (errors name the file)
        from lipsyncctl.checkpoints import archs

        return archs.load_syncnet_config(config), archs.config_path("syncnet", config).stem
    section = config.get("model", config)
    try:
        return StableSyncNetConfig.from_dict(section), "config mapping"
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchConfigError(f"syncnet config (config mapping): {exc}") from exc


def plan_stable_syncnet(config: StableSyncNetConfig | Mapping[str, Any] | PathLike | None, path: PathLike) -> LoadPlan:
    from lipsyncctl.nets.syncnet import StableSyncNet

    ck = read_checkpoint(path)
    if config is None:
        config = _header_config(ck, "stable-syncnet", "syncnet",
                                "pass the architecture config, e.g. syncnet_16_pixel_attn (the released stable_syncnet.pt)")
    cfg, label = resolve_syncnet_config(config)
    _expect_container(ck, ("state_dict", "flat", "lipsyncctl"), "a StableSyncNet")
    return LoadPlan(
        f"StableSyncNet ({label})", ck.path, lambda: StableSyncNet(cfg), ck.state_dict, config=cfg,
        hint="same names, other sizes usually means another syncnet config (syncnet_16_pixel_attn, "
        "syncnet_16_pixel, syncnet_16_latent, syncnet_25_pixel)",
    )


def load_stable_syncnet(
    config: StableSyncNetConfig | Mapping[str, Any] | PathLike | None,
    path: PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> StableSyncNet:
    """Load a StableSyncNet (``stable_syncnet.pt``: ``{"state_dict"}`` plus training bookkeeping, or flat).

    ``config``: ``syncnet_16_pixel_attn`` (the released file) or another name in
    ``models/configs/syncnet/``, a YAML path, a mapping, a config object, or None for a converted file.
    """
    return plan_stable_syncnet(config, path).execute(device, dtype)


def plan_syncnet_eval(path: PathLike) -> LoadPlan:
    from lipsyncctl.nets.syncnet_eval import SyncNetEval

    ck = read_checkpoint(path)
    _expect_container(ck, ("state_dict", "flat", "lipsyncctl"), "the evaluation SyncNet")
    # syncnet_python copies entries by name, so very old files without BatchNorm counters still load.
    return LoadPlan("SyncNet v2 (eval)", ck.path, SyncNetEval, ck.state_dict,
                    ignore_missing=("*.num_batches_tracked",))


def load_syncnet_eval(
    path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> SyncNetEval:
    """Load the syncnet_python evaluation network (``syncnet_v2.model``, a flat state dict)."""
    return plan_syncnet_eval(path).execute(device, dtype)


# --------------------------------------------------------------------------------------------------
# hyperIQA (the curate quality filter)

HYPERIQA_HINT = ("expected hyperIQA's koniq_pretrained.pkl (a flat HyperNet(16, 112, 224, 112, 56, 28, 14, 7) "
                 "state dict: res.* ResNet-50 + lda heads, conv1.*, fc*w_conv, fc*b_fc, fc5w_fc); "
                 "run `lipsyncctl models fetch hyperiqa`")


def plan_hyperiqa(path: PathLike) -> LoadPlan:
    from lipsyncctl.nets.hyperiqa import HyperNet, HyperNetConfig

    ck = read_checkpoint(path)
    _expect_container(ck, ("state_dict", "flat"), "a hyperIQA HyperNet state dict")
    # the official file carries no config: the koniq weights exist for this one architecture only
    return LoadPlan("hyperIQA HyperNet (koniq_pretrained.pkl layout)", ck.path, HyperNet, ck.state_dict,
                    hint=HYPERIQA_HINT, config=HyperNetConfig())


def load_hyperiqa(path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> HyperNet:
    """Load ``koniq_pretrained.pkl`` into :class:`~lipsyncctl.nets.hyperiqa.HyperNet` (eval mode: BatchNorm
    uses the stored statistics), strictly and weights-only. Score with
    :func:`~lipsyncctl.nets.hyperiqa.hyperiqa_score`.

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable, not weights-only, or any name/shape difference (the report names them).
    """
    return plan_hyperiqa(path).execute(device, dtype)


# --------------------------------------------------------------------------------------------------
# Generic entry points (models verify / convert)


def plan_for_role(role: str, path: PathLike, config: Any = None) -> LoadPlan:
    """The load plan for a registry file role (``unet``, ``whisper``, ``vae``, ``stable-syncnet``, ``syncnet-eval``,
    ``sfd-face``, ``hyperiqa``, ``vgg16``, ``lpips``, ``videomae``)."""
    if role == "unet":
        return plan_unet(config, path)
    if role == "whisper":
        return plan_whisper_encoder(path)
    if role == "vae":
        return plan_vae(path)
    if role == "stable-syncnet":
        return plan_stable_syncnet(config, path)
    if role == "syncnet-eval":
        return plan_syncnet_eval(path)
    if role == "sfd-face":
        from lipsyncctl.checkpoints.sfd import plan_sfd_face

        return plan_sfd_face(path)
    if role == "hyperiqa":
        return plan_hyperiqa(path)
    if role in ("vgg16", "lpips", "videomae"):  # the frozen networks of UNet training
        from lipsyncctl.checkpoints.aux_train import plan_aux

        return plan_aux(role, path, config)
    raise ValueError(f"no loader for role {role!r}")


def check_checkpoint(role: str, path: PathLike, config: Any = None) -> KeyReport:
    """Read ``path`` (memory-mapped) and compare it with the model for ``role``; no weights are built."""
    return plan_for_role(role, path, config).check()


def _header_config(ck: Checkpoint, kind: str, what: str, hint: str) -> Mapping[str, Any]:
    """The architecture config a lipsyncctl-written checkpoint of ``kind`` carries in its header.

    Raises:
        ConfigError: the file carries none (another kind, or not written by lipsyncctl); ``hint`` says
            which config to pass instead.
    """
    header = ck.lipsyncctl_header
    if header is None or header.get("kind") != kind or not isinstance(header.get("config"), Mapping):
        raise ArchConfigError(f"{ck.path}: no {what} config given and the file carries none", hint=hint)
    return header["config"]


def _expect_container(ck: Checkpoint, allowed: tuple[str, ...], what: str) -> None:
    if ck.container not in allowed:
        raise CheckpointError(
            f"{ck.path} holds a {ck.container!r} container, not {what}",
            hint="check the file with `lipsyncctl models info FILE`",
        )


def header_json(value: Any) -> Any:
    """A config object as plain JSON data (for converted-file headers)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value))
