"""The two perceptual terms of the stage-2 UNet loss, as ``scripts/train_unet.py`` computes them
(LATENTSYNC.md §3.1 steps 6-7; pinned by ``golden/train/train_step``).

- :func:`lpips_loss` (weight 0.1): LPIPS-VGG between the decoded and the ground-truth frames, on their
  **lower half** (rows ``h//2:``, the mouth region), averaged over the images.
- :func:`trepa_loss` (weight 10 in stage 2, 0 in stage2_efficient): TREPA (``latentsync/trepa/loss.py``):
  VideoMAE-v2 features of both clips, L2-normalised, compared with an MSE.

Both networks are frozen; gradients flow to the first argument (the decoded frames) only. LPIPS runs in float32
whatever the run's precision, outside autocast (official: ``lpips.LPIPS`` is never cast, and gets ``.float()``
frames outside the UNet's autocast); VideoMAE in the run's weight dtype.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812

if TYPE_CHECKING:
    from lipsyncctl.nets.lpips import LPIPS
    from lipsyncctl.nets.videomae import VisionTransformer


def _dtype_of(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


#: True inside :func:`in_float32` (the memory estimate's autocast rules on the meta device read it too)
IN_FLOAT32: contextvars.ContextVar[bool] = contextvars.ContextVar("lipsyncctl_in_float32", default=False)


@contextlib.contextmanager
def in_float32(device_type: str) -> Iterator[None]:
    """A block computed in float32, outside any autocast of ``device_type``."""
    token = IN_FLOAT32.set(True)
    try:
        with contextlib.nullcontext() if device_type == "meta" else torch.autocast(device_type, enabled=False):
            yield
    finally:
        IN_FLOAT32.reset(token)


def lower_half(frames: torch.Tensor) -> torch.Tensor:
    """Rows ``h//2:`` of ``(..., H, W)`` frames (the official ``x[:, :, x.shape[2] // 2:, :]``)."""
    return frames[..., frames.shape[-2] // 2 :, :]


def lpips_loss(lpips: LPIPS, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """LPIPS on the lower halves, mean over images, in float32 outside autocast (official).

    Args:
        lpips: the frozen :class:`~lipsyncctl.nets.lpips.LPIPS` (float32: the training networks load it so).
        fake: ``(N, 3, H, W)`` decoded frames in [-1, 1] (gradients flow through).
        real: ``(N, 3, H, W)`` ground-truth frames in [-1, 1].

    Returns:
        A 0-dim float32 tensor: ``mean_n LPIPS(fake[n, :, H//2:], real[n, :, H//2:])``.
    """
    dtype = _dtype_of(lpips)
    with in_float32(fake.device.type):
        per_image = lpips(lower_half(fake).to(dtype), lower_half(real).to(dtype))  # (N, 1, 1, 1)
    return per_image.mean()


def trepa_inputs(clips: torch.Tensor, size: int) -> torch.Tensor:
    """TREPA's preprocessing: ``(B, 3, F, H, W)`` in [-1, 1] -> ``(B, 3, F, size, size)`` in [0, 1].

    Each frame is resized with ``F.interpolate(mode="bicubic")`` (align_corners False, no antialias), then
    ``(x / 2 + 0.5).clamp(0, 1)``; there is no ImageNet normalisation.
    """
    b, c, f, h, w = clips.shape
    frames = clips.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bicubic")
    clips = frames.reshape(b, f, c, size, size).permute(0, 2, 1, 3, 4)
    return (clips / 2 + 0.5).clamp(0, 1)


def trepa_features(videomae: VisionTransformer, clips: torch.Tensor) -> torch.Tensor:
    """``(B, 3, F, H, W)`` clips in [-1, 1] -> ``(B, D)`` L2-normalised ``forward_features`` (mean-pooled,
    ``fc_norm``); computed in the network's dtype."""
    x = trepa_inputs(clips.to(_dtype_of(videomae)), videomae.config.img_size)
    return F.normalize(videomae.forward_features(x), p=2, dim=1)


def trepa_loss(videomae: VisionTransformer, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """TREPA: ``mse(normalize(phi(fake)), normalize(phi(real)))`` with ``phi`` the VideoMAE features.

    Args:
        videomae: the frozen :class:`~lipsyncctl.nets.videomae.VisionTransformer` (16 frames per clip for
            the official ViT-g).
        fake: ``(B, 3, F, H, W)`` decoded clips in [-1, 1] (gradients flow through).
        real: ``(B, 3, F, H, W)`` ground-truth clips in [-1, 1] (no gradient is kept for them).

    Returns:
        A 0-dim tensor: the mean over ``B x D`` of the squared feature differences.
    """
    feats_fake = trepa_features(videomae, fake)
    with torch.no_grad():
        feats_real = trepa_features(videomae, real)
    return F.mse_loss(feats_fake, feats_real)
