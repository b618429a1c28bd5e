"""hyperIQA weight files: the official layout (``koniq_pretrained.pkl``) and the tiny preset's random stand-in.

The official file is ``torch.save(HyperNet.state_dict())``: a flat dict of 355 tensors under the official
names (:mod:`lipsyncctl.nets.hyperiqa`), loaded by :func:`lipsyncctl.checkpoints.loaders.load_hyperiqa`.

There is no small hyperIQA: its layout is fixed by the koniq weights (a ResNet-50, 27.4 M values). The
``tiny`` preset therefore gets the full network with **seeded random weights** in that same file format
(``<models dir>/tiny-hyperiqa/koniq_pretrained.pkl``, float32, about 110 MB, made once, about a second),
read back through the real loader. **Its scores mean nothing**: the random network is scaled so that every
image scores about 50 (above the official threshold 40), so tiny runs keep their clips.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import paths

if TYPE_CHECKING:
    import torch

#: Bump when the generated file changes, so a stale one is rebuilt.
TINY_HYPERIQA_VERSION = 1
TINY_HYPERIQA_SEED = 20250621
TINY_HYPERIQA_DIR = "tiny-hyperiqa"
OFFICIAL_FILENAME = "koniq_pretrained.pkl"
#: the registry entry of the official file (``lipsyncctl models fetch hyperiqa``)
REGISTRY_NAME = "hyperiqa"
TINY_NOTE = ("tiny preset: hyperIQA has seeded RANDOM weights, its quality scores MEAN NOTHING (every clip "
             f"scores about 50); install the real ones with `lipsyncctl models fetch {REGISTRY_NAME}`")

#: gains on the random hyper head (like the golden vector's) keep the target network's sigmoids unsaturated
_HEAD_GAINS = {"fc1w_conv": 0.02, "fc2w_conv": 0.03, "fc3w_conv": 0.04, "fc4w_conv": 0.07, "fc5w_fc": 0.05,
               "fc1b_fc": 0.3, "fc2b_fc": 0.3, "fc3b_fc": 0.3, "fc4b_fc": 0.3, "fc5b_fc": 0.05}
_TINY_SCORE = 50.0  # fc5b_fc.bias: where the meaningless scores sit


def tiny_state_dict(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A full ``HyperNet`` state dict (official names) with seeded random values that keep a random
    ResNet-50 O(1): He-scaled convs, BatchNorm identity statistics, the last BatchNorm of every residual
    branch at 0.2 (the stream does not grow with depth), small hyper-head gains, score bias 50."""
    import torch

    from lipsyncctl.nets.hyperiqa import HyperNet

    with torch.device("meta"):
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in HyperNet().state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in shapes.items():
        module, _, leaf = name.rpartition(".")
        head = module.split(".")[0]
        if leaf == "num_batches_tracked":
            out[name] = torch.zeros((), dtype=dtype)
        elif leaf in ("running_mean", "bias"):
            out[name] = torch.zeros(shape)
        elif leaf == "running_var":
            out[name] = torch.ones(shape)
        elif len(shape) == 1:  # BatchNorm weight
            out[name] = torch.full(shape, 0.2 if module.endswith("bn3") else 1.0)
        else:  # conv / linear weight
            fan_in = math.prod(shape[1:])
            gain = _HEAD_GAINS.get(head, math.sqrt(2.0) if module.startswith("res.") else 1.0)
            out[name] = torch.randn(shape, generator=gen) * (gain / math.sqrt(fan_in))
    out["fc5b_fc.bias"] = torch.full((1,), _TINY_SCORE)
    return out


def save_official(state_dict: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write ``state_dict`` as the official file is written (``torch.save`` of a flat name -> tensor dict),
    atomically (a temporary file renamed into place)."""
    import torch

    from lipsyncctl.media.atomic import output_mode, temp_prefix

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (a name the folder sweeps know: a killed writer's file is removed by the next run)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp)
        output_mode(tmp)  # (mkstemp makes 0600 files)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _marker(seed: int) -> dict[str, Any]:
    return {"version": TINY_HYPERIQA_VERSION, "seed": seed, "note": TINY_NOTE}


def ensure_tiny_hyperiqa(models_dir: Path | None = None, seed: int = TINY_HYPERIQA_SEED) -> Path:
    """The tiny preset's hyperIQA file, generated on first use (seeded: the same values every time).
    Returns ``<models dir>/tiny-hyperiqa/koniq_pretrained.pkl``."""
    import torch

    from lipsyncctl.checkpoints.tiny import is_current, write_folder

    root = (models_dir or paths.models_dir()) / TINY_HYPERIQA_DIR
    path = root / OFFICIAL_FILENAME
    if not is_current(root, [path], _marker(seed)):  # made in a folder beside it, renamed into place
        write_folder(root, _marker(seed),
                     lambda tmp: save_official(tiny_state_dict(torch.Generator().manual_seed(seed)), tmp / path.name))
    return path
