"""The networks of a training run: the one trained (UNet or StableSyncNet) and the frozen helpers.

Start weights (``model.init``, separate from ``--resume``, which restores a whole training state):

- ``official``: the released UNet of the run's resolution (``latentsync-1.5`` at 256, ``latentsync-1.6`` at
  512), strictly; for a SyncNet run, ``stable-syncnet``;
- ``none``: the architecture's own initialisation, drawn under the run's seed (reproducible);
- ``PATH``: any file the strict loaders read (official ``{"state_dict"}`` layout or our safetensors), strictly;
  a missing file is bad input (exit 5), a bare name that is not a file a registry model (exit 4 if not installed);
- ``stage1:PATH``: stage-1 weights into a stage-2 UNet: the motion modules are missing there and start
  fresh (their output projection is zero, so the first forward equals the stage-1 model's); any other
  difference is an error. The tolerated mismatches are reported (:attr:`TrainNetworks.init_report`).
- ``tiny``: the seeded tiny files (tests, demos).

Frozen helpers load only for the loss terms that have a weight: a weighted term whose weights are not
installed is a :class:`~lipsyncctl.errors.MissingModelError` (exit 4) naming the ``--set`` that disables it.
:func:`needed_files` lists every file a run loads and :func:`resolve_needed` finds one (``train`` checks them all
before any work; ``doctor --preset TRAIN_PRESET`` reports them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import CheckpointError, ConfigError, LipsyncError, MediaError, MissingModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lipsyncctl.training.config import TrainConfig

TINY = "tiny"
#: the released UNet per resolution (``model.init: official``)
OFFICIAL_UNET = {256: "latentsync-1.5", 512: "latentsync-1.6"}


@dataclass
class TrainNetworks:
    model: nn.Module                       # the trained network (train mode, fp32 master weights)
    vae: Any = None                        # frozen diffusers AutoencoderKL (UNet runs)
    aux: dict[str, nn.Module] = field(default_factory=dict)  # frozen: lpips, syncnet, videomae
    init_report: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    arch: Any = None                       # UNetConfig or StableSyncNetConfig of the trained network
    arch_name: str = ""
    sync_view: tuple[bool, int] | None = None  # the sync-loss SyncNet's input (lower half, size), its config's
    #                                             (None: the official one, losses.SYNC_VIEW)


def resolve_file(name: str, role: str) -> Path:
    """A registry name or a path (never downloads; a missing one is a MissingModelError with the fetch hint)."""
    from lipsyncctl.pipeline.networks import resolve_model_file

    return resolve_model_file(name, role) if name != TINY else _tiny_file(role)


@dataclass(frozen=True)
class NeededFile:
    """One file a training run loads: ``key`` (``init``, ``vae``, ``vgg``, ``lpips``, ``syncnet``, ``videomae``),
    ``name`` as the config gives it (a registry name, a path or ``tiny``), the loader's ``role``, the loss
    ``term`` that needs it (its ``--set loss.TERM=0`` drops it; None: the run itself) and ``given``: a
    ``--init PATH`` (``stage1:PATH``) value, a path first."""

    key: str
    name: str
    role: str
    term: str | None = None
    given: bool = False


def needed_files(cfg: TrainConfig) -> list[NeededFile]:
    """Every file :func:`load_train_networks` loads for ``cfg``, in load order (what ``doctor`` checks)."""
    init, files = cfg.model.init, []
    role = "stable-syncnet" if cfg.kind == "syncnet" else "unet"
    if init == "official":
        files.append(NeededFile("init", cfg.model.syncnet if cfg.kind == "syncnet" else
                                OFFICIAL_UNET[cfg.model.resolution], role))
    elif init == TINY:
        files.append(NeededFile("init", TINY, role))
    elif init != "none":
        files.append(NeededFile("init", init.removeprefix("stage1:").removeprefix("sd15:"), role, given=True))
    if cfg.kind == "syncnet":
        if cfg.data.latent_space:  # official: the frozen sd-vae-ft-mse encodes the frames
            files.append(NeededFile("vae", cfg.model.vae, "vae"))
        return files
    files.append(NeededFile("vae", cfg.model.vae, "vae"))
    if cfg.pixel_supervision and cfg.loss.lpips:
        files += [NeededFile("vgg", cfg.model.vgg, "vgg16", "lpips"), NeededFile("lpips", cfg.model.lpips, "lpips", "lpips")]
    if cfg.pixel_supervision and cfg.loss.sync:
        files.append(NeededFile("syncnet", cfg.model.syncnet, "stable-syncnet", "sync"))
    if cfg.pixel_supervision and cfg.loss.trepa:
        files.append(NeededFile("videomae", cfg.model.videomae, "videomae", "trepa"))
    return files


def resolve_needed(need: NeededFile) -> Path:
    """The file of ``need`` (``tiny``: generated on first use). Never downloads.

    Raises:
        MediaError: a ``--init`` path (with a folder or an extension) that is not there (exit 5, like every
            missing input).
        MissingModelError: a model not installed (the hint names ``lipsyncctl models fetch``; for a loss
            network also the ``--set`` that disables its term).
    """
    if need.given:
        return init_file(need.name, need.role)
    if need.term is not None:
        return _need(need.name, need.role, need.term)
    return resolve_file(need.name, need.role)


def resolve_files(cfg: TrainConfig) -> dict[str, Path]:
    """``{key: file}`` of :func:`needed_files` (see :func:`resolve_needed`); a UNet run's mouth mask is checked too.

    Raises:
        MediaError: at the first ``--init`` path that is not there.
        MissingModelError: naming every model not installed, in one error (one rerun each before)."""
    if cfg.kind == "unet":
        from lipsyncctl.faces.mask import mouth_mask_u8

        mouth_mask_u8(cfg.model.resolution, cfg.data.mask)  # there and readable
    found: dict[str, Path] = {}
    missing: list[tuple[NeededFile, MissingModelError]] = []
    for need in needed_files(cfg):
        try:
            found[need.key] = resolve_needed(need)
        except MissingModelError as exc:
            missing.append((need, exc))
    if len(missing) == 1:
        raise missing[0][1]
    if missing:
        from lipsyncctl.checkpoints.registry import load_registry

        names = [f"{n.name} ({'loss.' + n.term if n.term else n.key})" for n, _ in missing]
        raise MissingModelError(f"{len(missing)} models the run needs are not installed: {', '.join(names)}",
                                hint=missing_hint(missing, set(load_registry().names())))
    return found


def missing_hint(missing: Sequence[tuple[NeededFile, LipsyncError]], known: set[str]) -> str:
    """What to do about the files of ``missing`` (each with its error): one ``models fetch`` line for the registry
    models (``known``: the registry's names), the ``--set loss.TERM=0`` that drops a loss term's, a path's own hint
    (``train`` and ``doctor --preset`` say the same)."""
    hints, fetch, terms = [], [], {}
    for need, exc in missing:
        if need.given or need.name not in known:  # a path or an unknown name: its own hint (check the path...)
            hints.append(f"{'--init' if need.given else need.key} {need.name}: {exc.hint}")
            continue
        fetch.append(need.name)
        if need.term:
            terms.setdefault(need.term, []).append(need.name)
    if fetch:
        hints[:0] = [f"run `lipsyncctl models fetch {' '.join(dict.fromkeys(fetch))}` on a machine that is online",
                     *(f"or --set loss.{term}=0 (drops {', '.join(names)})" for term, names in terms.items())]
    return "; ".join(dict.fromkeys(hints))


def init_file(name: str, role: str) -> Path:
    """The file of ``--init PATH`` (``stage1:`` removed): an existing path, else a registry name.

    Raises:
        MediaError: ``name`` names a file (a folder in it, or an extension) that is not there: a typo.
        MissingModelError: a bare name that is no file and no installed model."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    try:
        return resolve_file(name, role)
    except MissingModelError as e:
        if _names_a_file(name):
            raise MediaError(f"--init {name}: file not found", hint="check the path") from None
        raise MissingModelError(f"--init {name}: {e.message}", hint=e.hint) from None


def _names_a_file(name: str) -> bool:
    """``runs/s1/unet.pt``, ``~/w.safetensors``, ``nosuch.pt``: a path, not a registry name (whose dots, as in
    ``latentsync-1.5``, are no extension)."""
    from lipsyncctl.checkpoints.registry import load_registry

    if name in load_registry().names():
        return False
    path = Path(name)
    return len(path.parts) > 1 or name.startswith(("~", ".")) or bool(path.suffix)


def _tiny_file(role: str) -> Path:
    from lipsyncctl.checkpoints import tiny

    if role in ("unet", "vae", "whisper"):
        paths = tiny.ensure_tiny_models()
        return {"unet": paths.unet, "vae": paths.vae, "whisper": paths.whisper}[role]
    if role == "stable-syncnet":
        from lipsyncctl.checkpoints.tiny_train import ensure_tiny_stable_syncnet

        return ensure_tiny_stable_syncnet()
    from lipsyncctl.checkpoints.aux_train import ensure_tiny_aux

    return Path(ensure_tiny_aux()[role])


def build_unet(cfg: TrainConfig, seed: int) -> tuple[nn.Module, Any, list[str], str]:
    """The UNet with its start weights: ``(model, UNetConfig, report lines, source)``."""
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.io import read_checkpoint
    from lipsyncctl.checkpoints.keys import compare_state_dict
    from lipsyncctl.nets.unet import UNet3DConditionModel

    arch = archs.load_unet_config(cfg.model.unet_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the architecture's own initialisation, reproducible (local RNG fork)
        model = UNet3DConditionModel(arch)
    init = cfg.model.init
    if init == "none":
        return model, arch, ["init: none (random, seeded)"], "none"
    path = resolve_needed(needed_files(cfg)[0])
    ck = read_checkpoint(path)
    if init.startswith("sd15:"):
        return model, arch, _load_image_unet(model, ck.state_dict, path), str(path)
    tolerate = ("*motion_modules.*",) if init.startswith("stage1:") else ()
    weights, dropped = dict(ck.state_dict), []
    if not arch.use_motion_module:  # stage 1 from a stage-2 file (official): its motion modules are unused
        dropped = [k for k in weights if "motion_modules." in k]
        for k in dropped:
            del weights[k]
    report = compare_state_dict(model.state_dict(), weights, ignore_missing=tolerate)
    if not report.ok:
        raise CheckpointError(f"{path}: does not fit UNet {cfg.model.unet_config}: {report.summary()}",
                              hint="check model.unet_config, or use stage1:PATH to start stage 2 from stage 1")
    missing = sorted(set(model.state_dict()) - set(weights))
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=not tolerate)
    lines = [f"init: {path} ({len(weights)} tensors)"]
    if dropped:
        lines.append(f"init: {len(dropped)} motion-module tensors of the file are not part of this stage-1 UNet")
    if missing:
        n = sum(model.state_dict()[k].numel() for k in missing)
        lines.append(f"init: {len(missing)} tensors ({n:,} values) not in the file start fresh: the motion "
                     "modules (zero output projection, so the first forward equals the stage-1 model's)")
    return model, arch, lines, str(path)


def _name_header_config(exc: CheckpointError, path: Path, given: str) -> None:
    """A StableSyncNet file that does not fit ``model.syncnet_config``: where the file's header names the config it
    was exported with (a SyncNet run's export), the hint says to set that one (it was a list of mismatched tensors and
    the official configs)."""
    from lipsyncctl.checkpoints.io import read_checkpoint

    try:
        header = read_checkpoint(path).lipsyncctl_header or {}
    except LipsyncError:
        return
    if (named := header.get("config_name")) and str(named) != str(given):
        exc.hint = f"its header names the config it was trained with: --set model.syncnet_config={named}"


def check_input_channels(cfg: TrainConfig) -> None:
    """The run's frames fit its networks: the UNet's motion modules, the StableSyncNet it trains (kind syncnet) or
    scores with (the sync loss).

    Raises:
        ConfigError: ``data.latent_space`` on a UNet run, or the architecture's visual ``in_channels`` differ
            from what the run feeds (e.g. ``syncnet_25_pixel`` with 16 frames), naming the keys to change."""
    from lipsyncctl.checkpoints import archs

    if cfg.data.latent_space and cfg.kind != "syncnet":
        raise ConfigError("data.latent_space is for SyncNet runs (kind syncnet) only",
                          hint="drop --set data.latent_space=true, or train a SyncNet preset such as "
                          "syncnet_16_latent")
    if cfg.kind == "unet":  # (more frames than the motion modules' position encoding: an internal error mid-step)
        limit = archs.load_unet_config(cfg.model.unet_config).num_frames_max
        if limit is not None and cfg.data.num_frames > limit:
            raise ConfigError(f"data.num_frames {cfg.data.num_frames}: UNet {cfg.model.unet_config}'s motion modules "
                              f"take at most {limit} frames", hint=f"--set data.num_frames={min(16, limit)} (official: "
                              "16)")
    if cfg.kind == "unet" and not (cfg.pixel_supervision and cfg.loss.sync):
        return
    if cfg.kind == "syncnet":  # (a UNet's sync loss resizes its frames to the SyncNet's view, as the official does)
        size = archs.syncnet_input_view(cfg.model.syncnet_config)[1]
        if cfg.model.resolution != size:  # (smaller faces run out of pixels in its downsampling: a crash mid-step)
            raise ConfigError(f"model.resolution {cfg.model.resolution}: StableSyncNet {cfg.model.syncnet_config} "
                              f"takes {size} px faces", hint=f"--set model.resolution={size}, or a SyncNet config "
                              f"made for {cfg.model.resolution} px (its data.resolution)")
    frames = cfg.data.num_frames
    want = (4 if cfg.data.latent_space else 3) * frames
    have = archs.load_syncnet_config(cfg.model.syncnet_config).visual_encoder.in_channels
    if have != want:
        what = "latent" if cfg.data.latent_space else "pixel"
        raise ConfigError(f"StableSyncNet {cfg.model.syncnet_config} takes {have} visual channels, the run feeds "
                          f"{want} ({frames} {what} frames x {want // frames})",
                          hint="match data.num_frames and data.latent_space to model.syncnet_config (presets "
                          "syncnet_16_pixel_attn, syncnet_16_pixel, syncnet_16_latent, syncnet_25_pixel)")


def _load_image_unet(model: nn.Module, weights: Mapping[str, Any], path: Path) -> list[str]:
    """Load a Stable Diffusion 1.5 image UNet (diffusers names, its own ``state_dict`` file or folder) into ``model``
    as the official loader does for the paper's stage 1: ``conv_in`` (4 latent channels, here 13), ``conv_out`` and
    every ``attn2.to_k/to_v`` (768-d text, here 384-d audio) whose shape does not fit keep their fresh values; what
    the file lacks (motion modules) starts fresh; any other shape that does not fit is an error. Returns the report
    lines."""
    own = model.state_dict()

    def fits(k: str) -> bool:
        return k in weights and k in own and tuple(weights[k].shape) == tuple(own[k].shape)

    # official: conv_in.* (and conv_out.*) deleted as a whole when its weight does not fit, each attn2 to_k/to_v
    dropped_units = tuple(f"{unit}." for unit in ("conv_in", "conv_out") if not fits(f"{unit}.weight"))
    fresh, kept, unused = [], {}, []
    for k, v in weights.items():
        if k not in own:
            unused.append(k)
        elif k.startswith(dropped_units) or ((".attn2.to_k." in k or ".attn2.to_v." in k) and not fits(k)):
            fresh.append(k)  # deleted before load_state_dict(strict=False)
        elif fits(k):
            kept[k] = v
        else:
            raise CheckpointError(f"{path}: {k} is {tuple(v.shape)}, this UNet's is {tuple(own[k].shape)} (an image "
                                  "UNet of another size)",
                                  hint="sd15:PATH takes the unet of Stable Diffusion 1.5 (diffusers), as the paper's "
                                       "stage 1")
    if not kept:
        raise CheckpointError(f"{path}: no tensor of it fits this UNet (not a Stable Diffusion UNet?)",
                              hint="sd15:PATH takes the unet folder or file of Stable Diffusion 1.5 (diffusers)")
    model.load_state_dict({k: v.float() for k, v in kept.items()}, strict=False)
    missing = [k for k in own if k not in kept]
    lines = [f"init: {path} as a Stable Diffusion image UNet ({len(kept)} tensors loaded)"]
    if fresh:
        lines.append(f"init: {len(fresh)} tensors of other shapes start fresh, as the official loader leaves them: "
                     "conv_in (13 input channels), attn2 to_k/to_v (384-d audio instead of 768-d text)")
    others = len(missing) - len(fresh)
    if others:
        lines.append(f"init: {others} tensors not in the file start fresh (motion modules, zero output projection)")
    if unused:
        lines.append(f"init: {len(unused)} tensors of the file are not part of this UNet (left out)")
    return lines


def build_syncnet(cfg: TrainConfig, seed: int) -> tuple[nn.Module, Any, list[str], str]:
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.loaders import load_stable_syncnet
    from lipsyncctl.nets.syncnet import StableSyncNet

    arch = archs.load_syncnet_config(cfg.model.syncnet_config)
    if cfg.model.init == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return StableSyncNet(arch), arch, ["init: none (random, seeded)"], "none"
    path = resolve_needed(needed_files(cfg)[0])
    model = load_stable_syncnet(arch, path)
    for p in model.parameters():
        p.data = p.data.float()
    return model, arch, [f"init: {path}"], str(path)


def enable_gradient_checkpointing(nets: TrainNetworks, cfg: TrainConfig) -> None:
    """``run.grad_checkpointing``: recompute activations in the backward pass of the trained network (UNet
    blocks, or both StableSyncNet towers) and of the frozen networks gradients flow through (the VAE decoder
    of the one-step x0, the sync-loss StableSyncNet, TREPA's VideoMAE: official ``with_cp``)."""
    if not cfg.run.grad_checkpointing:
        return
    nets.model.enable_gradient_checkpointing()
    if cfg.kind != "unet":
        return
    if nets.vae is not None and cfg.pixel_supervision:
        nets.vae.enable_gradient_checkpointing()
    if "syncnet" in nets.aux:
        nets.aux["syncnet"].enable_gradient_checkpointing()
    if "videomae" in nets.aux:
        nets.aux["videomae"].gradient_checkpointing = True


def freeze(module: nn.Module, device: torch.device | str | None, dtype: torch.dtype) -> nn.Module:
    """``module`` on ``device`` in ``dtype``, in eval mode, without gradients (a frozen network of the run).

    The cast is torch's ``Module.to``: diffusers' ``ModelMixin.to`` warns "modules that should be kept in float32:
    []" on every dtype cast (its check is true for an empty list), a false alarm in every run's log; none of these
    networks keeps a module in float32."""
    from torch import nn

    module = nn.Module.to(module, device=device, dtype=dtype).eval()
    module.requires_grad_(False)
    return module


def _need(name: str, role: str, term: str) -> Path:
    try:
        return resolve_file(name, role)
    except MissingModelError as e:
        raise MissingModelError(
            f"loss.{term} has a weight but its network is not installed: {e.message}",
            hint=f"{e.hint or 'fetch it with `lipsyncctl models fetch`'}; or disable the term with "
                 f"--set loss.{term}=0",
        ) from None


def load_train_networks(cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> TrainNetworks:
    """Build the trained network (fp32, on ``device``) and load the frozen ones the loss terms need
    (in ``weight_dtype``, official: fp16 on the GPU; LPIPS in float32, as the official)."""
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.loaders import load_stable_syncnet, load_vae

    seed = cfg.run.seed
    check_input_channels(cfg)
    found = resolve_files(cfg)  # every file first: a missing one stops the run before anything loads
    if cfg.kind == "syncnet":
        model, arch, report, source = build_syncnet(cfg, seed)
        files, vae = {"init": source}, None
        if cfg.data.latent_space:  # official: the frozen sd-vae-ft-mse in fp16 encodes the frames
            files["vae"] = str(found["vae"])
            vae = freeze(load_vae(found["vae"]), device, weight_dtype)
        return TrainNetworks(model.to(device).train(), vae=vae, init_report=report, files=files, arch=arch,
                             arch_name=cfg.model.syncnet_config)
    model, arch, report, source = build_unet(cfg, seed)

    files = {"init": source, **{k: str(v) for k, v in found.items() if k != "init"}}
    vae = freeze(load_vae(found["vae"]), device, weight_dtype)
    aux: dict[str, nn.Module] = {}
    if "lpips" in found:
        from lipsyncctl.checkpoints.aux_train import load_lpips

        # float32 whatever the run's precision (official: never cast; computed outside autocast)
        aux["lpips"] = freeze(load_lpips(found["vgg"], found["lpips"]), device, torch.float32)
    sync_view = None
    if "syncnet" in found:
        try:
            syncnet = load_stable_syncnet(archs.load_syncnet_config(cfg.model.syncnet_config), found["syncnet"])
        except CheckpointError as exc:
            _name_header_config(exc, found["syncnet"], cfg.model.syncnet_config)
            raise
        aux["syncnet"] = freeze(syncnet, device, weight_dtype)
        sync_view = archs.syncnet_input_view(cfg.model.syncnet_config)
    if "videomae" in found:
        from lipsyncctl.checkpoints.aux_train import load_videomae

        aux["videomae"] = freeze(load_videomae(found["videomae"], cfg.model.videomae_config), device, weight_dtype)
    return TrainNetworks(model.to(device).train(), vae=vae, aux=aux, init_report=report, files=files,
                         arch=arch, arch_name=cfg.model.unet_config, sync_view=sync_view)
