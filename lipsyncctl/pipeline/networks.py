"""The networks of a sync run, loaded from the ``model:`` section of a run configuration.

:func:`load_networks` resolves the device and dtype, finds the files (registry name, path, or ``tiny``),
and loads the UNet, the whisper encoder and the VAE through the strict checkpoint loaders. Nothing is
downloaded: a missing file is a :class:`MissingModelError` saying how to fetch it. ``tiny`` generates
the seeded tiny files first (:mod:`lipsyncctl.checkpoints.tiny`) and then loads them the same way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import paths, progress
from lipsyncctl.runner.devices import resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch

    from lipsyncctl.checkpoints.tiny import TinyModelPaths
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
        tuning: the GPU options :func:`tune_networks` applied (:func:`tuning_of`); empty: none.
        settings: the settings they were loaded with (:func:`loaded_settings`); empty: not known (made by hand).
        trained_mask: the mouth mask the UNet was trained with (its file's header; the official one otherwise): a
            run that renders with another is warned (:func:`mask_warning`).
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
    tuning: dict[str, bool] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    trained_mask: str = paths.OFFICIAL_MASK


#: the ``inference`` options that change the loaded networks themselves (:func:`tune_networks`), not a run
TUNING_OPTIONS = ("channels_last", "compile", "cuda_graphs")


#: ``model`` settings the render applies, not the networks: runs that differ only in them share loaded networks
RENDER_MODEL_KEYS = ("mask",)


def network_settings(config: Config, device: str | None = None) -> dict[str, Any]:
    """What decides the loaded networks, by dotted setting name: the model files, the device (``device``
    overrides the config's), the dtype and the GPU tuning (:data:`TUNING_OPTIONS`). Two runs with equal
    settings can share one :class:`Networks` (a worker's cache key, a pipeline's per-call check); not the
    :data:`RENDER_MODEL_KEYS`."""
    inf = config.inference
    model = {k: v for k, v in config.model.model_dump(mode="json").items() if k not in RENDER_MODEL_KEYS}
    return {"model": model, "inference.device": device or inf.device,
            "inference.dtype": inf.dtype, **{f"inference.{k}": bool(getattr(inf, k)) for k in TUNING_OPTIONS}}


def loaded_settings(config: Config) -> dict[str, Any]:
    """What of :func:`network_settings` a run given loaded networks must share with them (the model files, the
    resolution, the dtype; not the device, which a worker or a pipeline chooses): :func:`check_loaded`."""
    return {k: v for k, v in network_settings(config).items() if k in ("model", "inference.dtype")}


def same_dtype(networks: Networks, setting: str) -> bool:
    """Whether the ``inference.dtype`` ``setting`` resolves to ``networks``' dtype on their device (``auto`` and
    ``fp32`` are one on the CPU: settings are compared by what they load, not as written)."""
    from lipsyncctl.runner.devices import resolve_dtype

    return resolve_dtype(setting, networks.device) == networks.dtype


def check_loaded(networks: Networks, config: Config) -> None:
    """Networks passed to a run (a pipeline's, a batch's, a caller's) must be those ``config`` names: other ones
    would render with the wrong model while its record names ``config``'s, or fail at the first window.

    Raises:
        ConfigError: another model, resolution or dtype (the first few settings named); other GPU tuning
            (:func:`check_tuning`)."""
    if networks.settings:
        from lipsyncctl.config import dotted

        # (the dtype compared as it resolves: same_dtype)
        have, want = ({k: v for k, v in dotted(d).items() if k != "inference.dtype"}
                      for d in (networks.settings, loaded_settings(config)))
        differ = [f"{k} {have.get(k)!r} (this run: {want.get(k)!r})" for k in sorted(have.keys() | want.keys())
                  if have.get(k) != want.get(k)]
        if not same_dtype(networks, config.inference.dtype):
            from lipsyncctl.runner.devices import resolve_dtype

            dtype = resolve_dtype(config.inference.dtype, networks.device)
            differ.append(f"dtype {str(networks.dtype).removeprefix('torch.')} (this run: inference.dtype "
                          f"{config.inference.dtype!r}, {str(dtype).removeprefix('torch.')} here)")
        if differ:
            from lipsyncctl.errors import ConfigError

            raise ConfigError("the networks passed in were loaded with other settings: " + "; ".join(differ[:3])
                              + (f" and {len(differ) - 3} more" if len(differ) > 3 else ""),
                              hint="load them with this run's configuration (LipSyncPipeline.from_config(config)), "
                                   "or run with the configuration they were loaded with (pipe.config)")
    check_tuning(networks, config.inference)


def networks_key(config: Config) -> str:
    """The key of ``config``'s networks in a worker's cache (:func:`network_settings`, as text)."""
    import json

    return json.dumps(network_settings(config), sort_keys=True)


def cached_networks(cache: dict[str, Any], config: Config) -> Networks:
    """``config``'s networks from ``cache`` (a runner worker's, or a batch's), loaded on first use: a worker
    loads each set once, and a task asking for other files, device, dtype or tuning gets its own."""
    key = networks_key(config)
    if key not in cache:
        cache[key] = load_networks(config)
    return cache[key]


def tuning_of(inference: InferenceOptions) -> dict[str, bool]:
    """The options of :data:`TUNING_OPTIONS` that ``inference`` switches on (off ones are left out, so an
    untuned :class:`Networks` has ``{}``)."""
    return {k: True for k in TUNING_OPTIONS if getattr(inference, k)}


def check_tuning(networks: Networks, inference: InferenceOptions) -> None:
    """Networks loaded elsewhere (a batch, a worker) must have been tuned as ``inference`` asks: the options
    change how (``cuda_graphs``, ``compile``) or even what (``channels_last``: other kernels, other low bits)
    the networks compute, and cannot be switched on or off per run.

    Raises:
        ConfigError: they differ (both sides named)."""
    want, have = tuning_of(inference), networks.tuning
    if want != have:
        from lipsyncctl.errors import ConfigError

        def words(t: dict[str, bool]) -> str:
            return ", ".join(f"inference.{k}" for k in t) or "none of " + "/".join(TUNING_OPTIONS)

        raise ConfigError(f"the networks passed in were loaded with {words(have)}, this run asks for {words(want)}",
                          hint="load them with this run's configuration (LipSyncPipeline.from_config(config)), "
                               "or run with the options they were loaded with")


@dataclass(frozen=True)
class ModelFiles:
    unet: Path
    unet_config: str
    whisper: Path
    vae: Path
    is_tiny: bool


def resolve_files(model: ModelOptions) -> ModelFiles:
    """Paths of the three networks for ``model`` (registry names, paths, or ``tiny``); the mouth mask is checked
    too (exit 4 before any work, as a missing network). Never downloads."""
    from lipsyncctl.config import TINY
    from lipsyncctl.faces.mask import mouth_mask_u8

    mouth_mask_u8(model.resolution, model.mask)  # there and readable
    tiny = _tiny_models() if TINY in (model.checkpoint, model.whisper, model.vae) else None  # once for all
    return ModelFiles(
        unet=resolve_model_file(model.checkpoint, "unet", tiny),
        unet_config=model.unet_config,
        whisper=resolve_model_file(model.whisper, "whisper", tiny),
        vae=resolve_model_file(model.vae, "vae", tiny),
        is_tiny=bool(model.tiny_roles()),
    )


def resolve_model_file(name: str, role: str, tiny: TinyModelPaths | None = None) -> Path:
    """The file (the folder for a diffusers VAE) of network ``role`` (``unet``, ``whisper``, ``vae``) named
    ``name`` in a ``model:`` section: a registry name, a path, or ``tiny`` (the seeded tiny files, generated
    on first use; ``tiny``: their paths when the caller has them already). Never downloads.

    Raises:
        MissingModelError: not installed (the hint names ``lipsyncctl models fetch``), or no such model/file.
    """
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.config import TINY

    if name == TINY:
        tiny = tiny or _tiny_models()
        return {"unet": tiny.unet, "whisper": tiny.whisper, "vae": tiny.vae}[role]
    registry = load_registry()
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


def _tiny_models() -> TinyModelPaths:
    """The tiny files, generated on first use (seeded: the same files every time)."""
    from lipsyncctl.checkpoints import tiny

    # a task only when they are made (a timeline's shots and languages each ask)
    with contextlib.nullcontext() if tiny.tiny_models_current() else progress.Task("tiny models"):
        return tiny.ensure_tiny_models()


def _check_audio_width(unet: Any, whisper: Any, files: Any) -> None:
    """The UNet's audio cross-attention reads whisper features of its ``cross_attention_dim``: another whisper
    (a whisper base for tiny) failed at the first window with a shape error, after the face pass.

    Raises:
        CheckpointError: naming both files and widths.
    """
    from lipsyncctl.errors import CheckpointError

    want, got = int(unet.config.cross_attention_dim), int(whisper.d_model)
    if want != got:
        raise CheckpointError(f"{files.whisper}: whisper features of width {got}, the UNet {files.unet} reads "
                              f"{want} (LatentSync's is whisper tiny: 384)",
                              hint="use the whisper of the UNet's repo (model.whisper), e.g. whisper/tiny.pt")


def load_networks(config: Config, files: ModelFiles | None = None) -> Networks:
    """Load the networks of ``config`` (sections ``model`` and ``inference``) onto the resolved device.

    ``files`` are the paths from :func:`resolve_files` when the caller already checked them (fail fast).
    """
    inf: InferenceOptions = config.inference
    device = resolve_device(inf.device)
    dtype = resolve_dtype(inf.dtype, device)
    files = files or resolve_files(config.model)
    with progress.Task("load models", total=3) as task:
        unet, unet_config, trained_mask = _load_unet(files, device, dtype)
        task.advance()
        whisper = _load_whisper(files.whisper, device, dtype)
        _check_audio_width(unet, whisper, files)
        task.advance()
        vae = _load_vae(files.vae, device, dtype)
        task.advance()
    from lipsyncctl.checkpoints.archs import load_scheduler_config
    from lipsyncctl.pipeline.denoise import make_scheduler

    return tune_networks(Networks(
        unet=unet,
        vae=vae,
        whisper=whisper,
        scheduler=make_scheduler(load_scheduler_config()),
        device=device,
        dtype=dtype,
        resolution=config.model.resolution,
        is_tiny=files.is_tiny,
        files={"unet": str(files.unet), "unet_config": unet_config, "whisper": str(files.whisper),
               "vae": str(files.vae)},
        settings=loaded_settings(config),
        trained_mask=trained_mask,
    ), inf)


def tune_networks(networks: Networks, inference: InferenceOptions) -> Networks:
    """The GPU options of ``inference`` applied to loaded networks, in place (returns ``networks``):
    ``channels_last`` puts the 4-D convolution weights of the UNet (its "inflated" 3-D convolutions run as 2-D
    ones on every frame) and of the VAE in ``channels_last`` (the convolutions then pick NHWC kernels; inputs
    keep their layout, torch converts), ``compile`` wraps the UNet
    and the VAE's encoder and decoder in ``torch.compile`` (``Module.compile``: the objects stay the same),
    ``cuda_graphs`` replays the UNet's denoising call from a CUDA graph (:mod:`lipsyncctl.nets.graphs`; with
    ``compile``, the UNet's compilation in ``reduce-overhead`` mode does it instead). All off (default):
    nothing changes.

    Raises:
        MissingToolError: ``compile`` without what torch.compile builds with on this device (Triton on a GPU,
            a C++ compiler on the CPU), or ``cuda_graphs`` off CUDA; said when the networks load instead of
            failing inside the first window."""
    import torch

    _check_tools(inference, networks.device)
    if inference.channels_last:
        networks.unet.to(memory_format=torch.channels_last)
        networks.vae.to(memory_format=torch.channels_last)
    if inference.compile:
        networks.unet.compile(mode="reduce-overhead" if inference.cuda_graphs else None)
        networks.vae.encoder.compile()
        networks.vae.decoder.compile()
    elif inference.cuda_graphs:
        from lipsyncctl.nets.graphs import enable_cuda_graphs

        enable_cuda_graphs(networks.unet)
    networks.tuning = tuning_of(inference)
    return networks


def check_inference(inference: InferenceOptions) -> None:
    """What loading the networks would refuse, checked before any work (a run then fails in a second, not after
    minutes of face tracking): the device and dtype (:func:`resolve_dtype`), and the tools ``compile`` and
    ``cuda_graphs`` need on that device.

    Raises:
        DeviceError / ConfigError: see :func:`resolve_device` and :func:`resolve_dtype`. MissingToolError: see
        :func:`tune_networks`."""
    device = resolve_device(inference.device)
    resolve_dtype(inference.dtype, device)
    _check_tools(inference, device)


def _check_tools(inference: InferenceOptions, device: torch.device) -> None:
    if inference.compile:
        _check_compiler(device)
    if inference.cuda_graphs and device.type != "cuda":
        from lipsyncctl.errors import MissingToolError

        raise MissingToolError(f"inference.cuda_graphs needs a CUDA GPU (the networks run on {device})",
                               hint="run without --set inference.cuda_graphs=true")


def _check_compiler(device: torch.device) -> None:
    import importlib.util
    import os
    import shutil

    from lipsyncctl.errors import MissingToolError

    hint = "install it, or run without --set inference.compile=true"
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise MissingToolError("inference.compile on a GPU needs Triton (pip install triton)", hint=hint)
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        raise MissingToolError("inference.compile on the CPU needs a C++ compiler (g++ or clang++)", hint=hint)


def _load_unet(files: ModelFiles, device: torch.device, dtype: torch.dtype) -> tuple[Any, str, str]:
    """The UNet of ``files``, the name of its architecture and the mouth mask it was trained with (its header's; the
    official one otherwise); a file that states its own architecture (``train``'s export) is built as it says,
    whatever ``model.unet_config`` is (said when they differ)."""
    from lipsyncctl.checkpoints.loaders import plan_unet, resolve_unet_config

    plan = plan_unet(files.unet_config, files.unet)  # the file read once
    trained = plan.header.get("mask") or paths.OFFICIAL_MASK
    unet = plan.execute(device, dtype)
    if plan.config == resolve_unet_config(files.unet_config)[0]:
        return unet, files.unet_config, trained
    name = plan.config_name or "from the file's header"
    progress.message(f"UNet: {files.unet} states its own architecture ({name}), not model.unet_config "
                     f"{files.unet_config}: built as the file says")
    return unet, name, trained


def mask_warning(networks: Networks, mask: str) -> str | None:
    """The warning of a run rendering with the mouth mask ``mask`` through a UNet trained with another (each run:
    networks loaded once serve runs of other masks), else None."""
    if networks.trained_mask == mask:
        return None
    return (f"{networks.files.get('unet', 'the UNet')} was trained with the mouth mask {networks.trained_mask}; "
            f"this render uses {mask} (--set model.mask={networks.trained_mask})")


def _load_whisper(path: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from lipsyncctl.checkpoints.loaders import load_whisper_encoder

    return load_whisper_encoder(path, device=device, dtype=dtype)


def _load_vae(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from lipsyncctl.checkpoints.loaders import load_vae

    return load_vae(folder, device=device, dtype=dtype)  # scaling 0.18215, shift 0 (official)
