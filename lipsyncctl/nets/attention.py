"""Attention, GEGLU feed-forward and the per-frame spatial transformer (``Transformer3DModel``).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (default scale
``1/sqrt(head_dim)``, as upstream), so flash / memory-efficient kernels are used where available.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import batch_to_frames, frames_to_batch


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v and a biased output projection (``to_out.0``).

    ``x (N, Lq, dim)``, ``context (N, Lk, context_dim)`` or None (self-attention) -> ``(N, Lq, dim)``.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        context_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        n, lq, dim = x.shape
        h = self.heads

        def split(t: Tensor) -> Tensor:  # (N, L, dim) -> (N, heads, L, dim/heads)
            return t.reshape(n, t.shape[1], h, dim // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        )
        out = out.transpose(1, 2).reshape(n, lq, dim)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """``proj`` to 2*inner, then ``value * gelu(gate)`` (exact erf GELU)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP with a 4x hidden width: ``net = [GEGLU, Dropout, Linear]`` (official key names)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-LN block: self-attention, audio cross-attention (``attn2``, optional), GEGLU feed-forward.

    ``x (N, L, dim)``, ``context (N, Lc, cross_dim)`` -> ``(N, L, dim)``. ``attn2`` is skipped when
    ``context`` is None (as upstream).
    """

    def __init__(self, dim: int, heads: int, cross_attention_dim: int | None, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dropout=dropout)
        if cross_attention_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, context_dim=cross_attention_dim, dropout=dropout)
        else:
            self.norm2 = None
            self.attn2 = None
        self.ff = FeedForward(dim, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and context is not None:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Spatial transformer applied to every frame: GN -> 1x1 conv -> blocks over h*w tokens -> 1x1 conv -> +x.

    ``x (B, C, F, H, W)``; ``context`` is the audio condition, either ``(B*F, L, D)`` (row = b*F + f, used
    as is) or ``(B, F, L, D)`` (flattened to that) -> ``(B, C, F, H, W)``.
    """

    def __init__(
        self,
        heads: int,
        channels: int,
        cross_attention_dim: int | None,
        num_layers: int = 1,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, cross_attention_dim, dropout) for _ in range(num_layers)]
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        b, c, f, h, w = x.shape
        if context is not None:
            if context.dim() == 4:
                context = context.reshape(-1, *context.shape[2:])
            if context.shape[0] != b * f:
                raise ValueError(f"audio condition has {context.shape[0]} rows, expected B*F = {b * f}")
        residual = frames_to_batch(x)
        hidden = self.proj_in(self.norm(residual))
        hidden = hidden.permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        # ``.contiguous()`` as upstream: proj_out (and everything downstream) then sees the standard layout,
        # not a channels-last view (see motion.TemporalTransformer3DModel.forward).
        hidden = hidden.reshape(b * f, h, w, c).permute(0, 3, 1, 2).contiguous()
        return batch_to_frames(self.proj_out(hidden) + residual, f)
