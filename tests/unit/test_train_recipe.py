"""Recipe options of the UNet step beyond the default (LATENTSYNC.md §3.1): the official fallback noise (one draw
repeated over the frames), independent noise, and the sync loss's view of the decoded frames as the sync-loss
SyncNet's own config says (``data.lower_half``, ``data.resolution``); a key added later leaves the stream hash of
earlier runs as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lipsyncctl.checkpoints import archs
from lipsyncctl.errors import ConfigError
from lipsyncctl.training import config as tc
from lipsyncctl.training import noise
from lipsyncctl.training.losses import syncnet_frames, unet_losses


def _g(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_noise_kinds_over_a_samples_frames() -> None:
    shape = (4, 16, 8, 8)
    shared = noise.mixed_noise(shape, 1.0, _g(), kind="shared")
    assert torch.equal(shared, shared[:, :1].expand(shape))  # every frame the same draw
    assert torch.equal(shared[:, 0], torch.randn(shape, generator=_g())[:, 0])  # official: frame 0 of one draw
    iid = noise.mixed_noise(shape, 1.0, _g(), kind="iid")
    assert torch.equal(iid, torch.randn(shape, generator=_g()))
    mixed = noise.mixed_noise(shape, 1.0, _g())
    assert torch.equal(mixed, noise.mixed_noise(shape, 1.0, _g(), kind="mixed"))  # the default stays the golden one
    assert not torch.equal(mixed[:, 0], mixed[:, 1]) and not torch.equal(mixed, iid)


def test_a_key_added_later_leaves_earlier_runs_resumable() -> None:
    base = tc.resolve_train_config("tiny")
    assert "noise" not in _hashed_loss(base)  # at its default: the hash of runs written before the key existed
    shared = tc.resolve_train_config("tiny", ["loss.noise=shared"])
    assert shared.loss.noise == "shared" and shared.stream_hash() != base.stream_hash()
    with pytest.raises(ConfigError):
        tc.resolve_train_config("tiny", ["loss.noise=pink"])


def _hashed_loss(cfg: tc.TrainConfig) -> dict:  # type: ignore[type-arg]
    import hashlib
    import json

    tree = cfg.to_dict()
    for dotted in (*tc.RESUMABLE_CHANGES, *tc.ADDED_LATER):  # every key added later is at its default here
        node = tree
        *head, last = dotted.split(".")
        for k in head:
            node = node[k]
        node.pop(last, None)
    assert hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16] == cfg.stream_hash()
    return tree["loss"]


class _Recorder(torch.nn.Module):
    """A sync-loss SyncNet stand-in: records its visual input, returns unit embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, visual: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(tuple(visual.shape))
        v, a = torch.zeros(visual.shape[0], 8), torch.zeros(visual.shape[0], 8)
        v[:, 0], a[:, :2] = 1.0, 0.5 ** 0.5  # cosine 0.71
        return v * self.w, a


def test_the_sync_loss_sees_the_frames_as_its_syncnet_was_trained(tmp_path: Path) -> None:
    assert archs.syncnet_input_view("syncnet_16_pixel_attn") == (True, 256)  # the released stable_syncnet
    full = tmp_path / "full_face.yaml"
    model = archs.load_config_yaml("syncnet", "syncnet_16_pixel_attn")["model"]
    import yaml

    full.write_text(yaml.safe_dump({"model": model, "data": {"lower_half": False, "resolution": 128}}))
    assert archs.syncnet_input_view(full) == (False, 128)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": model, "data": {"lower_half": "yes"}}))
    with pytest.raises(ConfigError, match="lower_half"):
        archs.syncnet_input_view(bad)

    decoded = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    assert syncnet_frames(decoded).shape == (1, 48, 128, 256)
    assert syncnet_frames(decoded, lower_half=False, size=128).shape == (1, 48, 128, 128)
    weights = tc.resolve_train_config("tiny", ["loss.lpips=0", "loss.trepa=0"]).loss
    pred = torch.zeros(1, 4, 16, 8, 8)
    for view, shape in (((True, 256), (1, 48, 128, 256)), ((False, 128), (1, 48, 128, 128))):
        rec = _Recorder()
        unet_losses(pred_noise=pred, noise=pred, weights=weights, decoded=decoded, gt_frames=decoded,
                    mel=torch.zeros(1, 1, 80, 52), aux={"syncnet": rec}, sync_view=view)
        assert rec.seen == [shape]
