"""The ``tiny`` preset's stand-ins for the official sync scorer's two files: ``syncnet_v2.model`` and ``sfd_face.pth``.

Neither network has a small variant (their layouts are fixed by the published weights), so the ``tiny``
preset gets the full networks with **seeded random weights**, written in the official formats and read back
through the real strict loaders (:func:`~lipsyncctl.checkpoints.loaders.load_syncnet_eval`,
:func:`~lipsyncctl.checkpoints.sfd.load_sfd_face`):

``<models dir>/tiny-sync/``
    ``syncnet_v2.model``  a flat ``torch.save`` of the evaluation SyncNet's state dict (keys without a
                          prefix, as syncnet_python's file), about 55 MB
    ``sfd_face.pth``      a flat ``torch.save`` under syncnet_python's S3FD names (``vgg.N``, ``L2Norm3_3``,
                          ``extras.N``, ``loc.N``, ``conf.N``), about 90 MB
    ``tiny.json``         generator version and seed; the files are rebuilt when it changes

**Their scores mean nothing.** The random S3FD's classification heads are zero with a background bias, so
it deterministically finds no face (every face score is about 2e-9, far below the official 0.9): a tiny
curate run measures no sync track for any clip, and the ``sync`` stage keeps the clip saying so
(:mod:`lipsyncctl.curation.sync`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import paths

if TYPE_CHECKING:
    import torch

#: Bump when the generated files change, so stale ones are rebuilt.
TINY_SYNC_VERSION = 1
TINY_SYNC_SEED = 20250622
TINY_SYNC_DIR = "tiny-sync"
SYNCNET_FILENAME = "syncnet_v2.model"
SFD_FILENAME = "sfd_face.pth"
#: registry name -> file name (the keys are the sync stage's roles)
FILES = {"syncnet-v2": SYNCNET_FILENAME, "sfd-face": SFD_FILENAME}
TINY_NOTE = ("tiny preset: syncnet-v2 and sfd-face have seeded RANDOM weights, so sync was NOT MEASURED (the random "
             "S3FD finds no face) and the clip was kept unfiltered and uncorrected; install the real ones with "
             "`lipsyncctl models fetch syncnet-v2 sfd-face`")
#: the random S3FD's class logits: background wins everywhere (face score sigmoid(-20), about 2e-9)
_BACKGROUND_LOGIT, _FACE_LOGIT = 10.0, -10.0


def _random_like(shapes: dict[str, tuple[tuple[int, ...], Any]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """He-scaled convolutions and linears, zero biases, BatchNorm as identity (1-D ``weight``: 1)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in shapes.items():
        leaf = name.rpartition(".")[2]
        if leaf == "num_batches_tracked":
            out[name] = torch.zeros((), dtype=dtype)
        elif leaf in ("bias", "running_mean"):
            out[name] = torch.zeros(shape)
        elif leaf == "running_var" or len(shape) == 1:
            out[name] = torch.ones(shape)
        else:
            out[name] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / math.prod(shape[1:]))
    return out


def tiny_syncnet_state_dict(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A full evaluation SyncNet state dict (the official names) with seeded random values."""
    import torch

    from lipsyncctl.nets.syncnet_eval import SyncNetEval

    with torch.device("meta"):
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in SyncNetEval().state_dict().items()}
    return _random_like(shapes, gen)


def tiny_sfd_state_dict(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A full S3FD state dict under the OFFICIAL names (``sfd_face.pth``), seeded random, that finds no face:
    L2Norm scales as the network's own (10, 8, 5), the ``conf`` heads zero with background/face biases
    +10/-10 (head 0's max-out: three background channels, then the face)."""
    import torch

    from lipsyncctl.checkpoints.sfd import official_name
    from lipsyncctl.nets.s3fd import S3FD

    with torch.device("meta"):
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in S3FD().state_dict().items()}
    ours = _random_like(shapes, gen)
    for norm, scale in (("norm3_3", 10.0), ("norm4_3", 8.0), ("norm5_3", 5.0)):
        ours[f"{norm}.weight"] = torch.full(shapes[f"{norm}.weight"][0], scale)
    for name in [k for k in ours if k.startswith("conf.")]:
        ours[name] = torch.zeros_like(ours[name])
        if name.endswith(".bias"):
            ours[name][:-1] = _BACKGROUND_LOGIT
            ours[name][-1] = _FACE_LOGIT
    return {official_name(k): v for k, v in ours.items()}


def _marker(seed: int) -> dict[str, Any]:
    return {"version": TINY_SYNC_VERSION, "seed": seed, "note": TINY_NOTE}


def ensure_tiny_sync(models_dir: Path | None = None, seed: int = TINY_SYNC_SEED) -> dict[str, Path]:
    """The tiny preset's ``{"syncnet-v2": syncnet_v2.model, "sfd-face": sfd_face.pth}``, generated on first use
    (seeded: the same values every time; about a second) under ``<models dir>/tiny-sync/``."""
    import torch

    from lipsyncctl.checkpoints.hyperiqa import save_official as save_flat  # atomic flat torch.save
    from lipsyncctl.checkpoints.tiny import is_current, write_folder

    root = (models_dir or paths.models_dir()) / TINY_SYNC_DIR
    files = {name: root / filename for name, filename in FILES.items()}

    def write(tmp: Path) -> None:
        gen = torch.Generator().manual_seed(seed)
        save_flat(tiny_syncnet_state_dict(gen), tmp / FILES["syncnet-v2"])
        save_flat(tiny_sfd_state_dict(gen), tmp / FILES["sfd-face"])

    if not is_current(root, files.values(), _marker(seed)):  # made in a folder beside it, renamed into place
        write_folder(root, _marker(seed), write)
    return files


def is_tiny(path: Path) -> bool:
    """Whether ``path`` is one of these generated files."""
    return Path(path).parent.name == TINY_SYNC_DIR
