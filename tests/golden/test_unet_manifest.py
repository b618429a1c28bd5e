"""The UNet built from each official config has exactly the official state_dict (names, shapes, order,
parameter count, persistent buffers), checked on the meta device against shared/reference manifests;
plus UNetConfig parsing and the YAML files in models/configs/unet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lipsyncctl.checkpoints.archs import OFFICIAL_UNET_CONFIGS, load_unet_config, load_unet_yaml
from lipsyncctl.errors import ConfigError
from lipsyncctl.nets.unet import UNet3DConditionModel
from lipsyncctl.nets.unet_config import UNetConfig
from tests.conftest import REPO, shared_path

RESOLUTION = {"stage1": 256, "stage1_512": 512, "stage2": 256, "stage2_512": 512, "stage2_efficient": 256}


def _manifest(name: str) -> dict:
    return json.loads(shared_path("reference", f"latentsync_unet_{name}.json").read_text())


def _diff(ours: dict[str, list[int]], ref: dict[str, list[int]], limit: int = 15) -> str:
    missing = [k for k in ref if k not in ours]
    unexpected = [k for k in ours if k not in ref]
    shapes = [f"{k}: ours {ours[k]} ref {ref[k]}" for k in ref if k in ours and ours[k] != ref[k]]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {x}" for x in items[:limit]] + ([f"  ... {len(items) - limit} more"] if len(items) > limit else [])
    return "\n".join(lines)


@pytest.mark.parametrize("name", OFFICIAL_UNET_CONFIGS)
def test_state_dict_matches_manifest(name: str) -> None:
    ref = _manifest(name)
    cfg = UNetConfig.from_dict(ref["config"])
    with torch.device("meta"):
        model = UNet3DConditionModel(cfg)
    sd = model.state_dict()
    ours = {k: list(v.shape) for k, v in sd.items()}
    assert ours == ref["tensors"], f"{name}: state_dict differs from the manifest\n{_diff(ours, ref['tensors'])}"
    assert list(ours) == list(ref["tensors"]), "same entries but a different module order"
    assert len(sd) == ref["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"]
    assert sum(v.numel() for v in sd.values()) == ref["num_state_dict_elements"]
    params = {n for n, _ in model.named_parameters()}
    assert [k for k in sd if k not in params] == ref["persistent_buffers"]
    persistent = set(ref["persistent_buffers"])
    non_persistent = [n for n, _ in model.named_buffers() if n not in persistent]
    assert non_persistent == ref["non_persistent_buffers_not_in_state_dict"]


@pytest.mark.parametrize("name", OFFICIAL_UNET_CONFIGS)
def test_yaml_model_section_is_the_official_config(name: str) -> None:
    ref = _manifest(name)
    doc = load_unet_yaml(name)
    assert doc["model"] == ref["config"]
    assert doc["data"]["resolution"] == RESOLUTION[name]
    cfg = load_unet_config(name)
    assert cfg == UNetConfig.from_dict(ref["config"])
    # The diffusers-resolved form (extra default keys) describes the same architecture.
    assert UNetConfig.from_dict(ref["resolved_config"]) == cfg
    # Also loadable by path.
    assert load_unet_config(REPO / "models" / "configs" / "unet" / f"{name}.yaml") == cfg


def test_defaults_are_latentsync_stage2() -> None:
    assert UNetConfig() == load_unet_config("stage2")
    assert load_unet_config("stage2") == load_unet_config("stage2_512")


def test_identical_key_sets_and_efficient_subset() -> None:
    with torch.device("meta"):
        s2 = UNet3DConditionModel(load_unet_config("stage2")).state_dict()
        eff = UNet3DConditionModel(load_unet_config("stage2_efficient")).state_dict()
        s1 = UNet3DConditionModel(load_unet_config("stage1")).state_dict()
    assert set(eff) == {k for k in s2 if not (k.startswith("down_blocks.") and ".motion_modules." in k)}
    assert set(s1) == {k for k in s2 if "motion_modules." not in k}


def test_to_dict_round_trip() -> None:
    cfg = load_unet_config("stage2_efficient")
    d = cfg.to_dict()
    assert UNetConfig.from_dict(d) == cfg
    json.dumps(d)  # plain types only
    official = load_unet_yaml("stage2_efficient")["model"]
    assert {k: d[k] for k in official} == official


def test_unknown_key_is_named() -> None:
    d = UNetConfig().to_dict()
    d["use_liner_projection"] = True
    with pytest.raises(ValueError, match="use_liner_projection"):
        UNetConfig.from_dict(d)
    d = UNetConfig().to_dict()
    d["motion_module_kwargs"]["num_heads"] = 8
    with pytest.raises(ValueError, match="num_heads"):
        UNetConfig.from_dict(d)


def test_unsupported_values_rejected() -> None:
    for key, value in [("use_linear_projection", True), ("motion_module_type", "Conv"),
                       ("down_block_types", ["CrossAttnDownBlock2D"] * 4), ("block_out_channels", [32, 48, 64, 64])]:
        d = UNetConfig().to_dict()
        d[key] = value
        with pytest.raises(ValueError, match=key):
            UNetConfig.from_dict(d)


def test_load_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_unet_config("stage3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  in_channels: 13\n  bogus_key: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*bogus_key"):
        load_unet_config(bad)
    bare = tmp_path / "bare.yaml"
    bare.write_text("in_channels: 9\nlayers_per_block: 1\n")
    cfg = load_unet_config(bare)
    assert cfg.in_channels == 9 and cfg.layers_per_block == 1


def test_tiny_config_is_the_golden_tiny_model() -> None:
    golden = json.loads(shared_path("golden", "unet_forward.json").read_text())
    assert load_unet_config("tiny") == UNetConfig.from_dict(golden["variants"]["unet_stage2_tiny"]["config"])
