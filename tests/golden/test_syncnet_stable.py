"""StableSyncNet: official checkpoint layout (meta build vs manifests) and golden vector 6b."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from lipsyncctl.nets.syncnet import StableSyncNet, StableSyncNetConfig, sync_cosine
from tests.conftest import REPO, SHARED

CONFIGS = ["syncnet_16_pixel_attn", "syncnet_16_pixel", "syncnet_16_latent", "syncnet_25_pixel"]


def _manifest(name: str) -> dict:
    path = SHARED / "reference" / f"stable_syncnet_{name}.json"
    if not path.is_file():
        pytest.skip(f"manifest not found: {path}")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_meta_build_matches_manifest(name):
    manifest = _manifest(name)
    config = yaml.safe_load((REPO / "models" / "configs" / "syncnet" / f"{name}.yaml").read_text())["model"]
    with torch.device("meta"):
        net = StableSyncNet(config)
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    expected = manifest["tensors"]
    assert sorted(set(expected) - set(shapes)) == [], "missing"
    assert sorted(set(shapes) - set(expected)) == [], "unexpected"
    assert shapes == expected
    assert len(shapes) == manifest["num_state_dict_entries"]
    assert sum(p.numel() for p in net.parameters()) == manifest["num_parameters"]
    assert list(net.buffers()) == []
    # the yaml's model section is the official one (plus explicit zero attn_blocks where absent)
    official = StableSyncNetConfig.from_dict(manifest["config"])
    assert StableSyncNetConfig.from_dict(config) == official
    assert StableSyncNetConfig.from_dict(official.to_dict()) == official


def test_meta_forward_shapes_of_released_model():
    with torch.device("meta"):
        net = StableSyncNet(_manifest("syncnet_16_pixel_attn")["config"])
        v, a = net(torch.empty(2, 48, 128, 256), torch.empty(2, 1, 80, 52))
    assert v.shape == a.shape == (2, 2048)


def test_missing_attn_blocks_means_none_and_bad_configs_raise():
    cfg = _manifest("syncnet_25_pixel")["config"]
    assert "attn_blocks" not in cfg["audio_encoder"]
    parsed = StableSyncNetConfig.from_dict(cfg)
    assert parsed.audio_encoder.attn_blocks == (0,) * 6 and parsed.embed_dim == 1024
    with pytest.raises(ValueError, match="unknown"):
        StableSyncNetConfig.from_dict({**cfg, "extra": 1})
    bad = {**cfg["audio_encoder"], "downsample_factors": [2, 2]}
    with pytest.raises(ValueError, match="same length"):
        StableSyncNetConfig.from_dict({"audio_encoder": bad, "visual_encoder": cfg["visual_encoder"]})


def test_golden_tiny_forward():
    from PIL import Image
    from safetensors.torch import load_file

    golden = SHARED / "golden"
    if not (golden / "stable_syncnet_tiny.json").is_file():
        pytest.skip(f"golden vector not found under {golden}")
    config = json.loads((golden / "stable_syncnet_tiny.json").read_text())["config"]
    net = StableSyncNet(config).eval()
    weights = load_file(golden / "stable_syncnet_tiny_weights_fp16.safetensors")
    net.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    io = load_file(golden / "stable_syncnet_tiny_io.safetensors")
    strip = np.asarray(Image.open(golden / "stable_syncnet_tiny_frames.png").convert("RGB"))
    frames = torch.from_numpy(strip.reshape(16, 128, 256, 3).transpose(0, 3, 1, 2).copy())
    image = ((frames.float() / 255 - 0.5) / 0.5).reshape(1, 48, 128, 256)  # channel = 3 * frame + rgb
    with torch.inference_mode():
        vision, audio = net(image, io["audio_sequences"])
    torch.testing.assert_close(vision, io["vision_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(audio, io["audio_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(sync_cosine(vision, audio), io["cosine_similarity"], atol=1e-5, rtol=0)
    assert (vision >= 0).all() and torch.allclose(vision.norm(dim=1), torch.ones(1))
