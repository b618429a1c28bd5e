"""StableSyncNet: LatentSync's training-time lip-sync discriminator (``stable_syncnet.pt``).

Two convolutional towers (``visual_encoder``, ``audio_encoder``) of the same ``DownEncoder2D`` shape,
each ending in GroupNorm -> ReLU -> flatten -> L2 normalisation, so the embeddings are non-negative
unit vectors and their cosine similarity lies in ``[0, 1]`` (the sync loss is BCE on it).
State-dict names and shapes equal the official checkpoints (``shared/reference/stable_syncnet_*.json``).

Inputs (official configs):
- visual: ``(B, 3 * F, H, W)`` in ``[-1, 1]``, channel ``3 * frame + rgb`` (``b f c h w -> b (f c) h w``);
  pixel configs take the lower half of 256 aligned faces (``48 x 128 x 256`` for 16 frames);
  the latent config takes ``16 x 4`` VAE latents (``64 x 32 x 32``).
- audio: ``(B, 1, 80, M)`` Wav2Lip-style mel windows (``M = 52`` for 16 frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lipsyncctl.nets.arch_config import AT_LEAST_1, Bounds, normalize_fields

Factor = int | tuple[int, int]

_GROUPS = 32  # the official DownEncoder2D hard-codes 32 groups
_EPS = 1e-6
_ATTN_HEADS = 8


@dataclass(frozen=True)
class DownEncoderConfig:
    """One tower. ``downsample_factors[i]`` is an int or an ``(h, w)`` pair; ``attn_blocks[i]`` adds an
    attention block after level ``i`` (0 or 1). Fields are type- and range-checked as UNet configs are
    (:func:`~lipsyncctl.nets.unet_config.normalize_fields`: a numeric string is read as its number)."""

    in_channels: int
    block_out_channels: tuple[int, ...]
    downsample_factors: tuple[Factor, ...]
    attn_blocks: tuple[int, ...]
    dropout: float = 0.0

    BOUNDS: ClassVar[dict[str, Bounds]] = {
        "in_channels": AT_LEAST_1, "block_out_channels": AT_LEAST_1, "downsample_factors": AT_LEAST_1,
        "attn_blocks": Bounds(0, 1), "dropout": Bounds(0, 1),
    }

    def __post_init__(self) -> None:
        normalize_fields(self, self.BOUNDS)
        n = len(self.block_out_channels)
        if len(self.downsample_factors) != n or len(self.attn_blocks) != n:
            raise ValueError(
                "block_out_channels, downsample_factors and attn_blocks must have the same length, got "
                f"{n}, {len(self.downsample_factors)}, {len(self.attn_blocks)}"
            )
        bad = [c for c in self.block_out_channels if c % _GROUPS]
        if bad:
            raise ValueError(f"block_out_channels must be multiples of {_GROUPS}, got {bad}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DownEncoderConfig:
        """From the official yaml section; a missing ``attn_blocks`` means no attention (as for
        ``syncnet_25_pixel.yaml``, which the official class cannot build). Unknown or missing key, wrong
        type or value out of range -> ValueError naming the key."""
        if not isinstance(d, Mapping):
            raise ValueError(f"expected a mapping, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown encoder config keys: {sorted(unknown)}")
        missing = [k for k in ("in_channels", "block_out_channels", "downsample_factors") if k not in d]
        if missing:
            raise ValueError(f"{missing[0]}: missing")
        kw = dict(d)
        if "attn_blocks" not in kw and isinstance(kw["block_out_channels"], (list, tuple)):
            kw["attn_blocks"] = [0] * len(kw["block_out_channels"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "block_out_channels": list(self.block_out_channels),
            "downsample_factors": [list(f) if isinstance(f, tuple) else f for f in self.downsample_factors],
            "attn_blocks": list(self.attn_blocks),
            "dropout": self.dropout,
        }


@dataclass(frozen=True)
class StableSyncNetConfig:
    """Architecture of a StableSyncNet: the ``model:`` section of an official syncnet yaml."""

    audio_encoder: DownEncoderConfig
    visual_encoder: DownEncoderConfig

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StableSyncNetConfig:
        """From the ``model:`` section of an official syncnet yaml; errors name the key
        (``audio_encoder: in_channels: expected an integer, got True (bool)``)."""
        unknown = set(d) - {"audio_encoder", "visual_encoder"}
        if unknown:
            raise ValueError(f"unknown StableSyncNet config keys: {sorted(unknown)}")
        towers = {}
        for name in ("audio_encoder", "visual_encoder"):
            if name not in d:
                raise ValueError(f"{name}: missing")
            try:
                towers[name] = DownEncoderConfig.from_dict(d[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        return cls(**towers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio_encoder": self.audio_encoder.to_dict(),
            "visual_encoder": self.visual_encoder.to_dict(),
        }

    @property
    def embed_dim(self) -> int:
        return self.visual_encoder.block_out_channels[-1]


class ResnetBlock2D(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> dropout -> conv3x3, plus a 1x1 shortcut when the width
    changes; then, if ``factor != 1``, a zero pad and a strided 3x3 conv (no padding)."""

    def __init__(self, in_channels: int, out_channels: int, factor: Factor, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_GROUPS, in_channels, eps=_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_GROUPS, out_channels, eps=_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.factor = factor
        if factor != 1:
            # F.pad order (left, right, top, bottom). The official code pads one extra row/column on
            # the side that is not strided so the output keeps that size (e.g. 80x52 -> 40x52).
            if isinstance(factor, tuple) and factor[0] == 1:
                self.pad = (0, 1, 1, 1)
            elif isinstance(factor, tuple) and factor[1] == 1:
                self.pad = (1, 1, 0, 1)
            else:
                self.pad = (0, 1, 0, 1)
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, 3, stride=factor, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        h = h + skip
        if self.factor != 1:
            h = self.downsample_conv(F.pad(h, self.pad, value=0.0))
        return h


class _SelfAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v (diffusers ``Attention`` naming: to_q/k/v, to_out.0)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (
            proj(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        for layer in self.to_out:
            out = layer(out)
        return out


class _GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class _FeedForward(nn.Module):
    """GEGLU feed-forward with 4x inner width (diffusers ``FeedForward`` naming: net.0.proj, net.2)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(_GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionBlock2D(nn.Module):
    """GN -> 1x1 conv -> tokens; ``h + attn(LN(h))``; ``h + FF(LN(h))``; 1x1 conv; ``+ x``."""

    def __init__(self, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        # Registration order follows the official state dict.
        self.norm1 = nn.GroupNorm(_GROUPS, channels, eps=_EPS)
        self.norm2 = nn.LayerNorm(channels)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = _FeedForward(channels, dropout)
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1)
        self.attn = _SelfAttention(channels, _ATTN_HEADS, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.conv_in(self.norm1(x))
        h = h.flatten(2).transpose(1, 2)  # (b, h*w, c)
        h = h + self.attn(self.norm2(h))
        h = h + self.ff(self.norm3(h))
        # ``.contiguous()`` as upstream (a no-op here: the residual adds above keep h in (b, c, h*w) memory
        # order); it keeps conv_out and later GroupNorms off the channels-last kernels if that order changes.
        h = h.transpose(1, 2).reshape(b, c, height, width).contiguous()
        return self.conv_out(h) + x


class DownEncoder2D(nn.Module):
    """``conv_in`` -> per level a ResnetBlock2D (optionally followed by an AttentionBlock2D, which takes
    its own index in ``down_blocks``) -> GN -> ReLU. Output ``(B, C_last, h, w)``.

    ``gradient_checkpointing``: recompute each block of ``down_blocks`` in the backward pass (whenever
    gradients are recorded, also in eval mode: the frozen sync-loss SyncNet of UNet training passes
    gradients to the decoded frames; dropout draws are replayed, so the gradients are unchanged)."""

    gradient_checkpointing: bool = False

    def __init__(self, config: DownEncoderConfig) -> None:
        super().__init__()
        channels = config.block_out_channels
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        prev = channels[0]
        for out, factor, attn in zip(channels, config.downsample_factors, config.attn_blocks, strict=True):
            blocks.append(ResnetBlock2D(prev, out, factor, config.dropout))
            if attn:
                blocks.append(AttentionBlock2D(out, config.dropout))
            prev = out
        self.down_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(_GROUPS, prev, eps=_EPS)
        self.act_fn_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.act_fn_out(self.norm_out(x))


class StableSyncNet(nn.Module):
    """``forward(image_sequences, audio_sequences) -> (vision_embeds, audio_embeds)``, each ``(B, C)``,
    L2-normalised and non-negative (``C`` = last ``block_out_channels``: 2048 for the released model).

    The towers must reduce their input to 1x1 spatially (true for the official input sizes).
    """

    def __init__(self, config: StableSyncNetConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, StableSyncNetConfig):
            config = StableSyncNetConfig.from_dict(config)
        self.config = config
        self.audio_encoder = DownEncoder2D(config.audio_encoder)
        self.visual_encoder = DownEncoder2D(config.visual_encoder)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block of both towers in the backward pass (activation memory of one block per
        tower instead of all; about one more forward of compute)."""
        self.audio_encoder.gradient_checkpointing = enabled
        self.visual_encoder.gradient_checkpointing = enabled

    def embed_vision(self, image_sequences: torch.Tensor) -> torch.Tensor:
        """``(B, 3F, H, W)`` -> ``(B, C)`` unit vectors."""
        x = self.visual_encoder(image_sequences)
        return F.normalize(x.reshape(x.shape[0], -1), p=2, dim=1)

    def embed_audio(self, audio_sequences: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 80, M)`` -> ``(B, C)`` unit vectors."""
        x = self.audio_encoder(audio_sequences)
        return F.normalize(x.reshape(x.shape[0], -1), p=2, dim=1)

    def forward(
        self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_vision(image_sequences), self.embed_audio(audio_sequences)


def sync_cosine(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(B,)`` of two embedding batches (what the official sync loss consumes)."""
    return F.cosine_similarity(vision_embeds, audio_embeds)
