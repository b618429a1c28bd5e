"""VGG16's convolutional trunk with torchvision's module indices: the network LPIPS-VGG measures with.

LPIPS 0.1.4 (``lpips/pretrained_networks.py`` ``vgg16``) takes ``torchvision.models.vgg16(pretrained=True)
.features``, cuts it into five slices and returns the activations after the ReLUs ``relu1_2``,
``relu2_2``, ``relu3_3``, ``relu4_3`` and ``relu5_3``. Here the same ``features`` ``nn.Sequential`` is
rebuilt with torchvision's exact indices, so the weight file ``vgg16-397923af.pth`` (a flat state dict
holding ``features.N.{weight,bias}`` and the classifier's ``classifier.{0,3,6}.*``) loads unchanged::

    index  0 conv  1 relu  2 conv  3 relu*  4 pool                                   (64)
           5 conv  6 relu  7 conv  8 relu*  9 pool                                   (128)
          10 conv 11 relu 12 conv 13 relu 14 conv 15 relu* 16 pool                   (256)
          17 conv 18 relu 19 conv 20 relu 21 conv 22 relu* 23 pool                   (512)
          24 conv 25 relu 26 conv 27 relu 28 conv 29 relu*  (30 pool: never reached) (512)

(* = a tap). The last max-pool (index 30) is part of torchvision's stack but after the last tap; LPIPS
never applies it, and it has no parameters, so it is kept only for the indices to match. Convolutions are
3x3, padding 1, with bias; the ReLUs are in place, as torchvision's.

The channel widths are configurable so that tiny test networks exist; the default is VGG16's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

#: VGG16's channel widths per stage.
VGG16_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: convolutions per stage (torchvision's configuration "D").
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
#: ``features`` indices of the convolutions, as in torchvision.
CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
#: ``features`` indices of the five LPIPS taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
TAP_INDICES: tuple[int, ...] = (3, 8, 15, 22, 29)
#: the conv index that starts each stage (its weight's first dimension is the stage width).
_STAGE_FIRST_CONV = (0, 5, 10, 17, 24)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` (31 modules) returning the five LPIPS taps.

    Args:
        widths: output channels of the five stages (default VGG16's 64, 128, 256, 512, 512).
        in_channels: input channels (3, RGB).
    """

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS, in_channels: int = 3) -> None:
        super().__init__()
        if len(widths) != len(_CONVS_PER_STAGE) or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be 5 positive channel counts, got {tuple(widths)}")
        self.widths = tuple(int(w) for w in widths)
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, (width, convs) in enumerate(zip(self.widths, _CONVS_PER_STAGE, strict=True)):
            if stage:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # index 30 (unused by LPIPS)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: ``x`` ``(B, 3, H, W)`` (LPIPS feeds its scaled input). Returns the five taps,
        ``(B, widths[i], H / 2**i, W / 2**i)`` (floor division by the pools) for ``i = 0..4``."""
        taps: list[torch.Tensor] = []
        last = TAP_INDICES[-1]
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_INDICES:
                taps.append(x)
            if index == last:
                break
        return taps


def vgg16_widths(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """The five stage widths of a torchvision-layout VGG16 state dict (from the first conv of each stage).

    Raises:
        KeyError: a stage's first convolution ``features.N.weight`` is absent.
    """
    return tuple(int(state_dict[f"features.{i}.weight"].shape[0]) for i in _STAGE_FIRST_CONV)


def features_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision VGG16 state dict without its ``classifier.*`` entries (LPIPS discards the classifier).

    Everything else is kept, so a strict load still rejects names that belong to neither part.
    """
    return {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
