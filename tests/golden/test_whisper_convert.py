"""OpenAI-layout whisper checkpoints -> transformers WhisperEncoder (key map, strict loading)."""

from __future__ import annotations

import json

import pytest
import torch

from lipsyncctl.checkpoints.whisper import convert_openai_whisper, encoder_from_dims, encoder_from_openai
from lipsyncctl.errors import CheckpointError
from lipsyncctl.nets.whisper import build_whisper_encoder
from tests.conftest import SHARED

MANIFEST = SHARED / "reference" / "whisper_tiny.json"

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"manifest not found: {MANIFEST}")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _meta_checkpoint(manifest: dict) -> dict:
    """A full official tiny checkpoint (encoder + decoder names and shapes) on the meta device."""
    state = {
        k: torch.empty(shape, dtype=torch.float16, device="meta") for k, shape in manifest["tensors"].items()
    }
    return {"dims": manifest["config"], "model_state_dict": state}


def test_converted_keys_equal_hf_encoder(manifest):
    ckpt = _meta_checkpoint(manifest)
    config, state = convert_openai_whisper(ckpt["model_state_dict"], ckpt["dims"])
    with torch.device("meta"):
        encoder = build_whisper_encoder(config)
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    n_encoder_entries = sum(k.startswith("encoder.") for k in manifest["tensors"])
    assert len(state) == n_encoder_entries == 67
    n_params = sum(p.numel() for p in encoder.parameters())
    # HF keeps the sinusoids as an (frozen) Embedding parameter; openai as a buffer
    pos = 1500 * 384
    assert n_params - pos == manifest["encoder_num_parameters"]


def test_loads_meta_checkpoint_strictly(manifest):
    enc = encoder_from_openai(_meta_checkpoint(manifest), device="meta")
    assert enc.num_hidden_states == 5 and enc.n_ctx == 1500 and enc.d_model == 384
    assert all(p.dtype == torch.float32 for p in enc.parameters())


def test_random_checkpoint_roundtrip_through_torch_save(tmp_path):
    gen = torch.Generator().manual_seed(1)
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 32, "n_audio_head": 2, "n_audio_layer": 2}
    source = encoder_from_dims(dims)
    # write it back in OpenAI names by inverting the map on a random state dict
    from lipsyncctl.checkpoints.whisper import _openai_key_to_hf

    openai_names = [
        "encoder.conv1.weight",
        "encoder.conv1.bias",
        "encoder.conv2.weight",
        "encoder.conv2.bias",
        "encoder.positional_embedding",
        "encoder.ln_post.weight",
        "encoder.ln_post.bias",
    ]
    for b in range(2):
        for part in (
            "attn.query.weight",
            "attn.query.bias",
            "attn.key.weight",
            "attn.value.weight",
            "attn.value.bias",
            "attn.out.weight",
            "attn.out.bias",
            "attn_ln.weight",
            "attn_ln.bias",
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.2.weight",
            "mlp.2.bias",
            "mlp_ln.weight",
            "mlp_ln.bias",
        ):
            openai_names.append(f"encoder.blocks.{b}.{part}")
    hf_state = source.encoder.state_dict()
    ckpt = {
        "dims": dims,
        "model_state_dict": {
            n: torch.randn(hf_state[_openai_key_to_hf(n)].shape, generator=gen).half() for n in openai_names
        }
        | {"decoder.token_embedding.weight": torch.zeros(3, 3)},
    }
    path = tmp_path / "tiny.pt"
    torch.save(ckpt, path)
    enc = encoder_from_openai(torch.load(path, weights_only=True))
    loaded = enc.encoder.state_dict()
    for name in openai_names:
        torch.testing.assert_close(loaded[_openai_key_to_hf(name)], ckpt["model_state_dict"][name].float())
    mel = torch.randn(1, 80, 3000, generator=gen)
    with torch.inference_mode():
        out = enc(mel)
    assert out.shape == (1, 3, 1500, 32) and torch.isfinite(out).all()


def test_rejects_bad_containers(manifest):
    with pytest.raises(CheckpointError):
        encoder_from_openai({"state_dict": {}})
    ckpt = _meta_checkpoint(manifest)
    del ckpt["model_state_dict"]["encoder.blocks.0.attn.query.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        encoder_from_openai(ckpt, device="meta")
    ckpt = _meta_checkpoint(manifest)
    ckpt["model_state_dict"]["encoder.blocks.0.attn.rotary"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unknown"):
        encoder_from_openai(ckpt, device="meta")
    with pytest.raises(ValueError):
        encoder_from_dims(manifest["config"])(torch.zeros(1, 80, 300))
