"""The training losses, as the official scripts compute them (LATENTSYNC.md §3.1 steps 4-9 and §3.4).

- :func:`sync_bce`: ``BCE(cos(v, a), y)`` per sample, then the mean (StableSyncNet training, and the sync
  term of UNet training with ``y = 1``); pinned by ``golden/train/syncnet_train``.
- :func:`syncnet_frames`: decoded frames -> the StableSyncNet's visual input: bicubic to 256 when the
  training resolution differs, ``b f c h w -> b (f c) h w``, lower half.
- :func:`unet_losses`: every term of one UNet step from the networks and a prepared batch, returned
  separately (they are logged separately) with their weighted sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lipsyncctl.nets.syncnet import sync_cosine

if TYPE_CHECKING:
    from lipsyncctl.training.config import TrainLoss

#: the StableSyncNet's input face size (official: decoded frames are resized to it when res != 256)
SYNCNET_SIZE = 256
#: how the sync loss shows the decoded frames to its SyncNet, ``(lower_half, size)``: every official SyncNet's
SYNC_VIEW = (True, SYNCNET_SIZE)


def sync_bce(vision: Tensor, audio: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean loss, per-sample loss (B,))`` of embeddings ``(B, D)`` and labels ``(B,)`` or ``(B, 1)`` in {0, 1}.

    Official: ``BCELoss(reduction="none")(cos.unsqueeze(1), y).squeeze().mean()``; the cosine of the
    non-negative unit embeddings lies in [0, 1]. BCE runs in float32 (autocast refuses it in half)."""
    if vision.dtype in (torch.float16, torch.bfloat16):
        vision, audio = vision.float(), audio.float()
    # CUDA autocast refuses binary_cross_entropy even on float32 inputs: run it outside autocast
    # (the meta device of the memory estimate has no autocast)
    off = nullcontext() if vision.device.type == "meta" else torch.autocast(vision.device.type, enabled=False)
    with off:
        cos = sync_cosine(vision, audio)
        # a non-finite cosine (a diverged step: NaN frames) is the loss itself, NaN, for the run's NaN/Inf guard to
        # skip the step: binary_cross_entropy raises on it (on a GPU a device-side assert that kills every rank).
        # The finite ones are computed as they were, bit for bit, without a sync.
        finite = torch.isfinite(cos)
        safe = torch.where(finite, cos, torch.zeros_like(cos))
        per_sample = F.binary_cross_entropy(safe, labels.reshape(-1).to(cos.dtype), reduction="none")
        per_sample = torch.where(finite, per_sample, cos)
    return per_sample.mean(), per_sample


def syncnet_frames(frames: Tensor, *, lower_half: bool = True, size: int = SYNCNET_SIZE) -> Tensor:
    """``(B, 3, F, H, W)`` frames in [-1, 1] -> the visual input ``(B, 3F, H', size)`` (channel = 3·frame + rgb),
    resized bicubically to ``size`` (the SyncNet's, 256 in every official config) when ``H != size`` (official step
    8), lower half when ``lower_half`` (the SyncNet config's ``data.lower_half``)."""
    b, c, f, h, w = frames.shape
    x = frames.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    if h != size or w != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x.reshape(b, f * c, size, size)
    return x[:, :, size // 2:] if lower_half else x


@dataclass
class UNetLosses:
    """The terms of one UNet step (unweighted, float32 scalars; None = term off) and their weighted sum."""

    total: Tensor
    recon: Tensor
    lpips: Tensor | None = None
    sync: Tensor | None = None
    trepa: Tensor | None = None
    #: intermediate tensors of the step (latents, noise, prediction, decoded frames), only when asked for
    #: (``unet_micro_step(..., keep=True)``: golden tests and debugging)
    tensors: dict[str, Tensor] | None = None

    def values(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in
                (("loss", self.total), ("recon", self.recon), ("lpips", self.lpips), ("sync", self.sync),
                 ("trepa", self.trepa)) if v is not None}


def unet_losses(
    *,
    pred_noise: Tensor,
    noise: Tensor,
    weights: TrainLoss,
    decoded: Tensor | None = None,
    gt_frames: Tensor | None = None,
    mel: Tensor | None = None,
    aux: Mapping[str, Any] | None = None,
    sync_view: tuple[bool, int] | None = None,
) -> UNetLosses:
    """Steps 5-9 of the official UNet step.

    Args:
        pred_noise, noise: ``(B, 4, F, h, w)`` the UNet's epsilon prediction and the target.
        weights: the loss weights (a 0 weight skips the term).
        decoded: ``(B, 3, F, H, W)`` the one-step x0 decoded by the VAE, in [-1, 1] (pixel supervision).
        gt_frames: ``(B, 3, F, H, W)`` the ground-truth frames in [-1, 1].
        mel: ``(B, 1, 80, 52)`` the Wav2Lip mel window of the sample.
        aux: the frozen networks: ``lpips``, ``syncnet``, ``videomae`` (those of the weighted terms).
        sync_view: ``(lower_half, size)`` of the sync-loss SyncNet's input (its config's ``data`` section; None:
            :data:`SYNC_VIEW`, the official SyncNets').
    """
    from lipsyncctl.training.perceptual import lpips_loss, trepa_loss

    recon = F.mse_loss(pred_noise.float(), noise.float(), reduction="mean")
    out = UNetLosses(total=recon * weights.recon, recon=recon)
    if decoded is None:
        return out
    assert gt_frames is not None and aux is not None
    b, c, f, h, w = decoded.shape
    if weights.lpips:
        flat = decoded.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        flat_gt = gt_frames.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        out.lpips = lpips_loss(aux["lpips"], flat, flat_gt).float()
        out.total = out.total + out.lpips * weights.lpips
    if weights.sync:
        assert mel is not None
        lower_half, size = sync_view or SYNC_VIEW
        vision, audio = aux["syncnet"](syncnet_frames(decoded, lower_half=lower_half, size=size), mel.to(decoded.dtype))
        out.sync, _ = sync_bce(vision, audio, torch.ones(b, device=decoded.device))
        out.total = out.total + out.sync * weights.sync
    if weights.trepa:
        out.trepa = trepa_loss(aux["videomae"], decoded, gt_frames).float()
        out.total = out.total + out.trepa * weights.trepa
    return out
