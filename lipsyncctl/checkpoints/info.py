"""``models info FILE``: what a checkpoint holds, without building any weights.

The model kind is recognised from characteristic names; for the UNet and the StableSyncNet the
official architecture configs are then built on the meta device and compared, so the answer names
the exact config (``stage2``, ``syncnet_16_pixel_attn`` ...) or says that none matches.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl.checkpoints.io import Checkpoint, read_checkpoint

#: Official configs tried for each kind, in order; the first exact match wins.
#: stage2 and stage2_512 (and stage1 / stage1_512) have identical tensors: the first name stands for both.
UNET_CANDIDATES = ("stage2", "stage2_efficient", "stage1")
UNET_ALIASES = {"stage2": "stage2 = stage2_512 (LatentSync 1.5 / 1.6)", "stage1": "stage1 = stage1_512"}
SYNCNET_CANDIDATES = ("syncnet_16_pixel_attn", "syncnet_16_pixel", "syncnet_16_latent", "syncnet_25_pixel")


@dataclass
class CheckpointInfo:
    """Summary of a checkpoint file (``models info``)."""

    path: Path
    format: str
    container: str
    size_bytes: int
    num_tensors: int
    num_elements: int
    dtypes: dict[str, int]
    kind: str
    config: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "format": self.format, "container": self.container,
            "size_bytes": self.size_bytes, "num_tensors": self.num_tensors, "num_elements": self.num_elements,
            "dtypes": self.dtypes, "kind": self.kind, "config": self.config, "metadata": self.metadata,
        }


def detect_kind(names: Iterable[str]) -> str:
    """``unet``, ``whisper``, ``vae``, ``stable-syncnet``, ``syncnet-eval``, ``s3fd`` (face-alignment's),
    ``sfd-face`` (the official evaluation's S3FD) or ``unknown``."""
    keys = set(names)
    if "conv_in.weight" in keys and "time_embedding.linear_1.weight" in keys:
        return "unet"
    if "encoder.conv1.weight" in keys and any(k.startswith("encoder.blocks.") for k in keys):
        return "whisper"
    if "encoder.conv_in.weight" in keys and "decoder.conv_out.weight" in keys:
        return "vae"
    if any(k.startswith("audio_encoder.") for k in keys) and any(k.startswith("visual_encoder.") for k in keys):
        return "stable-syncnet"
    if any(k.startswith("netcnnaud.") for k in keys) and any(k.startswith("netcnnlip.") for k in keys):
        return "syncnet-eval"
    if "conv1_1.weight" in keys and "fc7.weight" in keys:
        return "s3fd"
    if "vgg.0.weight" in keys and "L2Norm3_3.weight" in keys:
        return "sfd-face"
    return "unknown"


def match_config(kind: str, state_dict: Mapping[str, Any]) -> str | None:
    """The official config whose model has exactly these names and shapes (meta build), or None."""
    import torch

    from lipsyncctl.checkpoints.keys import compare_state_dict

    if kind == "unet":
        from lipsyncctl.checkpoints.archs import load_unet_config
        from lipsyncctl.nets.unet import UNet3DConditionModel

        for name in UNET_CANDIDATES:
            with torch.device("meta"):
                expected = UNet3DConditionModel(load_unet_config(name)).state_dict()
            if compare_state_dict(expected, state_dict).ok:
                return name
        return None
    if kind == "stable-syncnet":
        from lipsyncctl.checkpoints.loaders import resolve_syncnet_config
        from lipsyncctl.nets.syncnet import StableSyncNet

        for name in SYNCNET_CANDIDATES:
            cfg, _ = resolve_syncnet_config(name)
            with torch.device("meta"):
                expected = StableSyncNet(cfg).state_dict()
            if compare_state_dict(expected, state_dict).ok:
                return name
        return None
    return None


def _metadata_summary(ck: Checkpoint) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in ck.metadata.items():
        if key == "config" and isinstance(value, Mapping):
            out["config"] = dict(value)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = {str(k): v for k, v in value.items() if isinstance(v, (int, float, str, bool)) or v is None
                        or isinstance(v, (Mapping, list))}
        elif isinstance(value, (list, tuple)):
            out[key] = f"<list of {len(value)}>"
    return out


def inspect_checkpoint(path: str | os.PathLike[str], *, match: bool = True) -> CheckpointInfo:
    """Read ``path`` (memory-mapped) and summarise it; ``match`` also names the official config."""
    ck = read_checkpoint(path)
    sd = ck.state_dict
    header = ck.lipsyncctl_header
    kind = str(header["kind"]) if header is not None and header.get("kind") else detect_kind(sd)
    config = None
    if header is not None and header.get("config_name"):
        config = str(header["config_name"])
    elif kind == "whisper":
        dims = ck.metadata.get("dims")
        if isinstance(dims, Mapping) and dims.get("n_audio_state") == 384 and dims.get("n_audio_layer") == 4:
            config = "tiny"
    elif match and kind in ("unet", "stable-syncnet"):
        name = match_config(kind, sd)
        config = UNET_ALIASES.get(name, name) if name else "none of the official configs"
    p = Path(path)
    size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return CheckpointInfo(
        path=p, format=ck.format, container=ck.container, size_bytes=size, num_tensors=len(sd),
        num_elements=sum(t.numel() for t in sd.values()),
        dtypes=dict(Counter(str(t.dtype).removeprefix("torch.") for t in sd.values())),
        kind=kind, config=config, metadata=_metadata_summary(ck),
    )
