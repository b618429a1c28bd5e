"""Architecture configs: one resolver for every kind (unet, syncnet), with hints naming that kind's configs."""

from __future__ import annotations

import pytest

from lipsyncctl.archs import config_path, load_config_yaml, load_unet_config
from lipsyncctl.checkpoints.loaders import resolve_syncnet_config
from lipsyncctl.errors import ConfigError


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
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config_yaml("syncnet", bad)
    with pytest.raises(ConfigError, match="config file not found"):
        config_path("unet", tmp_path / "missing.yaml")
