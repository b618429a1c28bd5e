"""The frozen auxiliary networks of UNet training: LPIPS-VGG and TREPA's VideoMAE-v2 (LATENTSYNC.md §3.1).

Three official files, each read unchanged (weights-only, memory-mapped where the format allows) and
loaded strictly:

==========================  ===================================================  ==========================
file (registry name, role)  container                                            loader
==========================  ===================================================  ==========================
``vgg16-397923af.pth``      torchvision's flat state dict: ``features.N.*`` and  :func:`load_vgg16_features`
(``vgg16-imagenet``,        ``classifier.{0,3,6}.*``; the classifier is          (and :func:`load_lpips`)
``vgg16``)                  discarded, as lpips does
``vgg.pth`` (lpips v0.1)    flat, exactly ``lin0..lin4.model.1.weight``          :func:`load_lpips`
(``lpips-vgg``, ``lpips``)  (a legacy pickle saved from CUDA; read on the CPU)
``vit_g_hybrid_pt_1200e_    the ViT's state dict, flat or under ``"model"`` /    :func:`load_videomae`
ssv2_ft.pth``               ``"module"`` (TREPA tries those two keys); the
(``videomae-v2-g``,         position table is not in it
``videomae``)
==========================  ===================================================  ==========================

Every loader returns an eval-mode module whose parameters have ``requires_grad=False``.

The ``tiny`` training preset gets seeded random stand-ins in the same formats (:func:`ensure_tiny_aux`,
``<models dir>/tiny-aux/``): a VGG16 trunk of widths 8-16-32-32-32 with a small classifier, its five lin
heads (non-negative, as LPIPS' learned ones), and the golden vectors' tiny VideoMAE (embed 32, depth 2,
2 heads; 70 244 parameters) under ``{"module": ...}``. **Their losses mean nothing.**
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import paths
from lipsyncctl.checkpoints.io import read_checkpoint, sniff_format, torch_load, unwrap
from lipsyncctl.checkpoints.keys import check_state_dict
from lipsyncctl.checkpoints.loaders import LoadPlan
from lipsyncctl.checkpoints.materialize import build_empty, load_into
from lipsyncctl.errors import ArchConfigError, CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lipsyncctl.nets.lpips import LPIPS
    from lipsyncctl.nets.vgg import VGG16Features
    from lipsyncctl.nets.videomae import VideoMAEConfig, VisionTransformer

PathLike = str | os.PathLike[str]

#: registry roles of the three files (``models/registry.yaml``)
ROLE_VGG16, ROLE_LPIPS, ROLE_VIDEOMAE = "vgg16", "lpips", "videomae"
#: the keys TREPA's ``load_videomae_model`` unwraps, in its order
VIDEOMAE_WRAPPERS = ("model", "module")
#: named VideoMAE architectures (``model.videomae_config`` of a training preset)
VIDEOMAE_CONFIGS: dict[str, dict[str, Any]] = {
    "giant": {},  # vit_giant_patch14_224(num_classes=174, all_frames=16, tubelet_size=2)
    "tiny": {"embed_dim": 32, "depth": 2, "num_heads": 2},  # golden/train/train_step.json videomae_tiny
}

VGG_HINT = ("expected torchvision's vgg16-397923af.pth (a flat state dict: features.N.weight/bias at N = 0, 2, 5, "
            "7, 10, 12, 14, 17, 19, 21, 24, 26, 28, plus classifier.*); run `lipsyncctl models fetch vgg16-imagenet`")
LPIPS_HINT = ("expected lpips v0.1 weights/v0.1/vgg.pth (exactly lin0..lin4.model.1.weight, shapes (1, C, 1, 1) "
              "for the VGG widths); run `lipsyncctl models fetch lpips-vgg`")
VIDEOMAE_HINT = ("expected VideoMAE-v2 vit_g_hybrid_pt_1200e_ssv2_ft.pth (ViT-g/14: patch_embed.proj, blocks.0-39 "
                 "with attn.q_bias/v_bias, fc_norm, head to 174 classes), flat or under 'model'/'module'; "
                 "run `lipsyncctl models fetch videomae-v2-g`, or pass the matching config ('tiny')")

TINY_AUX_VERSION = 1
TINY_AUX_SEED = 20250624
TINY_AUX_DIR = "tiny-aux"
TINY_VGG_WIDTHS = (8, 16, 32, 32, 32)
_TINY_CLASSIFIER = (16, 10)  # hidden width, classes of the stand-in classifier (discarded when loading)
#: role -> file name under ``<models dir>/tiny-aux/``
TINY_FILES = {ROLE_VGG16: "vgg16.pth", ROLE_LPIPS: "vgg.pth", ROLE_VIDEOMAE: "videomae_tiny.pth"}
TINY_NOTE = ("tiny preset: VGG16, LPIPS heads and VideoMAE have seeded RANDOM weights; the LPIPS and TREPA "
             "losses MEAN NOTHING (install vgg16-imagenet, lpips-vgg and videomae-v2-g for real ones)")


def videomae_config(config: VideoMAEConfig | Mapping[str, Any] | str | None = None) -> VideoMAEConfig:
    """A :class:`~lipsyncctl.nets.videomae.VideoMAEConfig` from an object, a mapping of its fields, a name
    (``giant``: TREPA's ViT-g, the default; ``tiny``) or None (``giant``).

    Raises:
        ConfigError: unknown name or bad fields.
    """
    from lipsyncctl.nets.videomae import VideoMAEConfig

    if isinstance(config, VideoMAEConfig):
        return config
    if config is None or isinstance(config, str):
        name = config or "giant"
        if name not in VIDEOMAE_CONFIGS:
            raise ArchConfigError(f"unknown VideoMAE config {name!r}", hint=f"use one of {', '.join(VIDEOMAE_CONFIGS)}")
        config = VIDEOMAE_CONFIGS[name]
    try:
        return VideoMAEConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise ArchConfigError(f"VideoMAE config: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Load plans (also what `models verify` checks, through loaders.plan_for_role)


def _state_dict(path: PathLike, wrappers: tuple[str, ...] = ()) -> tuple[Path, dict[str, torch.Tensor]]:
    """The file's state dict; a torch pickle wrapped under one of ``wrappers`` is unwrapped first."""
    p = Path(path)
    fmt = sniff_format(p)
    if fmt not in ("torch-zip", "torch-legacy") or not wrappers:
        return p, read_checkpoint(p).state_dict
    obj = torch_load(p, mmap_ok=fmt == "torch-zip")
    if isinstance(obj, Mapping):
        inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), Mapping)), None)
        obj = inner if inner is not None else obj
    state_dict, _, _ = unwrap(obj, p)
    return p, state_dict


def plan_vgg16(path: PathLike) -> LoadPlan:
    """torchvision's VGG16 file -> :class:`~lipsyncctl.nets.vgg.VGG16Features` (classifier discarded);
    the widths are read from the file, so smaller test networks load the same way."""
    from lipsyncctl.nets.vgg import VGG16Features, features_state_dict, vgg16_widths

    p, sd = _state_dict(path)
    sd = features_state_dict(sd)
    try:
        widths = vgg16_widths(sd)
    except KeyError as exc:
        raise CheckpointError(f"{p}: not a torchvision VGG16 state dict (no {exc.args[0]!r})", hint=VGG_HINT) from None
    return LoadPlan("VGG16 features (torchvision layout)", p, lambda: VGG16Features(widths), sd, hint=VGG_HINT,
                    config=widths)


def plan_lpips_lin(path: PathLike, widths: tuple[int, ...] | None = None) -> LoadPlan:
    """lpips' ``vgg.pth`` -> the five heads (``nn.ModuleDict`` ``lin0..lin4``) for a trunk of ``widths``
    (None: VGG16's)."""
    from lipsyncctl.nets.lpips import lin_heads
    from lipsyncctl.nets.vgg import VGG16_WIDTHS

    w = tuple(widths) if widths is not None else VGG16_WIDTHS
    p, sd = _state_dict(path)
    return LoadPlan("LPIPS-VGG linear heads (lpips v0.1 vgg.pth)", p, lambda: lin_heads(w), sd, hint=LPIPS_HINT,
                    config=w)


def plan_videomae(path: PathLike, config: VideoMAEConfig | Mapping[str, Any] | str | None = None) -> LoadPlan:
    """The VideoMAE-v2 file (flat, ``{"model": ...}`` or ``{"module": ...}``) -> ``VisionTransformer``."""
    from lipsyncctl.nets.videomae import VisionTransformer

    cfg = videomae_config(config)
    p, sd = _state_dict(path, VIDEOMAE_WRAPPERS)
    label = "ViT-g/14" if cfg == videomae_config("giant") else f"embed {cfg.embed_dim}, depth {cfg.depth}"
    return LoadPlan(f"VideoMAE-v2 VisionTransformer ({label})", p, lambda: VisionTransformer(cfg), sd,
                    hint=VIDEOMAE_HINT, config=cfg)


def plan_aux(role: str, path: PathLike, config: Any = None) -> LoadPlan:
    """The plan for one of this module's registry roles (``vgg16``, ``lpips``, ``videomae``)."""
    if role == ROLE_VGG16:
        return plan_vgg16(path)
    if role == ROLE_LPIPS:
        return plan_lpips_lin(path)
    if role == ROLE_VIDEOMAE:
        return plan_videomae(path, config)
    raise ValueError(f"no auxiliary loader for role {role!r}")


# --------------------------------------------------------------------------------------------------
# Loaders


def _frozen(model: nn.Module) -> Any:
    model.requires_grad_(False)
    return model.eval()


def load_vgg16_features(
    path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> VGG16Features:
    """Load torchvision's ``vgg16-397923af.pth`` (``features.*`` strictly; ``classifier.*`` ignored).

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable, not weights-only, or any ``features`` name/shape difference.
    """
    return _frozen(plan_vgg16(path).execute(device, dtype))


def load_lpips(
    vgg_path: PathLike, lin_path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> LPIPS:
    """LPIPS-VGG v0.1 from torchvision's VGG16 file and lpips' ``vgg.pth`` (each checked strictly, the
    error naming the file at fault).

    Raises:
        MissingModelError: a file does not exist.
        CheckpointError: unreadable, or names/shapes differ (the heads must fit the trunk's widths).
    """
    import torch

    from lipsyncctl.nets.lpips import LPIPS

    vgg = plan_vgg16(vgg_path)
    lin = plan_lpips_lin(lin_path, vgg.config)
    for plan in (vgg, lin):
        with torch.device("meta"):
            expected = plan.build().state_dict()
        check_state_dict(expected, plan.state_dict, what=plan.what, source=plan.source, hint=plan.hint)
    state = {f"net.{k}": v for k, v in vgg.state_dict.items()} | lin.state_dict
    widths = vgg.config
    model = load_into(build_empty(lambda: LPIPS(widths)), state, what="LPIPS-VGG",
                      source=f"{vgg.source} + {lin.source}", device=device, dtype=dtype)
    return _frozen(model)


def load_videomae(
    path: PathLike,
    config: VideoMAEConfig | Mapping[str, Any] | str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> VisionTransformer:
    """Load TREPA's VideoMAE-v2 (``vit_g_hybrid_pt_1200e_ssv2_ft.pth``) strictly.

    Args:
        config: ``giant`` (default, ViT-g/14 as TREPA builds it), ``tiny``, a mapping or a config object;
            the file carries no config (head count and image size are not in the weights).

    Raises:
        MissingModelError / CheckpointError / ConfigError.
    """
    return _frozen(plan_videomae(path, config).execute(device, dtype))


# --------------------------------------------------------------------------------------------------
# Tiny stand-ins in the official formats


def tiny_vgg16_state_dict(gen: torch.Generator, widths: tuple[int, ...] = TINY_VGG_WIDTHS) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG16 state dict (``features.*`` He-scaled, so the taps stay O(1), plus a small
    ``classifier.{0,3,6}.*``), seeded."""
    import torch

    from lipsyncctl.checkpoints.tiny import randomize
    from lipsyncctl.nets.vgg import VGG16Features

    hidden, classes = _TINY_CLASSIFIER
    with torch.device("meta"):
        named = dict(VGG16Features(widths).state_dict())
    named |= {"classifier.0.weight": torch.empty(hidden, widths[-1] * 49, device="meta"),
              "classifier.0.bias": torch.empty(hidden, device="meta"),
              "classifier.3.weight": torch.empty(hidden, hidden, device="meta"),
              "classifier.3.bias": torch.empty(hidden, device="meta"),
              "classifier.6.weight": torch.empty(classes, hidden, device="meta"),
              "classifier.6.bias": torch.empty(classes, device="meta")}
    out = randomize(named.items(), gen)
    return {k: v * math.sqrt(2.0) if k.startswith("features.") and v.ndim == 4 else v for k, v in out.items()}


def tiny_lin_state_dict(gen: torch.Generator, widths: tuple[int, ...] = TINY_VGG_WIDTHS) -> dict[str, torch.Tensor]:
    """The five ``lin{i}.model.1.weight`` of a ``vgg.pth``, seeded and non-negative (as LPIPS' learned ones,
    so distances are >= 0)."""
    import torch

    from lipsyncctl.checkpoints.tiny import randomize
    from lipsyncctl.nets.lpips import lin_heads

    with torch.device("meta"):
        named = lin_heads(widths).state_dict()
    return {k: v.abs() for k, v in randomize(named.items(), gen).items()}


def tiny_videomae_state_dict(gen: torch.Generator, config: VideoMAEConfig | str = "tiny") -> dict[str, torch.Tensor]:
    """A VideoMAE-v2 state dict (official names, no position table), seeded."""
    import torch

    from lipsyncctl.checkpoints.tiny import randomize
    from lipsyncctl.nets.videomae import VisionTransformer

    cfg = videomae_config(config)
    with torch.device("meta"):
        named = VisionTransformer(cfg).state_dict()
    return randomize(named.items(), gen)


def write_tiny_aux(root: Path, seed: int = TINY_AUX_SEED) -> dict[str, Path]:
    """Write the three tiny files in the official formats under ``root``; returns ``{role: path}``."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    files = {role: root / name for role, name in TINY_FILES.items()}
    gen = torch.Generator().manual_seed(seed)
    torch.save(tiny_vgg16_state_dict(gen), files[ROLE_VGG16])
    torch.save(tiny_lin_state_dict(gen), files[ROLE_LPIPS])
    torch.save({"module": tiny_videomae_state_dict(gen)}, files[ROLE_VIDEOMAE])
    return files


def _marker(seed: int) -> dict[str, Any]:
    return {"version": TINY_AUX_VERSION, "seed": seed, "videomae_config": "tiny", "note": TINY_NOTE}


def ensure_tiny_aux(models_dir: Path | None = None, seed: int = TINY_AUX_SEED) -> dict[str, Path]:
    """The tiny preset's ``{"vgg16", "lpips", "videomae"}`` files under ``<models dir>/tiny-aux/``, generated
    on first use (seeded: the same values every time; well under a second). Written into a temporary folder
    and renamed into place, so concurrent runs and crashes never leave a half-written set. The VideoMAE
    file loads with ``load_videomae(path, "tiny")``."""
    root = (models_dir or paths.models_dir()) / TINY_AUX_DIR
    files = {role: root / name for role, name in TINY_FILES.items()}
    from lipsyncctl.checkpoints.tiny import is_current, write_folder

    if not is_current(root, files.values(), _marker(seed)):
        write_folder(root, _marker(seed), lambda tmp: write_tiny_aux(tmp, seed))
    return files
