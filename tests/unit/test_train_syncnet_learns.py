"""A tiny StableSyncNet learns a synthetic audio-visual correlation through the training step's own loss
(:func:`lipsyncctl.training.step.syncnet_micro_step`: BCE on the cosine) and AdamW with clipping, as the loop
runs it; a control with shuffled labels stays at chance (the accuracy comes from the correlation, not from
the labels' statistics)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from lipsyncctl.nets.syncnet import StableSyncNet
from lipsyncctl.training.networks import TrainNetworks
from lipsyncctl.training.step import syncnet_micro_step

#: a small StableSyncNet of the official layout (16 frames x 3 channels at 8 x 16, a 16 x 16 "mel"); both
#: towers end at 32 channels on 4 x 4 maps, so the final GroupNorms see 16 values per group (at 1 x 1 maps a
#: 32-group norm outputs a constant: such a net cannot learn, see golden/train README vector 6b)
CONFIG = {
    "audio_encoder": {"in_channels": 1, "block_out_channels": [32, 32, 32],
                      "downsample_factors": [2, 2, 1], "attn_blocks": [0, 1, 0]},
    "visual_encoder": {"in_channels": 48, "block_out_channels": [32, 32, 32],
                       "downsample_factors": [[1, 2], 2, 1], "attn_blocks": [0, 1, 0]},
}
BITS = 4
STEPS = 150


def batch(gen: torch.Generator, n: int, *, shuffle_labels: bool = False) -> dict[str, torch.Tensor]:
    """Each item has a code of BITS bits: the frames show it as bright/dark column stripes that move with
    the frame index, the mel as loud/quiet frequency bands; a negative pairs the frames with another code."""
    codes = torch.randint(0, 2, (n, BITS), generator=gen).float()
    labels = torch.randint(0, 2, (n,), generator=gen).float()
    other = (codes + torch.randint(1, 2**BITS, (n, 1), generator=gen).bitwise_and(
        torch.tensor([1 << i for i in range(BITS)])).clamp(max=1)) % 2  # differs in at least one bit
    audio_codes = torch.where(labels[:, None] > 0, codes, other)
    stripes = codes.repeat_interleave(16 // BITS, dim=1)                       # (n, 16) columns
    frames = stripes[:, None, None, :].expand(n, 48, 8, 16) * 1.6 - 0.8
    frames = frames + 0.3 * torch.randn(frames.shape, generator=gen)
    bands = audio_codes.repeat_interleave(16 // BITS, dim=1)                   # (n, 16) mel bins
    mel = bands[:, None, :, None].expand(n, 1, 16, 16) * 4 - 2 + 0.5 * torch.randn((n, 1, 16, 16), generator=gen)
    if shuffle_labels:
        labels = labels[torch.randperm(n, generator=gen)]
    return {"frames": frames, "mel": mel, "label": labels}


def train_and_score(*, shuffle_labels: bool) -> float:
    torch.manual_seed(0)  # the module's own init draws from the global RNG; fixed for a stable test
    net = StableSyncNet(CONFIG).train()
    nets = TrainNetworks(model=net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        loss, _ = syncnet_micro_step(nets, batch(gen, 16, shuffle_labels=shuffle_labels), device=torch.device("cpu"),
                                     autocast=contextlib.nullcontext)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    net.eval()
    test = batch(torch.Generator().manual_seed(99), 256)
    with torch.no_grad():
        _, cos = syncnet_micro_step(nets, test, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    return float(((cos > 0.5).float() == test["label"]).float().mean())


@pytest.mark.slow  # opt-in (-m slow): keeps the default suite under 10 min
def test_tiny_syncnet_learns_correlation_and_shuffled_control_stays_at_chance() -> None:
    learned = train_and_score(shuffle_labels=False)
    control = train_and_score(shuffle_labels=True)
    assert learned > 0.9, learned
    assert 0.35 < control < 0.65, control
