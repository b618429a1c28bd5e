"""The VAE we build (diffusers AutoencoderKL, sd-vae-ft-mse config) has exactly the official tensors."""

from __future__ import annotations

import json

import torch

from lipsyncctl.checkpoints.keys import compare_state_dict
from lipsyncctl.checkpoints.loaders import SD_VAE_FT_MSE_CONFIG, _vae_init_kwargs, _vae_state_dict
from tests.conftest import shared_path


def _manifest() -> dict:
    return json.loads(shared_path("reference", "sd_vae_ft_mse.json").read_text())


def test_meta_build_matches_the_sd_vae_ft_mse_manifest_exactly() -> None:
    from diffusers import AutoencoderKL

    manifest = _manifest()
    with torch.device("meta"):
        vae = AutoencoderKL(**_vae_init_kwargs(SD_VAE_FT_MSE_CONFIG))
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    assert set(ours) == set(manifest["tensors"]), (
        f"missing {sorted(set(manifest['tensors']) - set(ours))[:5]}, unexpected {sorted(set(ours) - set(manifest['tensors']))[:5]}"
    )
    assert ours == {k: list(v) for k, v in manifest["tensors"].items()}
    assert sum(p.numel() for p in vae.parameters()) == manifest["num_parameters"]


def test_legacy_attention_names_map_onto_the_manifest() -> None:
    """Older VAE files name the mid-block attention query/key/value/proj_attn; they must load strictly."""
    manifest = _manifest()
    assert manifest["legacy_attention_key_aliases"]["to_q"] == "query"
    tensors = {k: torch.empty(s, device="meta") for k, s in manifest["tensors"].items()}
    legacy = {}
    for name, t in tensors.items():
        old = name
        for new_part, old_part in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f".attentions.0.{new_part}." in name:
                old = name.replace(f".attentions.0.{new_part}.", f".attentions.0.{old_part}.")
        legacy[old] = t
    assert sum(".attentions.0.query." in k for k in legacy) == 4  # weight + bias, encoder and decoder mid blocks
    report = compare_state_dict({k: tuple(v.shape) for k, v in tensors.items()},
                                {k: tuple(v.shape) for k, v in _vae_state_dict(legacy).items()})
    assert report.ok, report.summary()
