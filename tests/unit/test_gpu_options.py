"""The GPU options of the sync pipeline (issue 12), checked where they can be on a CPU: ``inference.channels_last``
keeps the networks' results within float noise of the default layout (the options table says the bytes may
differ), ``inference.compile`` wraps the UNet and the VAE's encoder and decoder, and both off change nothing.
Their speed is measured on a lent GPU by ``scripts/gpu_sync_bench.py`` (its CPU smoke run is tested here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lipsyncctl import config as cfg
from lipsyncctl.pipeline.networks import load_networks, tune_networks
from tests.sync_media import tiny_models

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with tiny_models(tmp_path_factory.mktemp("models")) as env:
        yield env


def _outputs(networks) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    unet, vae = networks.unet, networks.vae
    c = unet.config
    x = torch.randn(2, c.in_channels, 4, 8, 8, generator=gen)
    audio = torch.randn(8, 50, c.cross_attention_dim, generator=gen)
    images = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.inference_mode():
        return unet(x, 501, audio), vae.decode(vae.encode(images).latent_dist.mean).sample


def test_channels_last_is_within_float_noise_of_the_default(tiny) -> None:  # type: ignore[no-untyped-def]
    config, _ = tiny
    base = load_networks(config)
    ref_unet, ref_vae = _outputs(base)
    tuned = tune_networks(load_networks(config), cfg.resolve(config.to_dict(), ["inference.channels_last=true"]).inference)
    conv = next(m for m in tuned.vae.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[-1] > 1
    unet_out, vae_out = _outputs(tuned)
    assert torch.allclose(unet_out, ref_unet, atol=1e-4, rtol=1e-4)
    assert torch.allclose(vae_out, ref_vae, atol=1e-4, rtol=1e-4)
    # both options off: the very same objects, untouched
    same = tune_networks(base, config.inference)
    assert same is base and torch.equal(_outputs(same)[0], ref_unet)


def test_compile_wraps_the_unet_and_the_vae_coders(tiny, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    config, networks = tiny
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    compile_on = cfg.resolve(config.to_dict(), ["inference.compile=true"]).inference
    tune_networks(networks, compile_on)
    assert compiled == [networks.unet, networks.vae.encoder, networks.vae.decoder]
    # no compiler for this device: one clear error (exit 4) before any work, nothing wrapped
    from lipsyncctl.errors import MissingToolError

    monkeypatch.setattr("shutil.which", lambda name: None)
    compiled.clear()
    with pytest.raises(MissingToolError, match="C\\+\\+ compiler") as e:
        tune_networks(networks, compile_on)
    assert e.value.exit_code == 4 and "inference.compile" in (e.value.hint or "") and compiled == []


def test_compile_with_cuda_graphs_compiles_the_unet_in_reduce_overhead_mode(tiny, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    config, networks = tiny
    modes: dict[str, object] = {}
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: modes.setdefault(type(self).__name__, k.get("mode")))
    monkeypatch.setattr("lipsyncctl.pipeline.networks._check_compiler", lambda device: None)
    on_gpu = dataclasses.replace(networks, device=torch.device("cuda"))  # only the device check reads it
    forward = networks.unet.forward
    tune_networks(on_gpu, cfg.resolve(config.to_dict(), ["inference.compile=true", "inference.cuda_graphs=true"]).inference)
    assert modes == {"UNet3DConditionModel": "reduce-overhead", "Encoder": None, "Decoder": None}
    assert networks.unet.forward == forward  # compile's graphs, not a second layer of our own


@pytest.mark.slow  # about 25 s: four tiny sync runs at 1080p; the options it measures are tested above
def test_gpu_sync_bench_smoke_on_cpu(tmp_path: Path) -> None:
    """The GPU script's whole path on the CPU with tiny networks: one JSON with a row per variant, each with
    frames/s for the model stages and end to end, and the same output hash for serial and pipelined."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "LIPSYNCCTL_MODELS": str(tmp_path / "models")}  # the tiny files go there
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_sync_bench.py"), "--smoke", "-o", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["smoke"] is True
    rows = res["rows"]
    assert [(r["kind"], r["variant"]) for r in rows] == [("model", "default"), ("model", "channels_last"),
                                                          ("e2e", "default"), ("e2e", "gpu_paste")]
    for r in rows:
        assert r["error"] is None, r
        assert r["frames"] > 0 and r["model_fps"] > 0 and r["wall_s"] > 0
        assert set(r["stage_seconds"]) >= {"vae encode", "denoise", "vae decode"}
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_session.sh")]).returncode == 0  # its wrapper parses
    e2e, gpu_paste = rows[-2:]
    assert e2e["frames"] == gpu_paste["frames"] == 10 and e2e["e2e_fps"] > 0 and gpu_paste["e2e_fps"] > 0
    assert e2e["sha256"] == e2e["sha256_serial"]  # the pipelined render is the serial one


def test_the_vram_estimate_counts_the_unet_activations_of_every_batched_window() -> None:
    from lipsyncctl.runner.vram import estimate_vram

    est = [estimate_vram(cfg.resolve("latentsync-1.5", [f"inference.batch_windows={k}"])) for k in (1, 2, 3)]
    step = est[1] - est[0]
    assert step > 0 and est[2] - est[1] == pytest.approx(step, abs=2)
    # one window's UNet activations: the same as doubling the frames per window
    doubled = estimate_vram(cfg.resolve("latentsync-1.5", ["inference.window=8"]))
    assert est[0] - doubled == pytest.approx(step / 2, abs=2)
