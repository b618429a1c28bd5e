"""The README's "Python API" section, mirrored with tiny models: its calls run here with tiny networks and files (the
parts, resolve_config, sync, LipSyncPipeline; of the other jobs, their names are checked), and the official files its
parts example loads are where an install puts them (the registry's paths).

If this test changes, the README section must change with it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncctl.audio.features import audio_features, feature_chunks
from lipsyncctl.audio.mel import log_mel_spectrogram
from lipsyncctl.checkpoints.loaders import load_syncnet_eval, load_unet, load_vae, load_whisper_encoder
from lipsyncctl.checkpoints.tiny import ensure_tiny_models
from lipsyncctl.errors import ConfigError
from lipsyncctl.media.audio import read_audio
from lipsyncctl.nets.syncnet_eval import SyncNetEval
from lipsyncctl.paths import DATA_DIR
from lipsyncctl.pipeline.denoise import denoise, make_scheduler, prepare_initial_latents
from lipsyncctl.scoring import lse_scores


def test_documented_python_api_runs_end_to_end(tmp_path: Path) -> None:
    # Real files would be: load_unet("stage2", "models/latentsync-1.5/latentsync_unet.pt"), etc.
    tiny = ensure_tiny_models(tmp_path / "models")
    unet = load_unet("tiny", tiny.unet)  # architecture config name (or YAML path) + official .pt
    whisper = load_whisper_encoder(tiny.whisper)  # OpenAI {"dims", "model_state_dict"} file
    vae = load_vae(tiny.vae)  # diffusers folder or single safetensors file
    assert vae.config.scaling_factor == 0.18215

    # Whisper features of an audio file and the per-frame chunks (25 fps -> official chunking).
    audio = read_audio(DATA_DIR / "sample_dub.wav", rate=16000, channels=1)  # float32 (n,)
    mel = log_mel_spectrogram(audio)  # (80, n) whisper log-mel, 100 frames per second
    assert mel.shape[0] == 80 and abs(mel.shape[1] - 100 * len(audio) / 16000) <= 1
    feats = audio_features(whisper, audio)  # (L, 5, 384), 50 feature frames per second
    assert feats.shape[1:] == (5, 384) and abs(feats.shape[0] - 50 * len(audio) / 16000) <= 1
    chunks = feature_chunks(feats, n_frames=16, fps=Fraction(25))  # (16, 50, 384)
    assert chunks.shape == (16, 50, 384)

    # One UNet forward: (B, 13, F, h, w) + audio (B*F, 50, 384) -> noise prediction (B, 4, F, h, w).
    gen = torch.Generator().manual_seed(0)
    h = w = 8
    sample = torch.randn(1, 13, 16, h, w, generator=gen)
    with torch.inference_mode():
        pred = unet(sample, 501, chunks)
    assert pred.shape == (1, 4, 16, h, w) and torch.isfinite(pred).all()

    # One guided denoising loop (official channel order, zero-audio unconditional, [uncond, cond]).
    scheduler = make_scheduler()
    latents = prepare_initial_latents((1, 4, 16, h, w), gen, torch.float32, torch.device("cpu"))
    mask = torch.ones(1, 1, 16, h, w)
    masked = torch.randn(1, 4, 16, h, w, generator=gen)
    ref = torch.randn(1, 4, 16, h, w, generator=gen)
    with torch.inference_mode():
        out = denoise(unet, scheduler, latents=latents, mask_latents=mask, masked_image_latents=masked,
                      ref_latents=ref, audio_embeds=chunks, steps=2, guidance_scale=1.5)
    assert out.shape == (1, 4, 16, h, w) and not torch.equal(out, latents)

    # SyncNet (eval) embeddings and LSE-D / LSE-C of a clip (random weights here -> arbitrary values).
    path = tmp_path / "syncnet_v2.model"
    torch.save(SyncNetEval().state_dict(), path)
    syncnet = load_syncnet_eval(path)
    frames = np.random.default_rng(0).integers(0, 255, (40, 224, 224, 3), dtype=np.uint8)  # BGR face crops
    lse_d, lse_c, offset = lse_scores(syncnet, frames, audio[: 40 * 640], fps=Fraction(25))
    assert np.isfinite(lse_d) and np.isfinite(lse_c) and -15 <= offset <= 15


def test_documented_root_api_runs_a_batch_with_networks_loaded_once(tmp_path: Path, monkeypatch) -> None:
    """``import lipsyncctl``: resolve_config, LipSyncPipeline (networks loaded once, many clips), sync."""
    import lipsyncctl
    from lipsyncctl.pipeline import networks as networks_mod

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    loads = []
    real = networks_mod.load_networks
    monkeypatch.setattr(networks_mod, "load_networks", lambda *a, **k: loads.append(1) or real(*a, **k))

    pipe = lipsyncctl.LipSyncPipeline.from_registry("tiny", sets=["inference.steps=1", "sync.length_policy=cut"])
    from fractions import Fraction as F

    from tests.sync_media import sample_frames, write_clip

    video = write_clip(tmp_path / "in.mkv", sample_frames(8, scale=0.75), F(25))  # a real face, small
    for name in ("a.mkv", "b.mkv"):
        res = pipe(video, DATA_DIR / "sample_dub.wav", tmp_path / name, sets=["output.codec=ffv1"])
        assert res.output == tmp_path / name and res.output.exists() and res.frames > 0
    assert loads == [1]  # one load for the whole batch
    with pytest.raises(ConfigError, match="model.*per call"):
        pipe(video, DATA_DIR / "sample_dub.wav", tmp_path / "c.mkv", sets=["model.resolution=512"])
    # a per-call dtype the loaded networks are in (`auto` is float32 on the CPU, as the preset's fp32): accepted
    assert pipe(video, DATA_DIR / "sample_dub.wav", tmp_path / "call_auto.mkv", sets=["inference.dtype=auto"]).frames > 0
    with pytest.raises(ConfigError, match="inference.dtype cannot change per call"):
        pipe(video, DATA_DIR / "sample_dub.wav", tmp_path / "bf16.mkv", sets=["inference.dtype=bf16"])
    config = lipsyncctl.resolve_config("tiny", ["inference.steps=1", "output.codec=ffv1", "sync.length_policy=cut"])
    import dataclasses

    warned = dataclasses.replace(pipe.networks, trained_mask="/m/own.png")  # (a UNet trained with another mask)
    res = lipsyncctl.sync(video, DATA_DIR / "sample_dub.wav", tmp_path / "d.mkv", config, networks=warned)
    assert res.frames > 0
    # in the result (--json's warnings lacked it: only stderr said it), of this run's mask, whatever the loading one's
    assert any("trained with the mouth mask /m/own.png; this render uses mask.png" in w for w in res.warnings)
    # networks of another model, resolution or dtype than the run's: refused before any work (the record would
    # name the config's model while the tiny networks rendered)
    other = lipsyncctl.resolve_config("tiny", ["inference.steps=1", "output.codec=ffv1", "model.resolution=512"])
    with pytest.raises(ConfigError, match=r"loaded with other settings: model.resolution 256 \(this run: 512\)"):
        lipsyncctl.sync(video, DATA_DIR / "sample_dub.wav", tmp_path / "g.mkv", other, networks=pipe.networks)
    assert not (tmp_path / "g.mkv").exists()
    # the dtype as it resolves on the networks' device: `auto` and `fp32` are float32 on the CPU (one was refused as
    # the other); bf16 is another
    for dtype in ("auto", "fp32"):
        same = lipsyncctl.resolve_config("tiny", ["inference.steps=1", "output.codec=ffv1", "sync.length_policy=cut",
                                                  f"inference.dtype={dtype}"])
        assert lipsyncctl.sync(video, DATA_DIR / "sample_dub.wav", tmp_path / f"{dtype}.mkv", same,
                               networks=pipe.networks).frames > 0
    bf16 = lipsyncctl.resolve_config("tiny", ["inference.steps=1", "output.codec=ffv1", "inference.dtype=bf16"])
    with pytest.raises(ConfigError, match=r"dtype float32 \(this run: inference.dtype 'bf16', bfloat16 here\)"):
        lipsyncctl.sync(video, DATA_DIR / "sample_dub.wav", tmp_path / "h.mkv", bf16, networks=pipe.networks)
    # GPU tuning changes the networks themselves: not per call, and networks loaded without it are refused
    # by a run that asks for it (said before any work; nothing written), not silently used untuned
    with pytest.raises(ConfigError, match="inference.channels_last.*per call"):
        pipe(video, DATA_DIR / "sample_dub.wav", tmp_path / "e.mkv", sets=["inference.channels_last=true"])
    tuned = lipsyncctl.resolve_config("tiny", ["inference.steps=1", "output.codec=ffv1", "sync.length_policy=cut",
                                               "inference.channels_last=true"])
    with pytest.raises(ConfigError, match="loaded with none of .*asks for inference.channels_last"):
        lipsyncctl.sync(video, DATA_DIR / "sample_dub.wav", tmp_path / "f.mkv", tuned, networks=pipe.networks)
    assert not (tmp_path / "e.mkv").exists() and not (tmp_path / "f.mkv").exists()
    assert pipe.networks.tuning == {}
    assert networks_mod.tune_networks(pipe.networks, tuned.inference).tuning == {"channels_last": True}


def test_an_empty_path_is_a_usage_error() -> None:
    """"" is a caller's unset value, not the current folder (a ValueError from deep inside before)."""
    import lipsyncctl
    from lipsyncctl.errors import UsageError

    with pytest.raises(UsageError, match="output: an empty path"):
        lipsyncctl.sync("v.mp4", "a.wav", "")
    with pytest.raises(UsageError, match=r"inputs\[0\]: an empty path"):
        lipsyncctl.prep([""], "out")


def test_the_root_api_names_every_job() -> None:
    """``import lipsyncctl`` gives every job the CLI runs, training data and training included (the README's
    Python API lists them), each the api function itself."""
    import lipsyncctl
    from lipsyncctl import api

    for name in ("sync", "sync_batch", "sync_timeline", "score", "prep", "doctor", "curate", "curate_report", "curate_forget", "train",
                 "resolve_train_config", "resolve_config"):
        assert getattr(lipsyncctl, name) is getattr(api, name), name
    assert set(lipsyncctl.__all__) <= set(dir(lipsyncctl))


def test_the_api_takes_its_arguments_as_the_cli_does(tmp_path: Path, monkeypatch) -> None:
    """A caller's mistakes are usage errors, as the CLI's (not bad media, nor a silent clamp, nor an AttributeError);
    a preset's name stands for its configuration, one ``--set`` string for one item."""
    import lipsyncctl
    from lipsyncctl.errors import UsageError
    from lipsyncctl.runner import devices

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    from fractions import Fraction as F

    from tests.sync_media import sample_frames, write_clip

    video, dub = write_clip(tmp_path / "in.mkv", sample_frames(4, scale=0.75), F(25)), DATA_DIR / "sample_dub.wav"
    config = lipsyncctl.resolve_config("tiny", "inference.steps=3")  # one item, not a letter at a time
    assert config.inference.steps == 3
    with pytest.raises(UsageError, match="--start -1: a time before the clip's first frame"):
        lipsyncctl.sync(video, dub, tmp_path / "a.mkv", config, start=-1)
    with pytest.raises(UsageError, match=r"frame range \[3, 1\) is empty"):
        lipsyncctl.sync(video, dub, tmp_path / "a.mkv", config, frames=(3, 1))
    for out in (".", "/", tmp_path):  # a folder: no name to make the matte's or the record's of (a ValueError)
        with pytest.raises(UsageError, match="is a folder; sync writes one file"):
            lipsyncctl.sync(video, dub, out, config)
    with pytest.raises(UsageError, match="config: a dict, not a run configuration"):
        lipsyncctl.sync(video, dub, tmp_path / "a.mkv", {"inference": {}})
    with pytest.raises(UsageError, match="config: a TrainConfig") as err:
        lipsyncctl.doctor(lipsyncctl.resolve_train_config("tiny"))
    assert "doctor(train_config=...)" in (err.value.hint or "")
    import wave

    with wave.open(str(tmp_path / "short.wav"), "wb") as w:  # 0.12 s: three frames at 25 fps
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.sin(np.arange(1920) / 9.0) * 3000).astype("<i2").tobytes())
    res = lipsyncctl.sync(video, tmp_path / "short.wav", tmp_path / "a.mkv", "tiny")  # a preset's name
    assert res.frames == 3 and res.output.exists()
    # a pipeline sets the reproducible CPU maths itself, as sync and load_pipeline do (its bytes were another
    # process's otherwise: the CLI's only when lipsyncctl.sync had run before in the same process)
    calls = []
    monkeypatch.setattr(devices, "reproducible_cpu_math", lambda: calls.append(1) or True)
    pipe = lipsyncctl.LipSyncPipeline.from_registry("tiny", sets="inference.steps=1")
    assert calls and pipe.config.inference.steps == 1
    assert pipe.configured("faces.smoothing=false").faces.smoothing is False


def test_the_readme_parts_example_names_the_files_an_install_has() -> None:
    """Its example loaded `models/syncnet-v2/syncnet_v2.model` and `models/latentsync-1.6/stable_syncnet.pt`, where
    no install puts them (`models/<model>/<path in the registry>`): every such path of the README is a registry file."""
    import re

    from lipsyncctl.checkpoints.registry import load_registry

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    registry = load_registry()
    named = re.findall(r'"models/([\w.-]+)/([^"]+)"', readme)
    assert len(named) >= 4, named
    for model, path in named:
        assert model in registry, model
        paths = [f.path for f in registry.models[model].files]
        assert path in paths or any(p.startswith(path.rstrip("/") + "/") for p in paths), (model, path, paths)


def test_the_public_api_spells_its_keywords_out() -> None:
    # typed options in: no public function hides its arguments behind **kwargs (api.prep and api.sync did)
    import inspect

    from lipsyncctl import api
    from lipsyncctl.pipeline.lipsync import LipSyncPipeline

    public = [f for n, f in vars(api).items() if inspect.isfunction(f) and not n.startswith("_")
              and f.__module__ == api.__name__] + [LipSyncPipeline.__call__]
    assert len(public) > 10
    hidden = [f.__qualname__ for f in public
              if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(f).parameters.values())]
    assert hidden == []


def test_denoise_keeps_no_graph_outside_inference_mode() -> None:
    # the README's parts call denoise without torch.inference_mode: every step's graph was kept (GBs at 4 steps)
    import torch

    from lipsyncctl.pipeline.denoise import denoise, make_scheduler

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))  # requires grad, as a loaded UNet's weights do

        def forward(self, x: torch.Tensor, t: object, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
            return x[:, :4] * self.w

    shape = (1, 4, 2, 4, 4)
    out = denoise(Net(), make_scheduler(), latents=torch.randn(shape), mask_latents=torch.ones(1, 1, 2, 4, 4),
                  masked_image_latents=torch.randn(shape), ref_latents=torch.randn(shape),
                  audio_embeds=torch.randn(2, 50, 384), steps=2, guidance_scale=1.5)
    assert out.shape == shape and not out.requires_grad and out.grad_fn is None


def test_api_mistakes_are_library_errors(tmp_path: Path) -> None:
    # a research team's slips: each a LipsyncError naming the argument (AttributeError, KeyError or a letter-by-letter
    # walk of a path before)
    import subprocess
    import sys

    from lipsyncctl import api
    from lipsyncctl.errors import ConfigError, MediaError, UsageError

    fresh = subprocess.run([sys.executable, "-c", "import lipsyncctl; print(lipsyncctl.api.key_bounds('inference.steps'))"],
                           capture_output=True, text=True, check=False)
    assert fresh.returncode == 0 and fresh.stdout.strip() == "(1, 1000)", fresh.stderr  # lipsyncctl.api.<name>
    assert "key_bounds" in api.__all__
    for key in ("inference", "nope.steps", "inference.nope"):
        with pytest.raises(ConfigError, match=f"no configuration key '{key}'"):
            api.key_bounds(key)
    missing = tmp_path / "clip.mp4"
    from pathlib import PurePosixPath

    assert api.key_bounds("name") == (None, None)  # a top-level key `presets keys` lists: no bounds
    for call in (lambda: api.prep(str(missing), tmp_path / "pp", dry_run=True),
                 lambda: api.prep(bytes(missing), tmp_path / "pp", dry_run=True),
                 lambda: api.prep(PurePosixPath(missing), tmp_path / "pp", dry_run=True),
                 lambda: api.curate(str(missing), tmp_path / "data", "tiny", dry_run=True)):
        with pytest.raises(MediaError, match="clip.mp4"):  # one path is one input ("c: file not found (and 7 more)")
            call()
    with pytest.raises(UsageError, match="options: a Config, not prep's options"):
        api.prep([missing], tmp_path / "pp", api.resolve_config("tiny"), dry_run=True)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="config: a Config, not a training configuration"):
        api.train(tmp_path, tmp_path / "run", api.resolve_config("tiny"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):  # a preset name is read as one (a run preset is not a training one)
        api.train(tmp_path, tmp_path / "run", "no-such-preset")
    assert not (tmp_path / "pp").exists() and not (tmp_path / "run").exists()
