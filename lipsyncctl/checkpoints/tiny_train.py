"""Seeded tiny StableSyncNet weights in the official ``stable_syncnet.pt`` layout (``{"state_dict": ...}``)
for the tiny training presets: the sync-loss network of a tiny UNet run, or the start of a tiny SyncNet run.
Written once under ``<models dir>/tiny-train/`` and then loaded through the real strict loader."""

from __future__ import annotations

import json
from pathlib import Path

from lipsyncctl import paths

TINY_SYNCNET_SEED = 20251203
TINY_TRAIN_DIR = "tiny-train"
_FILE = "stable_syncnet_tiny.pt"


def ensure_tiny_stable_syncnet(models_dir: Path | None = None, seed: int = TINY_SYNCNET_SEED) -> Path:
    """The tiny StableSyncNet file (architecture ``configs/syncnet/tiny.yaml``), written on first use."""
    from lipsyncctl.checkpoints.tiny import write_folder

    root = (models_dir or paths.models_dir()) / TINY_TRAIN_DIR
    path, marker = root / _FILE, {"seed": seed, "config": "tiny", "note": "random weights: not a sync judge"}
    try:
        if path.is_file() and json.loads((root / "tiny.json").read_text()) == marker:
            return path
    except (OSError, json.JSONDecodeError):
        pass
    write_folder(root, marker, lambda tmp: _write(tmp / _FILE, seed))
    return path


def _write(path: Path, seed: int) -> None:
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.tiny import randomize
    from lipsyncctl.nets.syncnet import StableSyncNet

    with torch.device("meta"):
        net = StableSyncNet(archs.load_syncnet_config("tiny"))
    state = randomize(net.state_dict().items(), torch.Generator().manual_seed(seed))
    torch.save({"state_dict": state, "global_step": 0}, path)
