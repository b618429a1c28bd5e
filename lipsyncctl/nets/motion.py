"""AnimateDiff "Vanilla" motion module: self-attention across frames at every pixel.

Structure (official key names): ``temporal_transformer.{norm, proj_in, transformer_blocks.N.
{attention_blocks.K.{to_q,to_k,to_v,to_out.0,pos_encoder.pe}, norms.K, ff, ff_norm}, proj_out}``.
GroupNorm uses 32 groups and eps 1e-6 whatever the UNet's ``norm_num_groups`` (as upstream), computed in two
passes (:class:`TwoPassGroupNorm`, same parameters and names as ``nn.GroupNorm``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attention import Attention, FeedForward
from .resnet import batch_to_frames, frames_to_batch
from .unet_config import MotionModuleConfig


class TwoPassGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` computed as ``(x - mean) * rsqrt(var + eps) * weight + bias`` (statistics in float32
    at least), instead of torch's fused ``x * scale + (bias - mean * scale)``.

    Why: at small latents the motion modules of a narrow level see groups of very few values (one value per
    group at a 1x1 level of 32 channels: the golden tiny configs at an 8x8 latent). Their variance is ~0, the
    scale ``weight / sqrt(eps)`` is ~1000 x weight, and the fused form leaves ``ulp(1000 |x|)`` of float32
    error (~2e-4, and ~4e-2 after a 5-step guided loop) where the exact result is ``bias``; subtracting the
    mean first is exact there. For ordinary groups both forms agree to float32 rounding (the golden vectors
    pass either way), so this is more accurate than upstream, never less. State dict: identical.
    """

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        grouped = work.reshape(n, self.num_groups, -1)
        mean = grouped.mean(-1, keepdim=True)
        centred = grouped - mean
        var = centred.square().mean(-1, keepdim=True)
        y = (centred * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            shape = (1, c) + (1,) * (x.dim() - 2)
            y = y * self.weight.to(y.dtype).view(shape) + self.bias.to(y.dtype).view(shape)
        return y.to(x.dtype)


def sinusoidal_position_table(max_len: int, dim: int) -> Tensor:
    """``(1, max_len, dim)`` float32: even channels ``sin(p * w_i)``, odd channels ``cos(p * w_i)``,
    ``w_i = 10000^(-2i/dim)`` (the transformer encoding of Vaswani et al.)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds ``pe[:, :F]`` to ``x (N, F, dim)``. ``pe`` is a persistent buffer (it is in the checkpoint)."""

    pe: Tensor

    def __init__(self, dim: int, max_len: int = 24, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_position_table(max_len, dim), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the temporal position encoding length {self.pe.shape[1]}")
        return self.dropout(x + self.pe[:, : x.shape[1]].to(x.dtype))


class TemporalAttention(Attention):
    """Self-attention over the frame axis: ``x (B*F, D, C)`` (D = h*w tokens per frame) -> same shape."""

    def __init__(self, dim: int, heads: int, pos_encoding: bool, max_len: int, dropout: float = 0.0) -> None:
        super().__init__(dim, heads, dropout=dropout)
        self.pos_encoder = PositionalEncoding(dim, max_len, dropout) if pos_encoding else None

    def forward(self, x: Tensor, num_frames: int) -> Tensor:  # type: ignore[override]
        bf, d, c = x.shape
        b = bf // num_frames
        seq = x.reshape(b, num_frames, d, c).transpose(1, 2).reshape(b * d, num_frames, c)
        if self.pos_encoder is not None:
            seq = self.pos_encoder(seq)
        out = super().forward(seq)
        return out.reshape(b, d, num_frames, c).transpose(1, 2).reshape(bf, d, c)


class TemporalTransformerBlock(nn.Module):
    """For each temporal attention: ``x = attn(LN(x)) + x``; then ``x = ff(LN(x)) + x``. ``x (B*F, D, C)``."""

    def __init__(self, dim: int, heads: int, cfg: MotionModuleConfig) -> None:
        super().__init__()
        n = len(cfg.attention_block_types)
        self.attention_blocks = nn.ModuleList([
            TemporalAttention(dim, heads, cfg.temporal_position_encoding, cfg.temporal_position_encoding_max_len)
            for _ in range(n)
        ])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attn(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """GN (per frame) -> Linear proj_in -> temporal blocks -> Linear proj_out -> + input."""

    def __init__(self, channels: int, cfg: MotionModuleConfig) -> None:
        super().__init__()
        heads = cfg.num_attention_heads
        dim = channels // cfg.temporal_attention_dim_div
        self.norm = TwoPassGroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, dim)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(dim, heads, cfg) for _ in range(cfg.num_transformer_block)]
        )
        self.proj_out = nn.Linear(dim, channels)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, F, H, W) -> (B, C, F, H, W)``.

        The op sequence and its memory layouts follow upstream (AnimateDiff's ``TemporalTransformer3DModel``):
        the residual is the per-frame ``(B*F, C, H, W)`` tensor, the output goes back to that layout with
        ``.contiguous()`` before the residual add, then is viewed as ``(B, C, F, H, W)``. Leaving it as a
        ``(B, F, H, W, C)``-ordered view instead makes every later 4-D tensor channels-last, and CPU
        GroupNorm then takes its channels-last kernel, which upstream does not.
        """
        b, c, f, h, w = x.shape
        residual = frames_to_batch(x)  # (B*F, C, H, W), row = b*F + f
        hidden = self.norm(residual)
        hidden = self.proj_in(hidden.permute(0, 2, 3, 1).reshape(b * f, h * w, c))
        for block in self.transformer_blocks:
            hidden = block(hidden, f)
        hidden = self.proj_out(hidden)
        hidden = hidden.reshape(b * f, h, w, c).permute(0, 3, 1, 2).contiguous()
        return batch_to_frames(hidden + residual, f)


class VanillaTemporalModule(nn.Module):
    """One motion module; ``proj_out`` starts at zero (``zero_initialize``) so a fresh module is an identity."""

    def __init__(self, channels: int, cfg: MotionModuleConfig) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(channels, cfg)
        if cfg.zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal_transformer(x)
