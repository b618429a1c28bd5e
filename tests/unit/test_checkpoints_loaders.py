"""The public loaders, on tiny models saved in the official containers (and the golden tiny weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lipsyncctl.checkpoints import io, loaders
from lipsyncctl.errors import CheckpointError, ConfigError, MissingModelError
from tests.conftest import shared_path

TINY_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 8,
    "block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2, "sample_size": 32,
}


def _randomized(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
        for k, v in model.state_dict().items()
    }


# ---------------------------------------------------------------------------------------------- UNet


def test_golden_unet_weights_load_and_reproduce_forward(tmp_path: Path) -> None:
    """Official key names in an official container -> load_unet -> the golden stage2 forward."""
    from safetensors.torch import load_file

    weights = load_file(str(shared_path("golden", "unet_tiny_weights.safetensors")))
    meta = json.loads(shared_path("golden", "unet_forward.json").read_text())
    io_ = load_file(str(shared_path("golden", "unet_forward_io.safetensors")))
    chunks = load_file(str(shared_path("golden", "whisper_features.safetensors")))["chunks_0_15"]
    ckpt = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "global_step": 7}, ckpt)

    unet = loaders.load_unet(meta["variants"]["unet_stage2_tiny"]["config"], ckpt, dtype=torch.float32)
    assert not unet.training
    assert all(p.dtype == torch.float32 for p in unet.parameters())
    cond = torch.cat([torch.zeros_like(chunks), chunks]).float()
    with torch.inference_mode():
        out = unet(io_["sample"], io_["timestep"], encoder_hidden_states=cond)
    torch.testing.assert_close(out, io_["noise_pred_stage2"], atol=1e-4, rtol=1e-4)


def test_unet_by_name_dtype_and_mismatch_report(tmp_path: Path) -> None:
    from lipsyncctl.checkpoints.archs import load_unet_config
    from lipsyncctl.nets.unet import UNet3DConditionModel

    ref = UNet3DConditionModel(load_unet_config("tiny"))
    sd = _randomized(ref, 1)
    torch.save({"state_dict": sd}, tmp_path / "u.pt")
    unet = loaders.load_unet("tiny", tmp_path / "u.pt", dtype=torch.bfloat16)
    assert unet.conv_in.weight.dtype == torch.bfloat16
    assert torch.equal(unet.conv_in.weight, sd["conv_in.weight"].to(torch.bfloat16))

    # A stage-1 style config (no motion modules) against this stage-2 checkpoint: readable refusal.
    stage1 = dict(load_unet_config("tiny").to_dict(), use_motion_module=False)
    with pytest.raises(CheckpointError) as err:
        loaders.load_unet(stage1, tmp_path / "u.pt")
    assert "unexpected" in str(err.value) and "motion_modules" in str(err.value)
    assert "stage2" in err.value.hint

    with pytest.raises(ConfigError, match="carries none"):
        loaders.load_unet(None, tmp_path / "u.pt")
    with pytest.raises(MissingModelError):
        loaders.load_unet("tiny", tmp_path / "absent.pt")


# ---------------------------------------------------------------------------------------------- Whisper


def test_whisper_encoder_from_openai_container_ignores_decoder(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lipsyncctl.checkpoints.whisper import encoder_from_openai

    enc = load_file(str(shared_path("golden", "whisper_tiny_encoder_fp16.safetensors")))
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
            "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}
    sd = dict(enc)
    sd["decoder.token_embedding.weight"] = torch.zeros(4, 384, dtype=torch.float16)  # ignored
    torch.save({"dims": dims, "model_state_dict": sd}, tmp_path / "tiny.pt")

    model = loaders.load_whisper_encoder(tmp_path / "tiny.pt", dtype=torch.float32)
    ref = encoder_from_openai({"dims": dims, "model_state_dict": enc}, dtype=torch.float32)
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(model(mel), ref(mel), atol=0, rtol=0)
    assert model(mel).shape == (1, 5, 1500, 384)

    torch.save({"state_dict": enc}, tmp_path / "not_whisper.pt")
    with pytest.raises(CheckpointError, match="not an openai-whisper checkpoint"):
        loaders.load_whisper_encoder(tmp_path / "not_whisper.pt")


# ---------------------------------------------------------------------------------------------- VAE


def _tiny_vae_weights(seed: int) -> dict[str, torch.Tensor]:
    from diffusers import AutoencoderKL

    return _randomized(AutoencoderKL(**TINY_VAE), seed)


def test_vae_folder_with_legacy_attention_names(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    sd = _tiny_vae_weights(2)
    legacy = {}
    for k, v in sd.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            k = k.replace(f"mid_block.attentions.0.{new}.", f"mid_block.attentions.0.{old}.")
        legacy[k] = v
    assert "encoder.mid_block.attentions.0.query.weight" in legacy
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2",
                                                    **TINY_VAE}))
    torch.save(legacy, folder / "diffusion_pytorch_model.bin")
    vae = loaders.load_vae(folder)
    assert vae.config.scaling_factor == 0.18215 and vae.config.shift_factor == 0.0
    ref = AutoencoderKL(**TINY_VAE)
    ref.load_state_dict(sd)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(vae.encode(x).latent_dist.mean, ref.eval().encode(x).latent_dist.mean)


def test_vae_single_file_uses_sd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "SD_VAE_FT_MSE_CONFIG", TINY_VAE)
    sd = _tiny_vae_weights(4)
    io.write_safetensors(tmp_path / "vae.safetensors", sd)
    vae = loaders.load_vae(tmp_path / "vae.safetensors")
    assert torch.equal(vae.decoder.conv_out.weight, sd["decoder.conv_out.weight"])
    monkeypatch.undo()
    # The real sd-vae-ft-mse architecture does not fit these tiny weights: strict refusal, no guessing.
    with pytest.raises(CheckpointError, match="shape mismatch"):
        loaders.load_vae(tmp_path / "vae.safetensors")


# ---------------------------------------------------------------------------------------------- SyncNets


def test_stable_syncnet_wrapped_and_plain(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lipsyncctl.nets.syncnet import StableSyncNet

    cfg = json.loads(shared_path("golden", "stable_syncnet_tiny.json").read_text())["config"]
    sd = {k: v.float() if v.is_floating_point() else v
          for k, v in load_file(str(shared_path("golden", "stable_syncnet_tiny_weights_fp16.safetensors"))).items()}
    torch.save({"state_dict": sd, "global_step": 3, "train_loss_list": [0.7]}, tmp_path / "wrapped.pt")
    torch.save(sd, tmp_path / "plain.pt")
    ref = StableSyncNet(cfg)
    ref.load_state_dict(sd)
    ref.eval()
    frames = torch.randn(2, 48, 128, 256, generator=torch.Generator().manual_seed(5))
    for name in ("wrapped.pt", "plain.pt"):
        net = loaders.load_stable_syncnet(cfg, tmp_path / name)
        with torch.inference_mode():
            torch.testing.assert_close(net.embed_vision(frames), ref.embed_vision(frames), atol=0, rtol=0)
    wrong = json.loads(json.dumps(cfg))
    wrong["visual_encoder"]["in_channels"] = 64
    with pytest.raises(CheckpointError, match="shape mismatch") as err:
        loaders.load_stable_syncnet(wrong, tmp_path / "plain.pt")
    assert "syncnet config" in err.value.hint


def test_stable_syncnet_config_by_name_matches_manifest() -> None:
    cfg, label = loaders.resolve_syncnet_config("syncnet_16_pixel_attn")
    manifest = json.loads(shared_path("reference", "stable_syncnet_syncnet_16_pixel_attn.json").read_text())
    assert label == "syncnet_16_pixel_attn"
    assert cfg.to_dict() == manifest["config"]


def test_syncnet_eval_flat_file_without_batchnorm_counters(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(shared_path("golden", "syncnet_eval_weights_fp16.safetensors")))
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(sd)
    torch.save(old, tmp_path / "syncnet_v2.model")
    net = loaders.load_syncnet_eval(tmp_path / "syncnet_v2.model", dtype=torch.float32)
    assert net.netcnnaud[0].weight.dtype == torch.float32
    assert torch.equal(net.netcnnaud[0].weight, sd["netcnnaud.0.weight"].float())
    assert all(int(b) == 0 for n, b in net.named_buffers() if n.endswith("num_batches_tracked"))
    report = loaders.check_checkpoint("syncnet-eval", tmp_path / "syncnet_v2.model")
    assert report.ok
