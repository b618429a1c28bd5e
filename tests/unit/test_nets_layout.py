"""Memory layouts inside the networks follow the official op sequence (issue 9, part 1).

Upstream ends its spatial transformer, its motion module and StableSyncNet's attention block with
``permute(...).contiguous()`` before the output conv / residual add. Without that, the (B*F, C, H, W)
tensors are channels-last views, conv and add keep that layout, and every GroupNorm after the first
transformer runs torch's channels-last CPU kernel, the official code its contiguous one. A GroupNorm
allocates its output in the layout it computed in, so the output strides show which kernel ran.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipsyncctl.nets.attention import Transformer3DModel
from lipsyncctl.nets.motion import VanillaTemporalModule
from lipsyncctl.nets.syncnet import AttentionBlock2D
from lipsyncctl.nets.unet import UNet3DConditionModel
from lipsyncctl.nets.unet_config import MotionModuleConfig, UNetConfig


def standard_strides(t: Tensor) -> tuple[int, ...]:
    return torch.empty(t.shape).stride()


def record_group_norm_outputs(model: nn.Module) -> list[tuple[str, Tensor]]:
    seen: list[tuple[str, Tensor]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.GroupNorm):
            mod.register_forward_hook(lambda m, a, out, name=name: seen.append((name, out)) and None)
    return seen


def test_motion_module_group_norm_gets_the_standard_layout_at_1x1() -> None:
    # As in the UNet: the motion module follows a spatial transformer (the 1x1 deepest level of an 8x8 latent).
    gen = torch.Generator().manual_seed(0)
    transformer = Transformer3DModel(heads=4, channels=32, cross_attention_dim=None, norm_num_groups=8).eval()
    motion = VanillaTemporalModule(32, MotionModuleConfig(num_attention_heads=4)).eval()
    seen = record_group_norm_outputs(motion)
    # Batch 2 (classifier-free guidance): upstream's "b c f h w -> (b f) c h w" is a copy there. (With batch
    # 1 it is a view in both implementations, and at 1x1 both then hand GroupNorm the same ambiguous strides.)
    x = transformer(torch.randn(2, 32, 3, 1, 1, generator=gen))
    motion(x)
    _, out = seen[-1]
    assert out.shape == (6, 32, 1, 1)
    # (C, 1, 1, 1), not the channels-last (C, 1, C, C) that sends it down the other kernel.
    assert out.stride() == standard_strides(out) == (32, 1, 1, 1)


def test_every_per_frame_group_norm_of_the_unet_runs_in_the_standard_layout() -> None:
    cfg = UNetConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
                     attention_head_dim=4, motion_module_kwargs=MotionModuleConfig(num_attention_heads=4))
    model = UNet3DConditionModel(cfg).eval()
    seen = record_group_norm_outputs(model)
    gen = torch.Generator().manual_seed(1)
    for size in (8, 16):
        seen.clear()
        with torch.no_grad():
            model(torch.randn(2, 13, 2, size, size, generator=gen), 501,
                  torch.randn(4, 50, 384, generator=gen))
        per_frame = [(name, out) for name, out in seen if out.dim() == 4]
        assert len(per_frame) == 10 + 12  # spatial transformers (3 + 1 + 6), motion modules (4 + 8)
        bad = [(name, out.stride()) for name, out in per_frame if out.stride() != standard_strides(out)]
        assert not bad, f"{size}x{size}: channels-last GroupNorm in {bad[:3]}"


def test_syncnet_attention_block_hands_conv_out_the_standard_layout() -> None:
    block = AttentionBlock2D(32).eval()
    seen: list[Tensor] = []
    block.conv_out.register_forward_pre_hook(lambda m, args: seen.append(args[0]) and None)
    block(torch.randn(2, 32, 4, 6, generator=torch.Generator().manual_seed(2)))
    assert seen[0].stride() == standard_strides(seen[0])
