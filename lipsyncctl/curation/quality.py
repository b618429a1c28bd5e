"""Clip stage ``quality`` of the curation job: hyperIQA on the aligned clip (the official visual-quality filter).

The official ``preprocess/filter_visual_quality.py`` (LATENTSYNC.md §4 step 9, §5.3), reproduced:

1. Read frames ``0``, ``n // 2`` and ``n - 1`` of the ALIGNED clip (``n``: its decoded frame count; the
   ``align`` stage's file, ``previous["align"]["aligned"]``), RGB uint8.
2. ``/ 255`` (float32), torchvision ``CenterCrop(224)`` (top/left ``int(round((size - 224) / 2))``: rows and
   columns 16..240 at 256 px), ImageNet ``Normalize`` (mean 0.485 0.456 0.406, std 0.229 0.224 0.225).
3. ``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)`` + ``TargetNet`` with ``koniq_pretrained.pkl``: one score
   per frame (0-100, higher is better); the clip's score is their mean; kept iff ``score >= quality_min``
   (official: 40). The scores are stored, so a new threshold re-decides without running the network.

``curate.quality_crop: resize`` (not official) resizes the whole aligned frame to 224 instead of
cropping: at 512 px the official crop keeps the middle 44 % and sees only nose and mouth.

Without the weights the job refuses to start (MissingModelError, exit 4, naming
``lipsyncctl models fetch hyperiqa``) unless ``curate.skip_quality`` is set: the stage then records
``skipped`` and keeps the clip unfiltered (the summary says so). The ``tiny`` preset
(``model.checkpoint: tiny``) uses seeded random hyperIQA weights in the official format: its scores mean
nothing, and the summary says that too. The network is loaded once per worker (``ClipContext.cache``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.config import TINY, CurateOptions, ModelOptions
from lipsyncctl.curation.records import Decision

if TYPE_CHECKING:
    import torch

    from lipsyncctl.curation.clipstages import ClipContext
    from lipsyncctl.nets.hyperiqa import HyperNet

NAME = "quality"
#: bump when the stage computes something different from the same inputs and settings
VERSION = 1
#: the registry entry of koniq_pretrained.pkl (`lipsyncctl models fetch hyperiqa`)
MODEL = "hyperiqa"
CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REASON = "low-quality"
SKIPPED_NOTE = ("quality skipped (curate.skip_quality): no visual-quality filter ran; the official pipeline "
                "drops clips whose hyperIQA score is below 40")
RESIZE_NOTE = "quality_crop=resize: the whole aligned frame resized to 224 (not official: the official filter " \
              "centre-crops 224)"


def settings(options: CurateOptions) -> dict[str, Any]:
    """What the scores depend on (the threshold is not: it only decides)."""
    return {"skip": options.skip_quality} if options.skip_quality else {"crop": options.quality_crop}


def skipped(options: CurateOptions) -> bool:
    """The user skipped the stage: its weights are not needed (not resolved, not loaded)."""
    return options.skip_quality


def models(model: ModelOptions) -> dict[str, Path]:
    """``koniq_pretrained.pkl``: the registry's ``hyperiqa`` file, or the seeded random stand-in for the
    ``tiny`` preset (generated on first use). Never downloads.

    Raises:
        MissingModelError: not installed (the hint names ``lipsyncctl models fetch hyperiqa``).
    """
    if model.checkpoint == TINY:
        from lipsyncctl.checkpoints.hyperiqa import ensure_tiny_hyperiqa

        return {"hyperiqa": ensure_tiny_hyperiqa()}
    from lipsyncctl.checkpoints.registry import load_registry

    return {"hyperiqa": load_registry().resolve(MODEL, "hyperiqa")}


def run(ctx: ClipContext) -> dict[str, Any]:
    """Score the aligned clip (module docstring), or record ``skipped``."""
    options = ctx.options
    if options.skip_quality:
        return {"skipped": True}
    weights = ctx.models.get("hyperiqa")
    if weights is None:  # the job resolves it before any work; a direct caller must too
        from lipsyncctl.errors import MissingModelError

        raise MissingModelError("the quality stage needs hyperIQA's koniq_pretrained.pkl",
                                hint=f"run `lipsyncctl models fetch {MODEL}`, or set curate.skip_quality=true")
    aligned = Path(ctx.previous["align"]["aligned"])
    indices, frames = pick_frames(aligned)
    batch = preprocess(frames, options.quality_crop)
    scores = score(_network(ctx, Path(weights)), batch)
    return {"skipped": False, "score": mean_score(scores), "frame_scores": scores,
            "frames": indices, "crop": options.quality_crop, "tiny": _is_tiny(Path(weights)),
            "weights": Path(weights).name}


def decide(data: Mapping[str, Any], options: CurateOptions) -> Decision | None:
    """``low-quality`` (value: the score) when the mean score is below ``quality_min``; a skipped stage
    keeps the clip."""
    if data.get("skipped"):
        return None
    if data["score"] < options.quality_min:
        return Decision.rejected(NAME, REASON, round(float(data["score"]), 4))
    return None


def outputs(data: Mapping[str, Any]) -> list[str]:
    return []  # measurements only


def summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's fields: the score (or ``skipped``) and what it means."""
    from lipsyncctl.checkpoints.hyperiqa import TINY_NOTE

    if data.get("skipped"):
        return {"quality": "skipped", "quality_note": SKIPPED_NOTE}
    notes = [TINY_NOTE] if data.get("tiny") else []
    if data["crop"] != "official":
        notes.append(RESIZE_NOTE)
    out: dict[str, Any] = {"quality": data["score"], "quality_frames": data["frame_scores"],
                           "quality_official": not notes, **({"quality_scale": "tiny"} if data.get("tiny") else {})}
    if notes:
        out["quality_note"] = "; ".join(notes)
    return out


# ---------------------------------------------------------------------------------------------------
# The official preprocessing and scoring


def frame_indices(n: int) -> list[int]:
    """The frames the official filter reads of an ``n``-frame clip: ``[0, n // 2, n - 1]``."""
    if n < 1:
        raise ValueError("the clip has no frame")
    return [0, n // 2, n - 1]


def pick_frames(path: Path) -> tuple[list[int], np.ndarray]:
    """``(indices, (3, H, W, 3) uint8 RGB)``: frames ``0, n // 2, n - 1`` of the video ``path`` (``n``: the
    decoded frame count, as decord's ``len(vr)``). Two forward decodes: one counts, one picks."""
    from lipsyncctl.errors import MediaError
    from lipsyncctl.media.reader import VideoReader

    with VideoReader(path) as reader:
        n = sum(1 for _ in reader)
    if n == 0:
        raise MediaError(f"{path}: no decodable frame")
    indices = frame_indices(n)
    picked: dict[int, np.ndarray] = {}
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i in indices:
                picked[i] = frame.image
            if i >= indices[-1]:
                break
    return indices, np.stack([picked[i] for i in indices])


def preprocess(frames: np.ndarray, crop: str = "official") -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 RGB -> ``(B, 3, 224, 224)`` float32, ImageNet-normalised.

    ``official``: ``/ 255``, torchvision ``CenterCrop(224)`` (offsets ``int(round((size - 224) / 2))``),
    ``Normalize``; the tensor keeps the channels-last memory of the official ``torch.from_numpy(rearrange(
    frames, "b h w c -> b c h w"))`` (the CPU conv kernels differ by layout at 1e-5). ``resize``: the whole
    frame bilinearly resized (antialiased, as torchvision ``Resize``) to 224 instead of cropped (not official).
    """
    import torch
    from torch.nn import functional as F  # noqa: N812

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    x = torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2) / 255.0
    h, w = x.shape[-2:]
    if crop == "official":
        if h < CROP or w < CROP:
            raise ValueError(f"frames of {w}x{h} are smaller than the official crop {CROP}; use quality_crop=resize")
        top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
        x = x[..., top:top + CROP, left:left + CROP]
    elif crop == "resize":
        x = F.interpolate(x, size=(CROP, CROP), mode="bilinear", align_corners=False, antialias=True)
    else:
        raise ValueError(f"quality crop {crop!r}: expected 'official' or 'resize'")
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=x.dtype).view(-1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def score(hyper: HyperNet, batch: torch.Tensor) -> list[float]:
    """Per-image hyperIQA scores of a preprocessed batch (float32 on the network's device)."""
    import torch

    from lipsyncctl.nets.hyperiqa import hyperiqa_score

    device = next(hyper.parameters()).device
    with torch.no_grad():
        return [float(s) for s in hyperiqa_score(hyper, batch.to(device=device, dtype=torch.float32))]


def mean_score(scores: Sequence[float]) -> float:
    """The clip's score: the float32 mean of its frames' scores (the official ``pred.mean()``)."""
    return float(np.mean(np.asarray(scores, dtype=np.float32)))


def _is_tiny(weights: Path) -> bool:
    from lipsyncctl.checkpoints.hyperiqa import TINY_HYPERIQA_DIR

    return weights.parent.name == TINY_HYPERIQA_DIR


def _network(ctx: ClipContext, weights: Path) -> HyperNet:
    """The worker's HyperNet (:meth:`ClipContext.network`), float32, eval mode."""
    import torch

    from lipsyncctl.checkpoints.loaders import load_hyperiqa

    return ctx.network(f"{NAME}.hyperiqa", [weights],
                       lambda device: load_hyperiqa(weights, device=device, dtype=torch.float32).eval())
