"""LPIPS-VGG (Zhang et al., CVPR 2018), as lpips 0.1.4 computes ``LPIPS(net="vgg", version="0.1")`` in eval.

LatentSync's stage-2 UNet training uses it on the lower half of the decoded frames (LATENTSYNC.md §3.1
step 6). For two images ``x0, x1`` in [-1, 1]:

1. ``ScalingLayer``: ``(x - shift) / scale`` per RGB channel, shift ``[-.030, -.088, -.188]``, scale
   ``[.458, .448, .450]`` (ImageNet statistics rewritten for [-1, 1] input);
2. VGG16's five ReLU taps (:class:`~lipsyncctl.nets.vgg.VGG16Features`);
3. per tap, unit-normalise every pixel's channel vector: ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, ``lin{i}``: a 1x1 convolution without bias to one channel (the learned,
   non-negative weights of ``weights/v0.1/vgg.pth``), preceded by a dropout that is inactive in eval;
5. spatial mean of each tap's map, summed over the five taps -> ``(B, 1, 1, 1)``.

State-dict names: ``net.features.N.{weight,bias}`` (torchvision's VGG16 file with ``net.`` in front) and
``lin{i}.model.1.weight`` (the names of lpips' ``vgg.pth``, which holds exactly these five tensors). The
``scaling_layer.shift`` / ``scaling_layer.scale`` buffers are constants that neither file carries, so they
are non-persistent here. lpips' ``LPIPS`` also registers the five heads a second time as ``lins.N``; that
alias is left out (it is not in ``vgg.pth``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lipsyncctl.nets.vgg import VGG16_WIDTHS, VGG16Features

#: lpips' ``normalize_tensor`` epsilon.
NORMALIZE_EPS = 1e-10
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class ScalingLayer(nn.Module):
    """``(x - shift) / scale`` with lpips' constants; buffers of shape ``(1, 3, 1, 1)``."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE)[None, :, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """lpips' ``NetLinLayer``: ``model = Sequential(Dropout(0.5), Conv2d(C, 1, 1, bias=False))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def lin_heads(widths: Sequence[int] = VGG16_WIDTHS) -> nn.ModuleDict:
    """The five heads alone (state-dict names ``lin{i}.model.1.weight``, exactly those of ``vgg.pth``)."""
    return nn.ModuleDict({f"lin{i}": NetLinLayer(int(c)) for i, c in enumerate(widths)})


def normalize_tensor(feat: torch.Tensor, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """lpips' ``normalize_tensor``: ``feat / (||feat||_2 over dim 1 + eps)`` for ``(B, C, H, W)``."""
    norm = torch.sqrt(torch.sum(feat**2, dim=1, keepdim=True))
    return feat / (norm + eps)


class LPIPS(nn.Module):
    """LPIPS with a VGG16 trunk (``net``) and five linear heads (``lin0..lin4``).

    Args:
        widths: the trunk's stage widths (VGG16's by default; smaller ones for tiny test networks).
    """

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Features(widths)
        self.widths = self.net.widths
        for i, c in enumerate(self.widths):
            self.add_module(f"lin{i}", NetLinLayer(c))

    @property
    def lins(self) -> list[NetLinLayer]:
        """The five heads, in tap order."""
        return [getattr(self, f"lin{i}") for i in range(len(self.widths))]

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        """Distance between ``in0`` and ``in1``, both ``(B, 3, H, W)`` in [-1, 1] (``H, W >= 16``).

        Returns:
            ``(B, 1, 1, 1)``: the per-image LPIPS distance (0 for identical images).
        """
        feats0 = self.net(self.scaling_layer(in0))
        feats1 = self.net(self.scaling_layer(in1))
        total: torch.Tensor | None = None
        for lin, f0, f1 in zip(self.lins, feats0, feats1, strict=True):
            diff = (normalize_tensor(f0) - normalize_tensor(f1)) ** 2
            term = lin(diff).mean(dim=(2, 3), keepdim=True)
            total = term if total is None else total + term
        assert total is not None
        return total
