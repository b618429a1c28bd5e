"""Frame-wise ("inflated") convolutions, the 3D ResNet block and the spatial down/up samplers.

All video tensors are ``(B, C, F, H, W)``. "Inflated" layers are 2D layers applied to every frame
independently (AnimateDiff's trick for reusing image-UNet weights); their parameters keep the 2D
shapes and names of the official checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def frames_to_batch(x: Tensor) -> Tensor:
    """``(B, C, F, H, W) -> (B*F, C, H, W)`` (row = b*F + f)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def batch_to_frames(x: Tensor, num_frames: int) -> Tensor:
    """``(B*F, C, H, W) -> (B, C, F, H, W)``; inverse of :func:`frames_to_batch`."""
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


class InflatedConv3d(nn.Conv2d):
    """A ``Conv2d`` applied to each frame of a ``(B, C, F, H, W)`` video."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return batch_to_frames(super().forward(frames_to_batch(x)), x.shape[2])


class InflatedGroupNorm(nn.GroupNorm):
    """A ``GroupNorm`` whose statistics are taken per frame (``use_inflated_groupnorm``)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return batch_to_frames(super().forward(frames_to_batch(x)), x.shape[2])


def video_group_norm(num_groups: int, channels: int, eps: float, inflated: bool) -> nn.GroupNorm:
    """GroupNorm for ``(B, C, F, H, W)``. The official configs use ``inflated=False``: a plain
    ``nn.GroupNorm`` on the 5-D tensor, i.e. statistics over all frames of a clip together."""
    cls = InflatedGroupNorm if inflated else nn.GroupNorm
    return cls(num_groups=num_groups, num_channels=channels, eps=eps, affine=True)


class ResnetBlock3D(nn.Module):
    """GN -> SiLU -> conv3x3 -> (+ time embedding) -> GN -> SiLU -> dropout -> conv3x3, plus shortcut.

    Shapes: ``x (B, Cin, F, H, W)``, ``temb (B, T)`` -> ``(B, Cout, F, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int = 32,
        eps: float = 1e-5,
        dropout: float = 0.0,
        output_scale_factor: float = 1.0,
        inflated_groupnorm: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = video_group_norm(groups, in_channels, eps, inflated_groupnorm)
        self.conv1 = InflatedConv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = video_group_norm(groups, out_channels, eps, inflated_groupnorm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = InflatedConv3d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = (
            InflatedConv3d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
            if in_channels != out_channels
            else None
        )
        self.output_scale_factor = output_scale_factor

    def forward(self, x: Tensor, temb: Tensor | None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        if self.output_scale_factor != 1:
            out = out / self.output_scale_factor
        return out


class Downsample3D(nn.Module):
    """Stride-2 3x3 convolution per frame: ``(B, C, F, H, W) -> (B, C, F, H/2, W/2)``."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest x2 (spatial only, or to ``size``) then a 3x3 convolution per frame."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling lacks bf16 kernels on some backends
            x = x.float()
        if size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=(x.shape[2], *size), mode="nearest")
        return self.conv(x.to(dtype))
