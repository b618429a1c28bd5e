"""Golden vector train/6b: one step of the official ``scripts/train_syncnet.py`` (BCE on the cosine of the two
StableSyncNet embeddings, clip 1.0, AdamW lr 1e-5), through the training code's own loss
(:func:`lipsyncctl.training.losses.sync_bce`, :func:`~lipsyncctl.training.losses.syncnet_frames`) and the
same AdamW settings the loop builds, with the sidecar's tolerances."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lipsyncctl.nets.syncnet import StableSyncNet
from lipsyncctl.training.config import TrainOptim
from lipsyncctl.training.losses import sync_bce, syncnet_frames
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"
IO = GOLDEN / "train" / "syncnet_train_io.safetensors"

pytestmark = pytest.mark.skipif(not IO.is_file(), reason=f"golden vector not found: {IO}")


def test_syncnet_train_step_matches_official() -> None:
    config = json.loads((GOLDEN / "stable_syncnet_tiny.json").read_text())["config"]
    net = StableSyncNet(config).train()
    weights = load_file(GOLDEN / "stable_syncnet_tiny_weights_fp16.safetensors")
    net.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    io = load_file(IO)
    strip = np.asarray(Image.open(GOLDEN / "stable_syncnet_tiny_frames.png").convert("RGB"))
    lower = torch.from_numpy(strip.reshape(16, 128, 256, 3).transpose(0, 3, 1, 2).copy())
    frames = torch.zeros(16, 3, 256, 256)
    frames[:, :, 128:] = (lower.float() / 255 - 0.5) / 0.5      # the upper half is cut before the model
    clip = frames.permute(1, 0, 2, 3).unsqueeze(0).expand(2, -1, -1, -1, -1)  # (B, 3, F, H, W)
    visual = syncnet_frames(clip, lower_half=True)
    assert visual.shape == (2, 48, 128, 256)

    opt_cfg = TrainOptim()
    optimizer = torch.optim.AdamW(net.parameters(), lr=opt_cfg.lr, betas=opt_cfg.betas, eps=opt_cfg.eps,
                                  weight_decay=opt_cfg.weight_decay)
    vision, audio = net(visual, io["audio_samples"])
    loss, per_sample = sync_bce(vision, audio, io["y"])
    torch.testing.assert_close(vision, io["vision_embeds"], atol=1e-6, rtol=0)
    torch.testing.assert_close(audio, io["audio_embeds"], atol=1e-6, rtol=0)
    torch.testing.assert_close(per_sample, io["per_sample_loss"], atol=1e-6, rtol=0)
    torch.testing.assert_close(loss.reshape(1), io["loss"], atol=1e-6, rtol=0)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), opt_cfg.max_grad_norm)
    torch.testing.assert_close(norm.reshape(1), io["grad_norm"], atol=0, rtol=1e-5)
    names = dict(net.named_parameters())
    assert len(names) == 248
    # The sidecar's gradient tolerance (atol 5e-6 + rtol 1e-2) holds for all but 34 of 633 248 elements,
    # all in audio_encoder.down_blocks.8 (max 1.1e-5): this tiny net's 1-2-value GroupNorm groups amplify
    # float32 rounding (see the sidecar), and our float32 op order differs from upstream's there. The
    # float64 run of the same code below is within the tolerance everywhere (4.2e-6, the sidecar's own
    # float32-vs-float64 figure), so the mathematics is the official one.
    outside, elements = 0, 0
    for name, p in names.items():
        ref = io[f"grad.{name}"]
        diff = (p.grad - ref).abs()
        outside += int((diff > 5e-6 + 1e-2 * ref.abs()).sum())
        elements += ref.numel()
        assert float(diff.max()) <= 2e-5, name
    assert outside <= 1e-4 * elements
    optimizer.step()
    far, total = 0, 0
    for name, p in names.items():
        diff = (p.detach() - io[f"updated.{name}"]).abs()
        assert float(diff.max()) <= 2.1e-5, name
        far += int((diff > 1e-6).sum())
        total += diff.numel()
    # Adam's first step is about lr * sign(g): a near-zero gradient whose float32 sign differs moves its
    # weight by 2 lr = 2e-5. The sidecar saw 1.2 % such elements against float64; our float32 order gives
    # 2.5 % (the same ill-conditioned tensors as above). Every element stays within 2.1e-5.
    assert far <= 0.03 * total


def test_syncnet_train_gradients_float64_within_tolerance() -> None:
    config = json.loads((GOLDEN / "stable_syncnet_tiny.json").read_text())["config"]
    net = StableSyncNet(config).double().train()
    weights = load_file(GOLDEN / "stable_syncnet_tiny_weights_fp16.safetensors")
    net.load_state_dict({k: v.double() for k, v in weights.items()}, strict=True)
    io = load_file(IO)
    strip = np.asarray(Image.open(GOLDEN / "stable_syncnet_tiny_frames.png").convert("RGB"))
    lower = torch.from_numpy(strip.reshape(16, 128, 256, 3).transpose(0, 3, 1, 2).copy())
    visual = ((lower.double() / 255 - 0.5) / 0.5).reshape(1, 48, 128, 256).expand(2, -1, -1, -1)
    vision, audio = net(visual, io["audio_samples"].double())
    loss, _ = sync_bce(vision.double(), audio.double(), io["y"].double())
    loss.backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad.float(), io[f"grad.{name}"], atol=5e-6, rtol=1e-2, msg=name)
