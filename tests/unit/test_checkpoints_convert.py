"""`models convert` round trips and `models info` detection (tiny models; full-size configs on meta)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lipsyncctl.checkpoints import io, loaders
from lipsyncctl.checkpoints.convert import convert_checkpoint
from lipsyncctl.checkpoints.info import detect_kind, inspect_checkpoint, match_config
from lipsyncctl.errors import CheckpointError, ConfigError, UsageError
from tests.conftest import shared_path

DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
        "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}


@pytest.fixture(scope="module")
def tiny_unet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    from lipsyncctl.checkpoints.archs import load_unet_config
    from lipsyncctl.nets.unet import UNet3DConditionModel

    model = UNet3DConditionModel(load_unet_config("tiny"))
    g = torch.Generator().manual_seed(11)
    sd = {k: torch.randn(v.shape, generator=g) if not k.endswith("pos_encoder.pe") else v
          for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("unet") / "latentsync_unet.pt"
    torch.save({"state_dict": sd, "global_step": 42}, path)
    return path, sd


def test_unet_round_trip_fp32_and_fp16(tiny_unet_file, tmp_path: Path) -> None:
    src, sd = tiny_unet_file
    res = convert_checkpoint(src, tmp_path / "u.safetensors", config="tiny")
    assert res.kind == "unet" and res.config_name == "tiny" and res.num_tensors == len(sd)
    header = io.read_checkpoint(res.output).lipsyncctl_header
    assert header["kind"] == "unet" and header["global_step"] == 42 and header["config"]["block_out_channels"] == [32] * 4
    a = loaders.load_unet("tiny", src)
    b = loaders.load_unet(None, res.output)  # config from the header
    assert a.config == b.config
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)

    half = convert_checkpoint(src, tmp_path / "u16.safetensors", config="tiny", fp16=True)
    assert half.size_bytes < res.size_bytes * 0.6
    ck = io.read_checkpoint(half.output)
    pe = [k for k in ck.state_dict if k.endswith("pos_encoder.pe")]
    assert pe and all(ck.state_dict[k].dtype == torch.float32 for k in pe)
    assert ck.state_dict["conv_in.weight"].dtype == torch.float16
    c = loaders.load_unet(None, half.output, dtype=torch.float32)
    torch.testing.assert_close(c.conv_in.weight, sd["conv_in.weight"].half().float(), atol=0, rtol=0)

    # Converting a converted file again (zero-copy views of one mapping) also works.
    again = convert_checkpoint(res.output, tmp_path / "u2.safetensors")
    assert again.config_name == "tiny"
    assert io.read_checkpoint(again.output).state_dict.keys() == ck.state_dict.keys()


def test_convert_refusals(tiny_unet_file, tmp_path: Path) -> None:
    src, _ = tiny_unet_file
    out = tmp_path / "u.safetensors"
    convert_checkpoint(src, out, config="tiny")
    with pytest.raises(UsageError, match="exists"):
        convert_checkpoint(src, out, config="tiny")
    with pytest.raises(UsageError, match="refusing to overwrite the input"):
        convert_checkpoint(out, out, overwrite=True)
    with pytest.raises(UsageError, match=".safetensors"):
        convert_checkpoint(src, tmp_path / "u.pt", config="tiny")
    # Tiny tensors match none of the official configs: no guessing.
    with pytest.raises(ConfigError, match="none of the official unet configs") as e:
        convert_checkpoint(src, tmp_path / "x.safetensors")
    assert "--config tiny" in (e.value.hint or "") and "stage2_efficient" in (e.value.hint or "")  # the names taken
    # A strict mismatch writes nothing.
    from lipsyncctl.checkpoints.archs import load_unet_config

    stage1 = dict(load_unet_config("tiny").to_dict(), use_motion_module=False)
    with pytest.raises(CheckpointError, match="nothing was written|unexpected"):
        convert_checkpoint(src, tmp_path / "y.safetensors", config=stage1)
    assert not (tmp_path / "y.safetensors").exists()
    # A damaged archive (bit rot in a tensor's data: torch loads it, its CRC fails) is refused, as verify refuses it:
    # converted, its garbage would sit in a file with no CRC
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0xFF for b in data[middle:middle + 4096])
    (tmp_path / "rot.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged archive: member .* fails its CRC check"):
        convert_checkpoint(tmp_path / "rot.pt", tmp_path / "rot.safetensors", config="tiny")
    assert not (tmp_path / "rot.safetensors").exists()
    # a destination that cannot be written fails before the source is read, naming it (not a hidden temporary)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError) as err:
        convert_checkpoint(src, tmp_path / "afile" / "x.safetensors", config="tiny")
    assert err.value.filename == str(tmp_path / "afile")
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="cannot tell"):
        convert_checkpoint(tmp_path / "odd.pt", tmp_path / "z.safetensors")


def test_whisper_round_trip_drops_decoder(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    enc = load_file(str(shared_path("golden", "whisper_tiny_encoder_fp16.safetensors")))
    sd = dict(enc, **{"decoder.token_embedding.weight": torch.zeros(3, 384, dtype=torch.float16)})
    torch.save({"dims": DIMS, "model_state_dict": sd}, tmp_path / "tiny.pt")
    res = convert_checkpoint(tmp_path / "tiny.pt", tmp_path / "w.safetensors")
    assert res.kind == "whisper" and res.num_tensors == len(enc)
    ck = io.read_checkpoint(res.output)
    assert ck.lipsyncctl_header["config"] == DIMS
    assert not any(k.startswith("decoder.") for k in ck.state_dict)
    a = loaders.load_whisper_encoder(tmp_path / "tiny.pt", dtype=torch.float32)
    b = loaders.load_whisper_encoder(res.output, dtype=torch.float32)
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(a(mel), b(mel))
    info = inspect_checkpoint(tmp_path / "tiny.pt")
    assert (info.kind, info.config, info.container) == ("whisper", "tiny", "openai-whisper")


def test_vae_syncnets_round_trip(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from tests.unit.test_checkpoints_loaders import TINY_VAE

    vae = AutoencoderKL(**TINY_VAE)
    vae.save_pretrained(str(tmp_path / "vae"))
    res = convert_checkpoint(tmp_path / "vae", tmp_path / "vae.safetensors", fp16=True)
    assert res.kind == "vae"
    loaded = loaders.load_vae(res.output, dtype=torch.float32)
    assert loaded.config.block_out_channels == tuple(TINY_VAE["block_out_channels"]) or \
        list(loaded.config.block_out_channels) == TINY_VAE["block_out_channels"]
    torch.testing.assert_close(loaded.encoder.conv_in.weight, vae.encoder.conv_in.weight.half().float(), atol=0, rtol=0)

    cfg = json.loads(shared_path("golden", "stable_syncnet_tiny.json").read_text())["config"]
    sn = load_file(str(shared_path("golden", "stable_syncnet_tiny_weights_fp16.safetensors")))
    torch.save({"state_dict": sn}, tmp_path / "stable_syncnet.pt")
    res = convert_checkpoint(tmp_path / "stable_syncnet.pt", tmp_path / "sn.safetensors", config=cfg)
    net = loaders.load_stable_syncnet(None, res.output)
    assert net.config.to_dict() == cfg

    ev = load_file(str(shared_path("golden", "syncnet_eval_weights_fp16.safetensors")))
    torch.save(ev, tmp_path / "syncnet_v2.model")
    res = convert_checkpoint(tmp_path / "syncnet_v2.model", tmp_path / "ev.safetensors")
    assert res.kind == "syncnet-eval"
    ev_net = loaders.load_syncnet_eval(res.output)
    assert torch.equal(ev_net.netfclip[0].weight, ev["netfclip.0.weight"])


def test_info_summarises_an_official_style_file(tiny_unet_file) -> None:
    src, sd = tiny_unet_file
    info = inspect_checkpoint(src)
    assert info.kind == "unet" and info.container == "state_dict" and info.format == "torch-zip"
    assert info.num_tensors == len(sd) and info.num_elements == sum(t.numel() for t in sd.values())
    assert info.dtypes == {"float32": len(sd)}
    assert info.config == "none of the official configs"
    assert info.metadata["global_step"] == 42
    assert json.loads(json.dumps(info.to_dict()))["kind"] == "unet"


@pytest.mark.parametrize(
    ("manifest", "kind", "expected"),
    [
        ("latentsync_unet_stage2_512.json", "unet", "stage2"),
        ("latentsync_unet_stage2_efficient.json", "unet", "stage2_efficient"),
        ("latentsync_unet_stage1.json", "unet", "stage1"),
        ("stable_syncnet_syncnet_16_pixel_attn.json", "stable-syncnet", "syncnet_16_pixel_attn"),
        ("stable_syncnet_syncnet_16_latent.json", "stable-syncnet", "syncnet_16_latent"),
        ("whisper_tiny.json", "whisper", None),
        ("sd_vae_ft_mse.json", "vae", None),
        ("syncnet_v2_eval.json", "syncnet-eval", None),
    ],
)
def test_full_size_detection_from_manifests(manifest: str, kind: str, expected: str | None) -> None:
    """Kind and official config of the real checkpoints, from their manifests (meta tensors, no weights)."""
    tensors = json.loads(shared_path("reference", manifest).read_text())["tensors"]
    fake = {k: torch.empty(s, device="meta") for k, s in tensors.items()}
    assert detect_kind(fake) == kind
    if expected is not None:
        assert match_config(kind, fake) == expected
