"""Seeded tiny StableSyncNet weights in the official ``stable_syncnet.pt`` layout (``{"state_dict": ...}``)
for the tiny training presets: the sync-loss network of a tiny UNet run, or the start of a tiny SyncNet run.
Written once under ``<models dir>/tiny/`` and then loaded through the real strict loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lipsyncctl import paths

TINY_SYNCNET_SEED = 20251203
_FILE = "stable_syncnet_tiny.pt"


def ensure_tiny_stable_syncnet(models_dir: Path | None = None, seed: int = TINY_SYNCNET_SEED) -> Path:
    """The tiny StableSyncNet file (architecture ``configs/syncnet/tiny.yaml``), written on first use."""
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.tiny import randomize
    from lipsyncctl.nets.syncnet import StableSyncNet

    root = (models_dir or paths.models_dir()) / "tiny"
    path, marker = root / _FILE, root / f"{_FILE}.json"
    want = {"seed": seed, "config": "tiny", "note": "random weights: not a sync judge"}
    if path.is_file() and marker.is_file() and json.loads(marker.read_text()) == want:
        return path
    root.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        net = StableSyncNet(archs.load_syncnet_config("tiny"))
    state = randomize(net.state_dict().items(), torch.Generator().manual_seed(seed))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"state_dict": state, "global_step": 0}, tmp)
    os.replace(tmp, path)
    marker.write_text(json.dumps(want))
    return path
