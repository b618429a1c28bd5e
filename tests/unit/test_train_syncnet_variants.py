"""The other official StableSyncNet recipes: ``syncnet_16_latent`` (VAE latents of whole faces) and
``syncnet_25_pixel`` (25-frame windows). Their presets carry the official data settings and fit their
networks; tiny variants of both train through the real loop on a curated folder (the latent one resumes bit
for bit: its VAE noise is drawn per sample), and the latent input is the VAE posterior sample x 0.18215,
encode then crop, independent of the batch it is in."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from lipsyncctl import api
from lipsyncctl.checkpoints import archs
from lipsyncctl.checkpoints.loaders import VAE_SCALING_FACTOR
from lipsyncctl.errors import ConfigError
from lipsyncctl.training import config as tc
from lipsyncctl.training import data as td
from lipsyncctl.training.networks import check_input_channels, load_train_networks
from lipsyncctl.training.step import (
    syncnet_latent_draws,
    syncnet_micro_step,
    syncnet_visual_input,
)
from tests.train_media import Curated, curated_folder


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Curated:
    return curated_folder(tmp_path_factory.mktemp("train-syncnet-variants"))


@pytest.mark.parametrize("name", ["syncnet_16_latent", "syncnet_25_pixel"])
def test_official_presets_carry_the_official_data_settings(name: str) -> None:
    cfg = tc.resolve_train_config(name)
    official = archs.load_config_yaml("syncnet", name)["data"]
    assert cfg.kind == "syncnet" and cfg.model.syncnet_config == name and cfg.model.init == "none"
    assert (cfg.data.num_frames, cfg.data.batch_size, cfg.data.val_samples, cfg.data.lower_half,
            cfg.data.latent_space, cfg.model.resolution) == (
        official["num_frames"], official["batch_size"], official["num_val_samples"], official["lower_half"],
        official["latent_space"], official["resolution"])
    assert cfg.optim.lr == 1e-5 and cfg.optim.max_grad_norm == 1.0 and cfg.run.seed == 42
    check_input_channels(cfg)
    assert td.mel_columns(cfg.data.num_frames) == {16: 52, 25: 80}[cfg.data.num_frames]


def test_frames_that_do_not_fit_the_network_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="takes 75 visual channels, the run feeds 48") as e:
        check_input_channels(tc.resolve_train_config("syncnet_25_pixel", ["data.num_frames=16"]))
    assert e.value.exit_code == 3 and "syncnet_25_pixel" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="takes 64 visual channels, the run feeds 48"):
        check_input_channels(tc.resolve_train_config("syncnet_16_latent", ["data.latent_space=false"]))
    # more frames than the motion modules' position encoding holds (24): an internal error mid-step
    with pytest.raises(ConfigError, match="data.num_frames 40: UNet tiny's motion modules take at most 24 frames"):
        check_input_channels(tc.resolve_train_config("tiny", ["data.num_frames=40"]))
    check_input_channels(tc.resolve_train_config("tiny-stage1", ["data.num_frames=40"]))  # (no motion modules)
    # faces smaller than the SyncNet's view ran out of pixels in its downsampling: an internal error mid-step
    for preset, size in (("tiny-syncnet", 64), ("tiny-syncnet", 128), ("tiny-syncnet-latent", 128)):
        with pytest.raises(ConfigError, match=f"model.resolution {size}: StableSyncNet .* takes 256 px faces") as e:
            check_input_channels(tc.resolve_train_config(preset, [f"model.resolution={size}"]))
        assert e.value.exit_code == 3 and "--set model.resolution=256" in e.value.hint
    with pytest.raises(ConfigError, match="SyncNet runs"):
        check_input_channels(tc.resolve_train_config("tiny", ["data.latent_space=true"]))


def test_latent_input_is_the_scaled_posterior_sample_per_sample(curated: Curated) -> None:
    cfg = tc.resolve_train_config("tiny-syncnet-latent")
    nets = load_train_networks(cfg, torch.device("cpu"), torch.float32)
    assert nets.vae is not None and nets.files["vae"]
    dataset = td.make_dataset(cfg, td.read_clips(curated.data, kind="syncnet", num_frames=16))
    assert dataset[0]["frames"].shape == (48, 256, 256)  # whole faces: the crop (if any) is on the latents
    batch = td.collate([dataset[k] for k in (5, 6)])
    x = syncnet_visual_input(nets, batch, cfg, torch.device("cpu"))
    assert x.shape == (2, 64, 32, 32)
    # sample 6 alone gives its row of the batch (its noise is its own), and the row is mean + std * eps
    alone = syncnet_visual_input(nets, td.collate([dataset[6]]), cfg, torch.device("cpu"))
    torch.testing.assert_close(alone[0], x[1], rtol=1e-5, atol=1e-6)
    frame3 = batch["frames"][1].reshape(16, 3, 256, 256)[3:4]
    eps = syncnet_latent_draws([6], seed=cfg.run.seed, frames=16, latent_hw=(32, 32))[0, 3]
    with torch.no_grad():
        dist = nets.vae.encode(frame3).latent_dist
    torch.testing.assert_close(x[1, 12:16], ((dist.mean + dist.std * eps) * VAE_SCALING_FACTOR)[0], rtol=1e-5, atol=1e-6)
    assert not torch.equal(x[1, 12:16], (dist.mean * VAE_SCALING_FACTOR)[0])  # a sample, not the mode
    # lower_half crops the latents after the encode (official order)
    half = tc.resolve_train_config("tiny-syncnet-latent", ["data.lower_half=true"])
    torch.testing.assert_close(syncnet_visual_input(nets, batch, half, torch.device("cpu")), x[:, :, 16:])
    loss, cos = syncnet_micro_step(nets, batch, device=torch.device("cpu"), autocast=contextlib.nullcontext, cfg=cfg)
    assert torch.isfinite(loss) and cos.shape == (2,)


def _losses(run: Path) -> list[float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return [float(v) for _, name, v in rows if name == "loss"]


@pytest.mark.slow  # opt-in (-m slow): 35-65 s; keeps the default suite under 10 min
def test_tiny_latent_syncnet_trains_and_resumes_bit_for_bit(curated: Curated, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lipsyncctl.checkpoints.loaders import load_stable_syncnet

    cfg = api.resolve_train_config("tiny-syncnet-latent", ["run.validate_every=4"])
    straight = api.train(curated.data, tmp_path / "a", cfg)
    assert straight.kind == "syncnet" and straight.steps == 4 and len(_losses(tmp_path / "a")) == 4
    assert all(torch.isfinite(torch.tensor(_losses(tmp_path / "a"))))
    assert {"loss", "accuracy"} <= set(straight.validation) and straight.validation["samples"] == 4
    half = api.resolve_train_config("tiny-syncnet-latent", ["run.validate_every=4", "run.max_steps=2"])
    api.train(curated.data, tmp_path / "b", half)
    api.train(curated.data, tmp_path / "b", cfg, resume="latest")
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
    wa, wb = (load_file(tmp_path / r / "export" / "syncnet.safetensors") for r in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the export is a tiny_latent StableSyncNet the strict loader reads (both layouts)
    exports = straight.export
    for path in exports.values():
        load_stable_syncnet(archs.load_syncnet_config("tiny_latent"), path)


def test_tiny_25_frame_syncnet_trains(curated: Curated, tmp_path: Path) -> None:
    cfg = api.resolve_train_config("tiny-syncnet-25", ["run.max_steps=2"])
    clips = td.read_clips(curated.data, kind="syncnet", num_frames=25)
    assert {c.frames for c in clips.clips} >= {100, 64} and all(s.frames < 50 for s in clips.skipped)
    item = td.make_dataset(cfg, clips)[0]
    assert item["frames"].shape == (75, 128, 256) and item["mel"].shape == (1, 80, 80)
    result = api.train(curated.data, tmp_path / "r", cfg)
    assert result.steps == 2 and len(_losses(tmp_path / "r")) == 2 and result.skipped_clips == len(clips.skipped)
