"""LatentSync ``UNet3DConditionModel``: an SD-1.5-shaped UNet over video latents, conditioned on audio.

Input ``(B, 13, F, H, W)`` = ``[noisy latents 4, mask 1, masked-image latents 4, reference latents 4]``,
timestep, and the audio condition (Whisper-tiny features, 50 tokens x 384 per frame); output the
predicted noise ``(B, 4, F, H, W)``. Spatial layers run per frame; motion modules (stage 2) attend
across frames. ``state_dict()`` names and shapes equal the official checkpoints
(``shared/reference/latentsync_unet_*.json``), so ``load_state_dict(ckpt["state_dict"], strict=True)`` works.

Optional DeepCache-style feature caching (Ma et al., "DeepCache", CVPR 2024; the official inference
script enables it with ``cache_interval=3, cache_branch_id=0``): see :class:`UNetFeatureCache`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import InflatedConv3d, video_group_norm
from .unet_blocks import BlockSpec, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D
from .unet_config import UNetConfig


def timestep_embedding(timesteps: Tensor, dim: int, flip_sin_to_cos: bool = True, shift: float = 0.0,
                       max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(N,) -> (N, dim)`` float32; ``[cos, sin]`` halves when ``flip_sin_to_cos``
    (the diffusers ``Timesteps`` convention used by SD-1.5 and LatentSync)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - shift))
    args = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """``linear_1 -> SiLU -> linear_2`` (official key names)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


@dataclass
class UNetFeatureCache:
    """DeepCache state for one sequence of denoising steps (one 16-frame window).

    Set ``refresh = True`` for a full UNet pass that (re)fills the cache; with ``refresh = False`` and a
    filled cache the UNet only recomputes the time embedding, ``conv_in``, the LAST layer of the last up
    block and the output head, reusing the deep feature cached at the last full pass. This equals the
    official DeepCache setup (``cache_branch_id=0``; its unwrapped motion modules recompute the same
    values). The cache is also refreshed whenever the batch/shape changes. Call :meth:`clear` between
    windows. ``partial_steps`` counts the passes that used the cache.
    """

    refresh: bool = True
    feature: Tensor | None = None
    partial_steps: int = 0

    def clear(self) -> None:
        self.feature = None
        self.refresh = True
        self.partial_steps = 0

    def usable(self, x: Tensor) -> bool:
        """Whether a pass on ``x`` (``(B, C, F, H, W)``: the sample, or ``conv_in``'s output, which has its
        batch, frames and size) reuses the cached feature rather than refreshing it."""
        return (not self.refresh and self.feature is not None
                and self.feature.shape[0] == x.shape[0] and self.feature.shape[2:] == x.shape[2:])


class UNet3DConditionModel(nn.Module):
    """The LatentSync UNet built from a :class:`UNetConfig` (see module docstring)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        ch = config.block_out_channels
        temb_dim = ch[0] * 4
        mm = config.motion_module_kwargs
        spec = BlockSpec(
            temb_channels=temb_dim, groups=config.norm_num_groups, eps=config.norm_eps,
            heads=config.attention_head_dim,
            cross_attention_dim=config.cross_attention_dim if config.add_audio_layer else None,
            inflated_groupnorm=config.use_inflated_groupnorm, motion=mm,
        )
        n = len(ch)
        use_mm = config.use_motion_module
        res_ok = set(config.motion_module_resolutions)

        self.conv_in = InflatedConv3d(config.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb_dim)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(config.down_block_types):
            self.down_blocks.append(DownBlock3D(
                spec, config.layers_per_block, ch[i - 1] if i else ch[0], ch[i],
                cross_attn=kind == "CrossAttnDownBlock3D",
                motion=use_mm and 2**i in res_ok and not config.motion_module_decoder_only,
                add_downsample=i < n - 1, downsample_padding=config.downsample_padding,
            ))
        # Registered before mid_block, as upstream, so that state_dict() order matches the checkpoint.
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        for i, kind in enumerate(config.up_block_types):
            self.up_blocks.append(UpBlock3D(
                spec, config.layers_per_block + 1, rev[min(i + 1, n - 1)], rev[i - 1] if i else rev[0], rev[i],
                cross_attn=kind == "CrossAttnUpBlock3D",
                motion=use_mm and 2 ** (n - 1 - i) in res_ok,
                add_upsample=i < n - 1,
            ))
        self.mid_block = UNetMidBlock3DCrossAttn(
            spec, ch[-1], motion=use_mm and config.motion_module_mid_block,
            output_scale_factor=config.mid_block_scale_factor,
        )
        self.conv_norm_out = video_group_norm(config.norm_num_groups, ch[0], config.norm_eps,
                                              config.use_inflated_groupnorm)
        self.conv_out = InflatedConv3d(ch[0], config.out_channels, kernel_size=3, padding=1)
        # Upstream zero-initialises the input and output convolutions (training starts from SD-1.5 weights).
        for conv in (self.conv_in, self.conv_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    # ------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each resnet / transformer / motion module in the backward pass (training only)."""
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            block.gradient_checkpointing = enabled

    def _time_embedding(self, timestep: Tensor | float | int, batch: int, dtype: torch.dtype) -> Tensor:
        t = torch.as_tensor(timestep, device=self.device)
        if t.dim() == 0:
            t = t[None]
        t = t.expand(batch)
        emb = timestep_embedding(t, self.config.block_out_channels[0], self.config.flip_sin_to_cos,
                                 self.config.freq_shift)
        return self.time_embedding(emb.to(dtype))

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor | None = None,
        *,
        cache: UNetFeatureCache | None = None,
    ) -> Tensor:
        """Predict the noise.

        Args:
            sample: ``(B, in_channels, F, H, W)``; H and W multiples of ``2**(levels-1)`` (8 officially).
            timestep: scalar, ``()`` or ``(1,)`` / ``(B,)`` tensor of diffusion timesteps.
            encoder_hidden_states: audio condition ``(B*F, 50, 384)`` (row = b*F + f) or
                ``(B, F, 50, 384)``; None skips the audio cross-attention.
            cache: optional :class:`UNetFeatureCache` for DeepCache-style partial steps.

        Returns:
            ``(B, out_channels, F, H, W)`` in the model dtype.
        """
        if sample.dim() != 5:
            raise ValueError(f"sample must be (B, C, F, H, W), got shape {tuple(sample.shape)}")
        b, _, f, h, w = sample.shape
        limit = self.config.num_frames_max
        if limit is not None and f > limit:
            raise ValueError(f"{f} frames per call exceed the motion modules' limit of {limit}")
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        sample = sample.to(self.dtype)
        context = None if encoder_hidden_states is None else encoder_hidden_states.to(self.dtype)
        temb = self._time_embedding(timestep, b, sample.dtype)

        x = self.conv_in(sample)
        last = self.up_blocks[-1]
        if cache is not None and cache.usable(x):
            assert cache.feature is not None
            x = last(cache.feature, (x,), temb, context, start_layer=len(last.resnets) - 1)
            cache.partial_steps += 1
        else:
            skips: tuple[Tensor, ...] = (x,)
            for block in self.down_blocks:
                x, block_skips = block(x, temb, context)
                skips += block_skips
            x = self.mid_block(x, temb, context)
            for i, block in enumerate(self.up_blocks):
                k = len(block.resnets)
                block_skips, skips = skips[-k:], skips[:-k]
                size = tuple(skips[-1].shape[-2:]) if i < len(self.up_blocks) - 1 else None
                inputs: list[Tensor] | None = [] if (cache is not None and block is last) else None
                x = block(x, block_skips, temb, context, size, layer_inputs=inputs)
                if inputs:
                    assert cache is not None
                    cache.feature = inputs[-1]
                    cache.refresh = False
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return x
