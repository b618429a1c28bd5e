"""The networks of a sync run, loaded from the ``model:`` section of a run configuration.

:func:`load_networks` resolves the device and dtype, finds the files (registry name, path, or ``tiny``),
and loads the UNet, the whisper encoder and the VAE through the strict checkpoint loaders. Nothing is
downloaded: a missing file is a :class:`MissingModelError` saying how to fetch it. ``tiny`` generates
the seeded tiny files first (:mod:`lipsyncctl.checkpoints.tiny`) and then loads them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import progress
from lipsyncctl.runner.devices import resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch

    from lipsyncctl.config import Config, InferenceOptions, ModelOptions

@dataclass
class Networks:
    """Everything the denoising needs, on one device in one dtype.

    Attributes:
        unet: :class:`~lipsyncctl.nets.unet.UNet3DConditionModel` (eval).
        vae: diffusers ``AutoencoderKL`` (eval).
        whisper: :class:`~lipsyncctl.nets.whisper.WhisperFeatureEncoder` (eval).
        scheduler: a fresh DDIM scheduler with the official config.
        device, dtype: where the networks run.
        resolution: face crop size (256 or 512).
        is_tiny: some network is the tiny random one (``ModelOptions.tiny_roles``; output not lip-synced).
        files: the files loaded, by role (for the run record).
    """

    unet: Any
    vae: Any
    whisper: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype
    resolution: int
    is_tiny: bool = False
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFiles:
    unet: Path
    unet_config: str
    whisper: Path
    vae: Path
    is_tiny: bool


def resolve_files(model: ModelOptions) -> ModelFiles:
    """Paths of the three networks for ``model`` (registry names, paths, or ``tiny``). Never downloads."""
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.config import TINY

    tiny = None
    registry = None

    def find(name: str, role: str) -> Path:
        nonlocal registry, tiny
        if name == TINY:  # generated on first use (seeded: the same files every time)
            if tiny is None:
                from lipsyncctl.checkpoints.tiny import ensure_tiny_models

                with progress.Task("tiny models"):
                    tiny = ensure_tiny_models()
            return {"unet": tiny.unet, "whisper": tiny.whisper, "vae": tiny.vae}[role]
        registry = registry or load_registry()
        if name in registry.names():  # registry names may contain dots ("latentsync-1.5"): check them first
            return registry.resolve(name, role)
        p = Path(name).expanduser()
        if not p.exists():
            from lipsyncctl.errors import MissingModelError

            raise MissingModelError(
                f"model {name!r} is neither a known model nor an existing file",
                hint=f"known models: {', '.join(registry.names())} (`lipsyncctl models list`); or give a path",
            )
        return p

    unet_config = model.unet_config
    return ModelFiles(
        unet=find(model.checkpoint, "unet"),
        unet_config=unet_config,
        whisper=find(model.whisper, "whisper"),
        vae=find(model.vae, "vae"),
        is_tiny=bool(model.tiny_roles()),
    )


def load_networks(config: Config, files: ModelFiles | None = None) -> Networks:
    """Load the networks of ``config`` (sections ``model`` and ``inference``) onto the resolved device.

    ``files`` are the paths from :func:`resolve_files` when the caller already checked them (fail fast).
    """
    inf: InferenceOptions = config.inference
    device = resolve_device(inf.device)
    dtype = resolve_dtype(inf.dtype, device)
    files = files or resolve_files(config.model)
    with progress.Task("load models", total=3) as task:
        unet = _load_unet(files, device, dtype)
        task.advance()
        whisper = _load_whisper(files.whisper, device, dtype)
        task.advance()
        vae = _load_vae(files.vae, device, dtype)
        task.advance()
    from lipsyncctl.checkpoints.archs import load_scheduler_config
    from lipsyncctl.pipeline.denoise import make_scheduler

    return Networks(
        unet=unet,
        vae=vae,
        whisper=whisper,
        scheduler=make_scheduler(load_scheduler_config()),
        device=device,
        dtype=dtype,
        resolution=config.model.resolution,
        is_tiny=files.is_tiny,
        files={"unet": str(files.unet), "unet_config": files.unet_config, "whisper": str(files.whisper),
               "vae": str(files.vae)},
    )


def _load_unet(files: ModelFiles, device: torch.device, dtype: torch.dtype) -> Any:
    from lipsyncctl.checkpoints.loaders import load_unet

    return load_unet(files.unet_config, files.unet, device=device, dtype=dtype)


def _load_whisper(path: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from lipsyncctl.checkpoints.loaders import load_whisper_encoder

    return load_whisper_encoder(path, device=device, dtype=dtype)


def _load_vae(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from lipsyncctl.checkpoints.loaders import load_vae

    return load_vae(folder, device=device, dtype=dtype)  # scaling 0.18215, shift 0 (official)
