"""VideoMAE-v2's fine-tuning ViT, as LatentSync's TREPA loss uses it (LATENTSYNC.md §3.1 step 7).

The official class is ``VisionTransformer`` of ``latentsync/trepa/third_party/VideoMAEv2/
videomaev2_finetune.py``, built by ``vit_giant_patch14_224(num_classes=174, all_frames=16, tubelet_size=2,
use_mean_pooling=True)`` and loaded strictly from ``vit_g_hybrid_pt_1200e_ssv2_ft.pth`` (ViT-g/14,
fine-tuned on Something-Something v2). Re-implemented here in torch alone with the official names:

``patch_embed.proj``
    ``Conv3d(3, D, kernel = stride = (tubelet, patch, patch))``: ``(B, 3, T, H, W)`` ->
    ``(B, N, D)`` tokens, ``N = T/tubelet * (H/patch) * (W/patch)`` (8 x 16 x 16 = 2048 for ViT-g).
``blocks.N``
    pre-norm transformer blocks: ``norm1 -> attn -> +``, ``norm2 -> mlp (fc1, GELU, fc2) -> +``. The
    attention's ``qkv`` Linear has no bias; the bias is ``cat(q_bias, 0, v_bias)`` (no key bias), then
    ``scaled_dot_product_attention`` (scale ``1/sqrt(head_dim)``) and ``proj``.
``fc_norm``
    LayerNorm of the token mean (``use_mean_pooling``); the official ``norm`` is then an identity.
``head``
    Linear to the 174 SSv2 classes (in the checkpoint; TREPA does not use it).

The position embedding is the fixed sinusoid table of "Attention is all you need" (``pos_embed``), a plain
tensor attribute in the official class and therefore NOT in the checkpoint; here it is a non-persistent
buffer. LayerNorms use eps 1e-6 (``partial(nn.LayerNorm, eps=1e-6)``). Drop-path (0.3 in the official
builder) and dropouts act only in training; TREPA runs the network in eval mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.checkpoint import checkpoint

from lipsyncctl.nets.arch_config import ABOVE_0, AT_LEAST_1, check_keys, normalize_fields


@dataclass(frozen=True)
class VideoMAEConfig:
    """Architecture of the VideoMAE-v2 ViT; the defaults are ``vit_giant_patch14_224`` as TREPA builds it.

    ``mlp_ratio`` is kept as the official float (48/11): the hidden width is ``int(embed_dim * mlp_ratio)``,
    6144 for ViT-g and 139 for the 32-wide tiny model.
    """

    img_size: int = 224
    patch_size: int = 14
    in_chans: int = 3
    num_classes: int = 174
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 48 / 11
    qkv_bias: bool = True
    num_frames: int = 16
    tubelet_size: int = 2
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        normalize_fields(self, {**{f.name: AT_LEAST_1 for f in dataclasses.fields(self) if f.type == "int"},
                                "mlp_ratio": ABOVE_0, "norm_eps": ABOVE_0})  # (the one checker of architecture configs)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.img_size % self.patch_size or self.num_frames % self.tubelet_size:
            raise ValueError("img_size must be a multiple of patch_size and num_frames of tubelet_size")

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid ``(T / tubelet, H / patch, W / patch)``."""
        side = self.img_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoMAEConfig:
        check_keys(dict(d), {f.name for f in dataclasses.fields(cls)}, "VideoMAE config")
        return cls(**d)


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """``(1, n_position, dim)`` float32: ``pos / 10000^(2*(j//2)/dim)``, sin on even ``j``, cos on odd
    (computed in float64 like the official numpy code, then rounded once)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angles = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32).unsqueeze(0)


class PatchEmbed(nn.Module):
    """Tubelet embedding: ``(B, C, T, H, W)`` -> ``(B, N, D)``."""

    def __init__(self, cfg: VideoMAEConfig) -> None:
        super().__init__()
        self.img_size = cfg.img_size
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) != (self.img_size, self.img_size):
            raise ValueError(f"input frames are {h}x{w}, the model expects {self.img_size}x{self.img_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with ``q_bias`` / ``v_bias`` and no key bias."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None and self.v_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (no layer scale: the official ``init_values`` is 0)."""

    def __init__(self, cfg: VideoMAEConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """VideoMAE-v2 ViT with mean pooling (the official names; see the module docstring).

    Attributes:
        gradient_checkpointing: recompute each block in the backward pass (the official ``with_cp``);
            saves activation memory when gradients flow to the input (TREPA on the fake clip).
    """

    pos_embed: torch.Tensor

    def __init__(self, config: VideoMAEConfig | None = None) -> None:
        super().__init__()
        cfg = config or VideoMAEConfig()
        self.config = cfg
        self.gradient_checkpointing = False
        self.patch_embed = PatchEmbed(cfg)
        self.register_buffer("pos_embed", sinusoid_table(math.prod(cfg.grid), cfg.embed_dim), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)

    def position_embedding(self, frames: int) -> torch.Tensor:
        """The table for ``frames`` input frames ``(1, N, D)``. At the configured frame count it is the
        table itself; otherwise the official ``interpolate_pos_encoding``: trilinear along time with
        ``scale_factor = (t + 0.1) / T`` (``t`` tubelets given, ``T`` configured)."""
        t_cfg, gh, gw = self.config.grid
        t = frames // self.config.tubelet_size
        if t == t_cfg:
            return self.pos_embed
        dim = self.pos_embed.shape[-1]
        grid = self.pos_embed.permute(0, 2, 1).reshape(1, dim, t_cfg, gh, gw)
        grid = F.interpolate(grid, scale_factor=((t + 0.1) / t_cfg, 1, 1), mode="trilinear")
        return grid.reshape(1, dim, -1).permute(0, 2, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: ``x`` ``(B, C, T, H, W)`` clips in [0, 1] at ``img_size`` (TREPA: no ImageNet norm).
        Returns ``(B, D)``: ``fc_norm`` of the token mean."""
        tokens = self.patch_embed(x)
        pos = self.position_embedding(x.shape[2]).to(device=tokens.device, dtype=tokens.dtype)
        tokens = tokens + pos.detach()
        for blk in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(blk, tokens, use_reentrant=False)
            else:
                tokens = blk(tokens)
        return self.fc_norm(tokens.mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, num_classes)`` class logits."""
        return self.head(self.forward_features(x))
