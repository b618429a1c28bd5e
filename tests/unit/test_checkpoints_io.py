"""Checkpoint containers, formats, strict key reports and meta-init loading, on small torch modules."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from lipsyncctl.checkpoints import io, keys
from lipsyncctl.checkpoints.materialize import build_empty, cast_state_dict, load_into
from lipsyncctl.errors import CheckpointError, MissingModelError
from tests.conftest import SHARED


class Small(nn.Module):
    """Parameters, a persistent buffer, a BatchNorm and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.register_buffer("pe", torch.arange(6, dtype=torch.float32).reshape(2, 3))
        self.register_buffer("mask", torch.tril(torch.ones(3, 3)), persistent=False)


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = Small()
    sd = model.state_dict()
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 7) for k, v in sd.items()}


@pytest.mark.parametrize(
    "container",
    ["state_dict", "module_prefix", "flat", "wrapped_extra", "legacy_pickle", "safetensors"],
)
def test_read_checkpoint_unwraps_every_container(tmp_path: Path, container: str) -> None:
    sd = _random_state()
    path = tmp_path / "ckpt.pt"
    if container == "state_dict":
        torch.save({"state_dict": sd, "global_step": 12}, path)
    elif container == "module_prefix":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif container == "flat":
        torch.save(sd, path)
    elif container == "wrapped_extra":
        torch.save({"state_dict": sd, "train_loss_list": [0.5, 0.25], "global_step": 3}, path)
    elif container == "legacy_pickle":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    else:
        path = tmp_path / "ckpt.safetensors"
        io.write_safetensors(path, sd)
    ck = io.read_checkpoint(path)
    assert set(ck.state_dict) == set(sd)
    for k, v in sd.items():
        assert torch.equal(ck.state_dict[k], v), k
    if container == "state_dict":
        assert ck.container == "state_dict" and ck.metadata["global_step"] == 12
    if container == "legacy_pickle":
        assert ck.format == "torch-legacy"
    if container == "safetensors":
        assert ck.format == "safetensors" and ck.container == "flat"


def test_whisper_container_keeps_dims(tmp_path: Path) -> None:
    dims = {"n_mels": 80, "n_audio_state": 8}
    sd = {"encoder.conv1.weight": torch.zeros(8, 80, 3), "decoder.token_embedding.weight": torch.zeros(5, 8)}
    torch.save({"dims": dims, "model_state_dict": sd}, tmp_path / "tiny.pt")
    ck = io.read_checkpoint(tmp_path / "tiny.pt")
    assert ck.container == "openai-whisper"
    assert ck.metadata["dims"] == dims
    assert set(ck.state_dict) == set(sd)


def test_mmap_keeps_tensors_file_backed(tmp_path: Path) -> None:
    big = {"w": torch.randn(256, 1024)}
    torch.save({"state_dict": big}, tmp_path / "a.pt")
    io.write_safetensors(tmp_path / "a.safetensors", big)
    for name in ("a.pt", "a.safetensors"):
        ck = io.read_checkpoint(tmp_path / name)
        assert torch.equal(ck.state_dict["w"], big["w"])
        # Casting to the same dtype on CPU must not copy (the tensor stays a view of the file).
        same = cast_state_dict(ck.state_dict, dtype=torch.float32)
        assert same["w"].data_ptr() == ck.state_dict["w"].data_ptr()


def test_safetensors_header_round_trip(tmp_path: Path) -> None:
    sd = {"a": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
          "empty": torch.zeros(0, 4), "bf": torch.ones(3, dtype=torch.bfloat16)}
    header = {"kind": "unet", "config": {"in_channels": 13}}
    io.write_safetensors(tmp_path / "x.safetensors", sd, header)
    ck = io.read_checkpoint(tmp_path / "x.safetensors")
    assert ck.container == "lipsyncctl"
    assert ck.lipsyncctl_header == header
    for k, v in sd.items():
        assert ck.state_dict[k].dtype == v.dtype and torch.equal(ck.state_dict[k], v)
    # Our reader agrees with the safetensors library.
    from safetensors.torch import load_file

    ref = load_file(str(tmp_path / "x.safetensors"))
    assert all(torch.equal(ref[k], ck.state_dict[k]) for k in sd)


def test_diffusers_folder(tmp_path: Path) -> None:
    sd = _random_state()
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    io.write_safetensors(tmp_path / "vae" / "diffusion_pytorch_model.safetensors", sd)
    ck = io.read_checkpoint(tmp_path / "vae")
    assert ck.format == "diffusers-folder"
    assert ck.metadata["config"]["_class_name"] == "AutoencoderKL"
    assert set(ck.state_dict) == set(sd)


def test_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(MissingModelError, match="not found"):
        io.read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        io.read_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        io.read_checkpoint(tmp_path / "text.pt")
    # A truncated zip archive.
    torch.save({"state_dict": _random_state()}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        io.read_checkpoint(tmp_path / "cut.pt")
    # A truncated safetensors file.
    io.write_safetensors(tmp_path / "s.safetensors", _random_state())
    raw = (tmp_path / "s.safetensors").read_bytes()
    (tmp_path / "s_cut.safetensors").write_bytes(raw[:-100])
    with pytest.raises(CheckpointError, match="truncated safetensors"):
        io.read_checkpoint(tmp_path / "s_cut.safetensors")
    assert struct.unpack("<Q", raw[:8])[0] > 0


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    import argparse

    torch.save({"state_dict": _random_state(), "obj": argparse.Namespace(a=1)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        io.read_checkpoint(tmp_path / "evil.pt")


def test_key_report_groups_and_hints() -> None:
    expected = {f"down_blocks.{i}.motion_modules.{j}.proj.weight": (4, 4) for i in range(3) for j in range(2)}
    expected["conv_in.weight"] = (8, 13, 3, 3)
    found = {"conv_in.weight": torch.zeros(8, 13, 3, 3)}
    report = keys.compare_state_dict(expected, found)
    assert not report.ok and len(report.missing) == 6 and not report.unexpected
    text = report.summary()
    assert "down_blocks.*.motion_modules.… (6)" in text
    assert "stage1" in keys.guess_hint(report)

    found2 = {"conv_in.weight": torch.zeros(8, 4, 3, 3), "extra.bias": torch.zeros(2)}
    report2 = keys.compare_state_dict({"conv_in.weight": (8, 13, 3, 3)}, found2)
    assert report2.unexpected == ["extra.bias"]
    assert report2.mismatched == [("conv_in.weight", (8, 13, 3, 3), (8, 4, 3, 3))]
    assert "[8, 13, 3, 3] expected, [8, 4, 3, 3] found" in report2.summary()
    with pytest.raises(CheckpointError) as err:
        keys.check_state_dict({"conv_in.weight": (8, 13, 3, 3)}, found2, what="UNet", source="x.pt")
    assert "x.pt does not match UNet" in str(err.value) and err.value.exit_code == 4
    # one line, its parts apart (they ran together where the lines were joined: "...by the model missing (1): ...")
    assert "\n" not in err.value.message and "1 expected by the model; unexpected (1): extra.bias; shape " \
        "mismatch (1)" in err.value.message

    ignored = keys.compare_state_dict({"bn.num_batches_tracked": (), "w": (1,)}, {"w": torch.zeros(1)},
                                      ignore_missing=["*.num_batches_tracked"])
    assert ignored.ok


def test_load_into_meta_model_assigns_without_copy() -> None:
    sd = _random_state(3)
    model = build_empty(Small)
    assert model.conv.weight.device.type == "meta"
    assert model.mask.device.type == "cpu"  # non-persistent buffer built for real
    loaded = load_into(model, sd, what="Small", source="mem")
    assert not loaded.training
    for k, v in sd.items():
        got = loaded.state_dict()[k]
        assert torch.equal(got, v)
    assert loaded.conv.weight.data_ptr() == sd["conv.weight"].data_ptr()  # adopted, not copied
    assert torch.equal(loaded.mask, torch.tril(torch.ones(3, 3)))
    x = torch.randn(1, 3, 5, 5)
    ref = Small()
    ref.load_state_dict(sd)
    ref.eval()
    assert torch.equal(loaded.conv(x), ref.conv(x))


def test_load_into_casts_dtype_and_keeps_integer_buffers() -> None:
    sd = _random_state(4)
    model = load_into(build_empty(Small), sd, what="Small", source="mem", dtype=torch.float16)
    assert model.conv.weight.dtype == torch.float16
    assert model.mask.dtype == torch.float16
    assert model.bn.num_batches_tracked.dtype == torch.int64


def test_load_into_is_strict_and_tolerates_only_listed_missing() -> None:
    sd = _random_state(5)
    partial = {k: v for k, v in sd.items() if k != "blocks.1.weight"}
    with pytest.raises(CheckpointError, match=r"missing \(1\): blocks.1.weight"):
        load_into(build_empty(Small), partial, what="Small", source="f.pt")
    no_count = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    model = load_into(build_empty(Small), no_count, what="Small", source="f.pt",
                      ignore_missing=["*.num_batches_tracked"])
    assert int(model.bn.num_batches_tracked) == 0
    extra = dict(sd, **{"head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="unexpected"):
        load_into(build_empty(Small), extra, what="Small", source="f.pt")


@pytest.mark.skipif(not (SHARED / "reference").is_dir(), reason="../shared/reference not available")
def test_manifest_shapes_round_trip_through_key_check() -> None:
    manifest = json.loads((SHARED / "reference" / "syncnet_v2_eval.json").read_text())
    tensors = manifest["tensors"]
    fake = {k: torch.empty(s, device="meta") for k, s in tensors.items()}
    assert keys.compare_state_dict(tensors, fake).ok
    del fake[next(iter(fake))]
    assert len(keys.compare_state_dict(tensors, fake).missing) == 1


def test_written_weights_have_the_mode_of_any_output(tmp_path: Path) -> None:
    """safetensors (and tempfile.mkstemp) make 0600 files: a run's exports, converted weights and a dataset's
    features were unreadable by the rest of a team sharing the folder. They get 0o666 minus the umask, as any output."""
    import os

    import torch

    from lipsyncctl.checkpoints.hyperiqa import save_official
    from lipsyncctl.checkpoints.io import write_safetensors
    from lipsyncctl.curation.features import _save_atomic

    old = os.umask(0o002)
    try:
        _save_atomic({"w": torch.zeros(2)}, {}, tmp_path / "features" / "c.safetensors")
        written = [write_safetensors(tmp_path / "a.safetensors", {"w": torch.zeros(2)}),
                   save_official({"w": torch.zeros(2)}, tmp_path / "b.pth"), tmp_path / "features" / "c.safetensors"]
        assert [oct(p.stat().st_mode & 0o777) for p in written] == ["0o664"] * 3
        os.umask(0o077)  # a user who keeps files private still does
        assert write_safetensors(tmp_path / "c.safetensors", {"w": torch.zeros(2)}).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
