"""StableSyncNet gradient checkpointing (``run.grad_checkpointing``): the gradients of the weights and of
the input equal the non-checkpointed ones, for the trained network (train mode, with dropout: its draws are
replayed in the recompute) and for the frozen sync-loss network of UNet training (eval mode, gradients to
the decoded frames only); the flag reaches both through :func:`enable_gradient_checkpointing`."""

from __future__ import annotations

import torch

from lipsyncctl.nets.syncnet import StableSyncNet, sync_cosine
from lipsyncctl.training.config import resolve_train_config
from lipsyncctl.training.losses import sync_bce
from lipsyncctl.training.networks import TrainNetworks, enable_gradient_checkpointing

#: the official layout, small: attention in both towers, dropout on (its draws must be replayed)
CONFIG = {
    "audio_encoder": {"in_channels": 1, "block_out_channels": [32, 32, 64],
                      "downsample_factors": [2, [2, 1], 2], "attn_blocks": [0, 1, 0], "dropout": 0.2},
    "visual_encoder": {"in_channels": 48, "block_out_channels": [32, 32, 64],
                       "downsample_factors": [[1, 2], 2, 2], "attn_blocks": [0, 1, 0], "dropout": 0.2},
}


def grads(net: StableSyncNet, *, train: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """(loss, weight gradients, input gradient) of one BCE step on a fixed batch with a fixed dropout seed."""
    g = torch.Generator().manual_seed(3)
    frames = (torch.rand((2, 48, 16, 32), generator=g) * 2 - 1).requires_grad_(True)
    mel = torch.randn((2, 1, 32, 16), generator=g)
    label = torch.tensor([1.0, 0.0])
    net.train(train)
    net.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        vision, audio = net(frames, mel)
        loss, _ = sync_bce(vision, audio, label)
        loss.backward()
    weights = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), weights, frames.grad.clone()


def test_checkpointed_gradients_equal_the_plain_ones() -> None:
    torch.manual_seed(0)
    net = StableSyncNet(CONFIG)
    for train in (True, False):
        loss0, w0, x0 = grads(net, train=train)
        net.enable_gradient_checkpointing()
        assert net.visual_encoder.gradient_checkpointing and net.audio_encoder.gradient_checkpointing
        loss1, w1, x1 = grads(net, train=train)
        net.enable_gradient_checkpointing(False)
        assert torch.equal(loss0, loss1)
        assert w0.keys() == w1.keys() and len(w0) == len(list(net.parameters()))
        for k in w0:
            torch.testing.assert_close(w1[k], w0[k], rtol=1e-5, atol=1e-7, msg=k)
        torch.testing.assert_close(x1, x0, rtol=1e-5, atol=1e-7)
    # dropout is really on in train mode: another seed gives another loss
    net.train()
    frames, mel = torch.zeros((1, 48, 16, 32)), torch.ones((1, 1, 32, 16))
    torch.manual_seed(1)
    a = sync_cosine(*net(frames, mel))
    torch.manual_seed(2)
    assert not torch.equal(a, sync_cosine(*net(frames, mel)))


def test_the_run_setting_reaches_the_trained_and_the_frozen_syncnet() -> None:
    cfg = resolve_train_config("tiny-syncnet", ["run.grad_checkpointing=true"])
    nets = TrainNetworks(model=StableSyncNet(CONFIG))
    enable_gradient_checkpointing(nets, cfg)
    assert nets.model.visual_encoder.gradient_checkpointing and nets.model.audio_encoder.gradient_checkpointing
    off = TrainNetworks(model=StableSyncNet(CONFIG))
    enable_gradient_checkpointing(off, resolve_train_config("tiny-syncnet", ["run.grad_checkpointing=false"]))
    assert not off.model.visual_encoder.gradient_checkpointing
    # UNet training: the frozen sync-loss StableSyncNet is checkpointed with the UNet
    from lipsyncctl.training.memory import random_train_networks

    unet_cfg = resolve_train_config("tiny", ["run.grad_checkpointing=true"])
    frozen = random_train_networks(unet_cfg, "cpu", torch.float32)
    assert frozen.aux["syncnet"].visual_encoder.gradient_checkpointing
    assert frozen.aux["videomae"].gradient_checkpointing


def test_a_non_finite_embedding_gives_a_nan_loss_for_the_guard_not_an_error() -> None:
    # NaN frames of a diverged step made binary_cross_entropy raise (a device-side assert on a GPU): the run's
    # NaN/Inf guard never saw the step, and the stage-2 recipe (sync loss on) died as an internal error
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    vision, audio = torch.rand((3, 8), generator=g).requires_grad_(True), torch.rand((3, 8), generator=g)
    labels = torch.tensor([1.0, 0.0, 1.0])
    loss, per_sample = sync_bce(vision, audio, labels)
    expected = F.binary_cross_entropy(sync_cosine(vision, audio), labels, reduction="none")
    assert torch.equal(per_sample, expected) and torch.equal(loss, expected.mean())  # finite: bit for bit
    poisoned = vision.detach().clone()
    poisoned[1] = float("nan")
    loss, per_sample = sync_bce(poisoned.requires_grad_(True), audio, labels)
    assert torch.isnan(loss) and torch.isnan(per_sample[1]) and torch.equal(per_sample[[0, 2]], expected[[0, 2]])
    poisoned = vision.detach().clone()
    poisoned[0] = float("inf")
    assert not torch.isfinite(sync_bce(poisoned, audio, labels)[0])
