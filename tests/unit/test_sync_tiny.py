"""The tiny models: seeded, saved in the official formats, loaded through the strict loaders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from lipsyncctl import config as cfg
from lipsyncctl.checkpoints.tiny import WHISPER_TINY_DIMS, ensure_tiny_models, write_tiny_models
from lipsyncctl.pipeline.networks import load_networks


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].float().numpy().tobytes())
    return h.hexdigest()


def test_tiny_files_are_deterministic_and_official_containers(tmp_path: Path):
    a = write_tiny_models(tmp_path / "a")
    b = write_tiny_models(tmp_path / "b")
    ua, ub = torch.load(a.unet, weights_only=True), torch.load(b.unet, weights_only=True)
    assert set(ua) == {"state_dict"} and _digest(ua["state_dict"]) == _digest(ub["state_dict"])
    wa = torch.load(a.whisper, weights_only=True)
    assert set(wa) == {"dims", "model_state_dict"} and wa["dims"] == WHISPER_TINY_DIMS
    assert wa["model_state_dict"]["encoder.conv1.weight"].dtype == torch.float16
    assert _digest(wa["model_state_dict"]) == _digest(torch.load(b.whisper, weights_only=True)["model_state_dict"])
    assert (a.vae / "config.json").is_file() and (a.vae / "diffusion_pytorch_model.safetensors").is_file()
    assert (a.vae / "diffusion_pytorch_model.safetensors").read_bytes() == (
        b.vae / "diffusion_pytorch_model.safetensors").read_bytes()


def test_tiny_preset_loads_real_architectures(models_dir: Path):
    bundle = load_networks(cfg.resolve("tiny"))
    paths = ensure_tiny_models()  # already there: not rebuilt
    assert paths.root == models_dir / "tiny" and bundle.is_tiny
    assert bundle.unet.config.in_channels == 13 and bundle.unet.config.cross_attention_dim == 384
    assert bundle.whisper.num_hidden_states == 5 and bundle.whisper.d_model == 384
    assert bundle.vae.config.latent_channels == 4 and bundle.vae.config.scaling_factor == 0.18215
    with torch.inference_mode():
        x = torch.randn(1, 13, 2, 32, 32)
        out = bundle.unet(x, 951, torch.randn(2, 50, 384))
        z = bundle.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert out.shape == (1, 4, 2, 32, 32) and torch.isfinite(out).all()
    assert z.shape == (1, 4, 8, 8)


@pytest.mark.parametrize("which", ["sync", "hyperiqa"])
def test_the_tiny_scoring_files_are_made_once_and_remade_whole(tmp_path: Path, which: str) -> None:
    """The tiny SyncNet/S3FD and hyperIQA files: made on first use in a folder beside theirs and renamed into place
    (nothing half-written where a concurrent run looks), kept while their marker says the same version and seed,
    remade with the same values when the marker is not theirs."""
    from lipsyncctl.checkpoints.hyperiqa import ensure_tiny_hyperiqa
    from lipsyncctl.checkpoints.tiny_sync import ensure_tiny_sync

    def ensure() -> list[Path]:
        return list(ensure_tiny_sync(tmp_path).values()) if which == "sync" else [ensure_tiny_hyperiqa(tmp_path)]

    files = ensure()
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    assert ensure() == files and {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == first
    marker = files[0].parent / "tiny.json"
    marker.write_text("{}")
    assert ensure() == files and all(p.stat().st_mtime_ns != first[p][1] for p in files)

    def values(data: bytes) -> dict:
        import io

        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    for p in files:
        before, after = values(first[p][0]), values(p.read_bytes())
        tensors = {k: v for k, v in before.items() if isinstance(v, torch.Tensor)}
        assert tensors and all(torch.equal(v, after[k]) for k, v in tensors.items()), p.name
    assert marker.read_text() != "{}" and sorted(p.name for p in tmp_path.iterdir()) == [files[0].parent.name]


def test_a_set_put_in_place_meanwhile_is_kept_and_a_broken_one_remade(tmp_path: Path) -> None:
    """Two runs that both found the set stale: the second keeps the whole set the first put in place (a reader may
    be using it); a set whose marker is right but a file is gone is made again."""
    from lipsyncctl.checkpoints.tiny import write_folder

    root, marker = tmp_path / "set", {"version": 1}

    def write(folder: Path) -> None:
        (folder / "a.bin").write_bytes(b"a")

    write_folder(root, marker, write)
    first = (root / "a.bin").stat().st_ino
    write_folder(root, marker, write)  # (what the second run does once its temporary set is built)
    assert (root / "a.bin").stat().st_ino == first
    (root / "a.bin").unlink()
    write_folder(root, marker, write)
    assert (root / "a.bin").read_bytes() == b"a" and sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_the_tiny_models_task_is_said_when_they_are_made_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeline asks for the networks once a shot and language: "tiny models" is a progress task when they are
    made, not seven times over files already there."""
    from lipsyncctl import progress
    from lipsyncctl.pipeline.networks import _tiny_models

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path))
    with progress.use_sink(progress.RecordingSink()) as sink:
        first = _tiny_models()
        assert _tiny_models() == first and _tiny_models() == first
    assert [e[2] for e in sink.events if e[0] == "start"] == ["tiny models"]
