"""Down, mid and up blocks of the 3D UNet.

Each layer of a block is ``resnet -> [spatial transformer] -> [motion module]``; down blocks return the
output of every layer (and of the downsampler) as skip connections, up blocks consume them from the end.
Video tensors are ``(B, C, F, H, W)``; ``temb (B, T)``; ``context`` the audio condition (see
:class:`~lipsyncctl.nets.attention.Transformer3DModel`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import Transformer3DModel
from .motion import VanillaTemporalModule
from .resnet import Downsample3D, ResnetBlock3D, Upsample3D
from .unet_config import MotionModuleConfig


@dataclass(frozen=True)
class BlockSpec:
    """What every block needs besides its channel counts."""

    temb_channels: int
    groups: int
    eps: float
    heads: int
    cross_attention_dim: int | None  # None: no audio cross-attention (attn2)
    inflated_groupnorm: bool
    motion: MotionModuleConfig


class _Block(nn.Module):
    gradient_checkpointing: bool = False

    def _run(self, fn: Callable[..., Tensor], *args: Any) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _layer(self, i: int, x: Tensor, temb: Tensor, context: Tensor | None) -> Tensor:
        x = self._run(self.resnets[i], x, temb)
        if self.attentions is not None:
            x = self._run(self.attentions[i], x, context)
        if self.motion_modules is not None:
            x = self._run(self.motion_modules[i], x)
        return x


def _layers(
    spec: BlockSpec, in_channels: list[int], out_channels: int, cross_attn: bool, motion: bool
) -> tuple[nn.ModuleList | None, nn.ModuleList, nn.ModuleList | None]:
    """(attentions, resnets, motion_modules) for layers with the given resnet input widths."""
    attentions = nn.ModuleList([
        Transformer3DModel(spec.heads, out_channels, spec.cross_attention_dim, norm_num_groups=spec.groups)
        for _ in in_channels
    ]) if cross_attn else None
    resnets = nn.ModuleList([
        ResnetBlock3D(c, out_channels, spec.temb_channels, spec.groups, spec.eps,
                      inflated_groupnorm=spec.inflated_groupnorm)
        for c in in_channels
    ])
    motion_modules = nn.ModuleList(
        [VanillaTemporalModule(out_channels, spec.motion) for _ in in_channels]
    ) if motion else None
    return attentions, resnets, motion_modules


class DownBlock3D(_Block):
    """``num_layers`` layers then an optional stride-2 downsampler. ``cross_attn`` selects
    ``CrossAttnDownBlock3D`` (spatial transformers) vs ``DownBlock3D`` (none)."""

    def __init__(self, spec: BlockSpec, num_layers: int, in_channels: int, out_channels: int, *,
                 cross_attn: bool, motion: bool, add_downsample: bool, downsample_padding: int = 1) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * (num_layers - 1)
        self.attentions, self.resnets, self.motion_modules = _layers(spec, widths, out_channels, cross_attn, motion)
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels, downsample_padding)]) if add_downsample else None

    def forward(self, x: Tensor, temb: Tensor, context: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        skips: tuple[Tensor, ...] = ()
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb, context)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class UNetMidBlock3DCrossAttn(_Block):
    """resnet, then ``num_layers`` x (transformer -> [motion] -> resnet)."""

    def __init__(self, spec: BlockSpec, channels: int, *, motion: bool, num_layers: int = 1,
                 output_scale_factor: float = 1.0) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([
            Transformer3DModel(spec.heads, channels, spec.cross_attention_dim, norm_num_groups=spec.groups)
            for _ in range(num_layers)
        ])
        self.resnets = nn.ModuleList([
            ResnetBlock3D(channels, channels, spec.temb_channels, spec.groups, spec.eps,
                          output_scale_factor=output_scale_factor, inflated_groupnorm=spec.inflated_groupnorm)
            for _ in range(num_layers + 1)
        ])
        self.motion_modules = nn.ModuleList(
            [VanillaTemporalModule(channels, spec.motion) for _ in range(num_layers)]
        ) if motion else None

    def forward(self, x: Tensor, temb: Tensor, context: Tensor | None) -> Tensor:
        x = self._run(self.resnets[0], x, temb)
        for i, attn in enumerate(self.attentions):
            x = self._run(attn, x, context)
            if self.motion_modules is not None:
                x = self._run(self.motion_modules[i], x)
            x = self._run(self.resnets[i + 1], x, temb)
        return x


class UpBlock3D(_Block):
    """``num_layers`` x (concat skip -> resnet -> [transformer] -> [motion]), then an optional x2 upsampler.

    ``prev_channels`` is the width coming from below; the last layer's skip has ``in_channels``.
    ``cross_attn`` selects ``CrossAttnUpBlock3D`` vs ``UpBlock3D``.
    """

    def __init__(self, spec: BlockSpec, num_layers: int, in_channels: int, prev_channels: int, out_channels: int,
                 *, cross_attn: bool, motion: bool, add_upsample: bool) -> None:
        super().__init__()
        widths = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            widths.append((prev_channels if i == 0 else out_channels) + skip)
        self.attentions, self.resnets, self.motion_modules = _layers(spec, widths, out_channels, cross_attn, motion)
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(self, x: Tensor, skips: tuple[Tensor, ...], temb: Tensor, context: Tensor | None,
                upsample_size: tuple[int, int] | None = None, *, start_layer: int = 0,
                layer_inputs: list[Tensor] | None = None) -> Tensor:
        """``skips`` are consumed from the end, one per layer run. ``start_layer`` skips the first layers
        (feature caching: ``x`` is then the cached input of that layer); ``layer_inputs``, when given,
        receives the input of every layer run (before its skip concat)."""
        for i in range(start_layer, len(self.resnets)):
            if layer_inputs is not None:
                layer_inputs.append(x)
            skip, skips = skips[-1], skips[:-1]
            x = self._layer(i, torch.cat([x, skip], dim=1), temb, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x
