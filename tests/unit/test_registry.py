"""The shipped model registry, its validation, local state and the models-dir rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lipsyncctl import paths
from lipsyncctl.checkpoints.registry import (
    ROLES,
    LocalState,
    default_registry_path,
    load_registry,
    model_status,
)
from lipsyncctl.errors import ConfigError, MissingModelError, UsageError

REQUIRED = {"latentsync-1.5", "latentsync-1.6", "whisper-tiny", "sd-vae-ft-mse", "stable-syncnet", "syncnet-v2",
            "face-alignment", "hyperiqa", "sfd-face"}
#: Every sha256 in the registry must come from a documented source; this list is that audit.
DOCUMENTED_SHA256 = {
    # openai-whisper's model table (whisper/__init__.py): the URL path carries the hash.
    "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    # lpips 0.1.4's weights/v0.1/vgg.pth, read from its wheel (the file shared/golden/train names).
    "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}


def test_shipped_registry_is_complete_and_honest() -> None:
    reg = load_registry()
    assert reg.path == default_registry_path()
    assert REQUIRED <= set(reg.names())
    shas = {f.sha256 for e in reg for f in e.files if f.sha256}
    assert shas == DOCUMENTED_SHA256
    v15, v16 = reg.get("latentsync-1.5"), reg.get("latentsync-1.6")
    assert (v15.resolution, v15.unet_config, v16.resolution, v16.unet_config) == (256, "stage2", 512, "stage2_512")
    assert v15.file("unet").hub.repo == "ByteDance/LatentSync-1.5"
    assert v16.file("unet").hub.filename == "latentsync_unet.pt"
    assert v16.file("whisper").path == "whisper/tiny.pt"
    assert "sd-vae-ft-mse" in v16.requires
    assert reg.get("sd-vae-ft-mse").file("vae").hub.repo == "stabilityai/sd-vae-ft-mse"
    assert reg.get("stable-syncnet").syncnet_config == "syncnet_16_pixel_attn"
    iqa = reg.get("hyperiqa").file("hyperiqa")  # curate quality: LatentSync-1.5's auxiliary copy
    assert (iqa.path, iqa.hub.repo, iqa.hub.filename) == (
        "auxiliary/koniq_pretrained.pkl", "ByteDance/LatentSync-1.5", "auxiliary/koniq_pretrained.pkl")
    assert iqa.sha256 is None  # no published hash
    fa = reg.get("face-alignment")
    assert {f.role for f in fa.files} == {"s3fd", "fan"}
    for f in fa.files:  # torch.hub naming: the name's hex suffix is the sha256 prefix
        assert f.url and f.url.endswith(f.path) and f.sha256_prefix and f.sha256_prefix in f.path
    heads = reg.get("lpips-vgg").file("lpips")  # a pinned release on the package index, not a git branch
    assert (heads.wheel.requirement, heads.wheel.member, heads.size) == (
        "lpips==0.1.4", "lpips/weights/v0.1/vgg.pth", 7289)
    for entry in reg:
        assert entry.description and all(f.role in ROLES for f in entry.files)
        assert entry.licence or entry.licence_note, entry.name


def _write(tmp_path: Path, models: dict) -> Path:
    p = tmp_path / "registry.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "models": models}))
    return p


GOOD_FILE = {"path": "a.pt", "role": "unet", "hub": {"repo": "o/r", "filename": "a.pt"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"files": [dict(GOOD_FILE, sha256="abc")]}, "64 lowercase hex"),
        ({"files": [dict(GOOD_FILE, url="http://x")]}, "exactly one of 'hub', 'url', 'wheel' or 'archive'"),
        ({"files": [{"path": "a.pt", "role": "lpips", "wheel": {"requirement": "lpips>=0.1", "member": "a.pt"}}]},
         "pin one release"),
        ({"files": [{"path": "a.pt", "role": "lpips", "wheel": {"requirement": "lpips==0.1.4"}}]},
         "needs 'requirement'"),
        ({"files": [{"path": "a.onnx", "role": "scrfd", "archive": {"url": "http://x/p.zip"}}]},
         "needs 'url' \\(of a zip file\\) and 'member'"),
        ({"files": [dict(GOOD_FILE, path="/abs.pt")]}, "relative path"),
        ({"files": [dict(GOOD_FILE, path="../up.pt")]}, "relative path"),
        ({"files": [dict(GOOD_FILE, role="weights")]}, "role must be one of"),
        ({"files": [dict(GOOD_FILE, path="b.pt")]}, "keeps its hub path"),
        ({"files": [dict(GOOD_FILE, size=-3)]}, "positive integer"),
        ({"files": []}, "is empty"),
    ],
)
def test_registry_validation_names_the_key(tmp_path: Path, change: dict, message: str) -> None:
    spec = {"kind": "x", "description": "d", "files": [GOOD_FILE], **change}
    with pytest.raises(ConfigError, match=message) as err:
        load_registry(_write(tmp_path, {"m": spec}))
    assert "models.m" in str(err.value)
    # its own hint (a ConfigError's is about presets, which a registry entry is not)
    assert err.value.exit_code == 3 and "models/registry.yaml" in err.value.hint and "presets" not in err.value.hint


def test_resolve_status_and_local_state(tmp_path: Path) -> None:
    reg = load_registry(_write(tmp_path, {
        "m": {"kind": "latentsync", "description": "d", "files": [
            GOOD_FILE, {"path": "w/tiny.pt", "role": "whisper", "url": "http://127.0.0.1/tiny.pt", "size": 4}]},
        "v": {"kind": "vae", "description": "d", "files": [
            {"path": "config.json", "role": "vae-config", "hub": {"repo": "o/v", "filename": "config.json"}},
            {"path": "w.safetensors", "role": "vae", "hub": {"repo": "o/v", "filename": "w.safetensors"}}]},
    }))
    mdir = tmp_path / "models"
    with pytest.raises(MissingModelError) as err:
        reg.resolve("m", "whisper", models_dir=mdir)
    assert "models fetch m" in err.value.hint and str(mdir) in err.value.hint
    with pytest.raises(MissingModelError, match="unknown model 'nope'; known: m, v"):
        reg.get("nope")
    from lipsyncctl.checkpoints.registry import load_registry as official

    with pytest.raises(MissingModelError, match=r"unknown model 'latentsync-15' \(did you mean 'latentsync-1.5'\?\)"):
        official().get("latentsync-15")  # (a typo of a known name is named)
    (mdir / "m" / "w").mkdir(parents=True)
    (mdir / "m" / "w" / "tiny.pt").write_bytes(b"1234")
    assert reg.resolve("m", "whisper", models_dir=mdir) == mdir / "m" / "w" / "tiny.pt"
    (mdir / "v").mkdir()
    (mdir / "v" / "w.safetensors").write_bytes(b"x")
    assert reg.resolve("v", models_dir=mdir) == mdir / "v"  # a diffusers VAE resolves to its folder
    (mdir / "v" / "config.json").write_text("{}")
    assert reg.resolve("v", "vae-config", models_dir=mdir) == mdir / "v" / "config.json"  # its config: the file
    with pytest.raises(UsageError, match="model 'm' has no file with role 'vae'") as no_role:
        reg.resolve("m", "vae", models_dir=mdir)  # was an internal error (KeyError)
    assert no_role.value.hint == "its roles: unet, whisper"

    state = LocalState.load(mdir)
    assert state.files == {}
    state.record("m", "a.pt", "f" * 64, 10, "hf://o/r/a.pt")
    state.save()
    again = LocalState.load(mdir)
    assert again.get("m", "a.pt").sha256 == "f" * 64 and again.get("m", "a.pt").size == 10
    status = {s.path: s for s in model_status(reg.get("m"), models_dir=mdir, state=again)}
    assert status["a.pt"].present is False and status["a.pt"].sha256_origin == "local"
    assert status["w/tiny.pt"].present and status["w/tiny.pt"].size == 4 and status["w/tiny.pt"].expected_size == 4

    (mdir / "local.yaml").write_text("files: {x: {sha256: 1}}")
    with pytest.raises(ConfigError, match="bad record"):
        LocalState.load(mdir)


def test_models_dir_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "m"))
    assert paths.models_dir() == tmp_path / "m" and paths.models_dir_source() == "LIPSYNCCTL_MODELS"
    monkeypatch.delenv("LIPSYNCCTL_MODELS")
    # This checkout ships models/registry.yaml, so its models/ folder is the default.
    assert paths.models_dir() == paths.PACKAGE_DIR.parent / "models"
    assert paths.models_dir_source() == "checkout"


def test_a_models_dir_with_an_unknown_user_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", "~no-such-user-here/models")
    with pytest.raises(ConfigError, match="cannot expand its ~"):  # was an internal RuntimeError
        paths.models_dir()


def test_a_safetensors_header_entry_that_is_not_a_tensor_is_a_checkpoint_error(tmp_path: Path) -> None:
    import json
    import struct

    from lipsyncctl.checkpoints.io import read_checkpoint
    from lipsyncctl.errors import CheckpointError

    header = json.dumps({"x": 1}).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="bad safetensors header"):  # was an internal TypeError
        read_checkpoint(bad)
