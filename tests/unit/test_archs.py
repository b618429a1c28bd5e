"""Architecture configs: one resolver for every kind (unet, syncnet), with hints naming that kind's configs;
validated with types and ranges when loaded (ConfigError naming the file and the key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsyncctl.checkpoints import archs
from lipsyncctl.checkpoints.archs import config_path, load_config_yaml, load_unet_config
from lipsyncctl.checkpoints.loaders import resolve_syncnet_config
from lipsyncctl.errors import ConfigError
from lipsyncctl.nets.unet_config import UNetConfig
from tests.conftest import REPO


def test_unknown_names_list_the_configs_of_their_own_kind() -> None:
    with pytest.raises(ConfigError) as unet:
        load_unet_config("stage9")
    assert "stage2_512" in unet.value.hint and "syncnet" not in unet.value.hint
    with pytest.raises(ConfigError) as sync:
        resolve_syncnet_config("nope")
    assert "syncnet_16_pixel_attn" in sync.value.hint and "stage2" not in sync.value.hint


def test_names_and_paths_resolve_to_the_same_document(tmp_path) -> None:
    by_name = load_config_yaml("syncnet", "syncnet_16_latent")
    path = config_path("syncnet", "syncnet_16_latent")
    assert load_config_yaml("syncnet", path) == by_name
    assert resolve_syncnet_config(path)[1] == resolve_syncnet_config("syncnet_16_latent")[1] == "syncnet_16_latent"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping") as err:
        load_config_yaml("syncnet", bad)
    assert "models info" in err.value.hint and "presets" not in err.value.hint  # not a preset's hint
    with pytest.raises(ConfigError, match="config file not found"):
        config_path("unet", tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------------
# Validation at load time: types, ranges, unknown keys (ConfigError naming the file and the key)

TINY_YAML = REPO / "models" / "configs" / "unet" / "tiny.yaml"


def _tiny_yaml(tmp_path: Path, old: str, new: str, name: str = "unet.yaml") -> Path:
    """``tiny.yaml`` with the line ``old`` replaced by ``new`` (YAML text, as an editor would write it)."""
    text = TINY_YAML.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / name
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_a_string_eps_is_read_as_a_number_and_the_unet_runs(tmp_path: Path) -> None:
    import torch
    import yaml

    from lipsyncctl.checkpoints.loaders import load_unet
    from lipsyncctl.checkpoints.tiny import tiny_unet_state_dict

    path = _tiny_yaml(tmp_path, "norm_eps: 1.0e-5", "norm_eps: 1e-05")
    assert yaml.safe_load(path.read_text())["model"]["norm_eps"] == "1e-05"  # YAML 1.1: no dot, a string
    torch.save({"state_dict": tiny_unet_state_dict(torch.Generator().manual_seed(0))}, tmp_path / "u.pt")
    unet = load_unet(path, tmp_path / "u.pt")
    eps = {m.eps for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert eps and all(isinstance(e, float) for e in eps) and 1e-5 in eps
    with torch.no_grad():
        out = unet(torch.zeros(1, 13, 2, 8, 8), 1, torch.zeros(2, 50, 384))
    assert out.shape == (1, 4, 2, 8, 8)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("norm_eps: 1.0e-5", "norm_eps: 0", "norm_eps: must be > 0, got 0"),
    ("norm_eps: 1.0e-5", "norm_eps: -1.0e-5", "norm_eps: must be > 0"),
    ("norm_eps: 1.0e-5", "norm_eps: .nan", "norm_eps: expected a finite number"),
    ("norm_eps: 1.0e-5", "norm_eps: tiny", "norm_eps: expected a number, got 'tiny'"),
    ("layers_per_block: 1", "layers_per_block: 0", "layers_per_block: must be >= 1, got 0"),
    ("layers_per_block: 1", "layers_per_block: true", "layers_per_block: expected an integer, got True (bool)"),
    ("layers_per_block: 1", "layers_per_block: 1.5", "layers_per_block: expected an integer, got 1.5"),
    ("layers_per_block: 1", "layers_per_block: '1.5'", "layers_per_block: expected an integer, got '1.5'"),
    ("block_out_channels: [32, 32, 32, 32]", "block_out_channels: [32, -32, 32, 32]", "block_out_channels[1]"),
    ("use_motion_module: true", "use_motion_module: 1", "use_motion_module: expected true or false"),
    ("act_fn: silu", "act_fn: 1", "act_fn: expected a string"),
    ("num_attention_heads: 4", "num_attention_heads: 0", "motion_module_kwargs.num_attention_heads: must be >= 1"),
    ("norm_eps: 1.0e-5", "norm_epsilon: 1.0e-5", "unknown key 'norm_epsilon'"),
])
def test_bad_unet_values_are_config_errors_naming_file_and_key(tmp_path: Path, old: str, new: str,
                                                              message: str) -> None:
    path = _tiny_yaml(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_unet_config(path)
    assert str(path) in info.value.message and message in info.value.message
    assert info.value.exit_code == 3


def test_load_unet_refuses_a_bad_config_before_building_the_network(tmp_path: Path) -> None:
    import torch

    from lipsyncctl.checkpoints.loaders import load_unet

    torch.save({"state_dict": {"conv_in.weight": torch.zeros(1)}}, tmp_path / "u.pt")
    with pytest.raises(ConfigError, match=r"unet\.yaml: model: unknown key 'norm_epsilon'"):
        load_unet(_tiny_yaml(tmp_path, "norm_eps: 1.0e-5", "norm_epsilon: 1.0e-5"), tmp_path / "u.pt")
    with pytest.raises(ConfigError, match=r"u\.pt: UNet config: layers_per_block: expected an integer"):
        archs.unet_config_from_dict(dict(load_unet_config("tiny").to_dict(), layers_per_block=True),
                                    source=str(tmp_path / "u.pt"))  # a checkpoint header's config


def test_numeric_strings_in_numeric_fields_are_their_numbers(tmp_path: Path) -> None:
    path = _tiny_yaml(tmp_path, "layers_per_block: 1", "layers_per_block: '1'")
    assert load_unet_config(path) == load_unet_config("tiny")
    assert UNetConfig(norm_eps="1e-05").norm_eps == 1e-05  # type: ignore[arg-type]
    assert UNetConfig(block_out_channels=[320, 640, 1280, 1280]).block_out_channels == (320, 640, 1280, 1280)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layers_per_block: expected an integer"):
        UNetConfig(layers_per_block=True)
    with pytest.raises(ValueError, match="in_channels: expected an integer, got '13.0'"):
        UNetConfig(in_channels="13.0")  # type: ignore[arg-type]


def test_every_shipped_config_loads_and_round_trips() -> None:
    from lipsyncctl.nets.syncnet import StableSyncNetConfig

    for name in archs.UNET_CONFIG_NAMES:
        cfg = load_unet_config(name)
        assert UNetConfig.from_dict(cfg.to_dict()) == cfg
        assert isinstance(cfg.norm_eps, float) and cfg.norm_eps > 0
    names = sorted(p.stem for p in (REPO / "models" / "configs" / "syncnet").glob("*.yaml"))
    assert {"syncnet_16_latent", "syncnet_16_pixel", "syncnet_16_pixel_attn", "syncnet_25_pixel"} <= set(names)
    for name in names:
        sync = archs.load_syncnet_config(name)
        assert sync == resolve_syncnet_config(name)[0]
        assert StableSyncNetConfig.from_dict(sync.to_dict()) == sync


@pytest.mark.parametrize(("old", "new", "message"), [
    ("attn_blocks: [0, 0, 0, 1, 1, 0, 0]", "attn_blocks: [0, 0, 0, 2, 1, 0, 0]",
     "audio_encoder: attn_blocks[3]: must be in [0, 1], got 2"),
    ("in_channels: 1\n", "in_channels: true\n", "audio_encoder: in_channels: expected an integer, got True"),
    ("    dropout: 0.0\n  visual", "    dropout: 1.5\n  visual", "audio_encoder: dropout: must be in [0, 1]"),
    ("    dropout: 0.0\n  visual", "    drop_out: 0.0\n  visual", "audio_encoder: unknown encoder config keys"),
    ("downsample_factors: [[2, 1],", "downsample_factors: [[2, 1, 1],", "audio_encoder: downsample_factors[0]"),
    ("downsample_factors: [[2, 1],", "downsample_factors: [[0, 1],", "downsample_factors[0]: must be >= 1"),
])
def test_bad_syncnet_values_are_config_errors_naming_file_and_key(tmp_path: Path, old: str, new: str,
                                                                 message: str) -> None:
    text = archs.config_path("syncnet", "syncnet_16_pixel_attn").read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / "sync.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        archs.load_syncnet_config(path)
    assert str(path) in info.value.message and message in info.value.message and info.value.exit_code == 3
    with pytest.raises(ConfigError, match="audio_encoder"):  # the loaders' resolver refuses it too
        resolve_syncnet_config(path)


def test_a_numeric_string_in_a_syncnet_config_is_its_number(tmp_path: Path) -> None:
    text = archs.config_path("syncnet", "syncnet_16_latent").read_text(encoding="utf-8")
    path = tmp_path / "sync.yaml"
    path.write_text(text.replace("dropout: 0.0", "dropout: '0.0'").replace("in_channels: 1\n", "in_channels: '1'\n"),
                    encoding="utf-8")
    assert archs.load_syncnet_config(path) == archs.load_syncnet_config("syncnet_16_latent")


def test_every_architecture_config_is_held_to_the_one_checker() -> None:
    # UNet, StableSyncNet and VideoMAE configs share nets/arch_config's checker (VideoMAE checked unknown keys only:
    # a depth of 0, a boolean or a string width built a model or failed deep in torch)
    from lipsyncctl.nets.videomae import VideoMAEConfig

    assert VideoMAEConfig.from_dict({"depth": "2", "embed_dim": 32}).depth == 2  # a YAML 1.1 number string, as UNet's
    for bad, said in (({"depth": 0}, "depth: must be >= 1, got 0"), ({"depth": True}, "depth: expected an integer"),
                      ({"mlp_ratio": "x"}, "mlp_ratio: expected a number"), ({"nope": 1}, "unknown key 'nope' in VideoMAE")):
        with pytest.raises(ValueError, match=said):
            VideoMAEConfig.from_dict(bad)
