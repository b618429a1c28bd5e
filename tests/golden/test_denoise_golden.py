"""Golden vector 2: the guided DDIM loop of one 16-frame window (g = 1.5 with CFG, g = 1.0 without)
against the official pipeline, plus the scheduler config, initial noise and progress reporting."""

from __future__ import annotations

import json

import pytest
import torch

from lipsyncctl import progress
from lipsyncctl.checkpoints.archs import load_scheduler_config, load_unet_config, official_scheduler_config
from lipsyncctl.errors import ConfigError
from lipsyncctl.nets.unet import UNet3DConditionModel
from lipsyncctl.pipeline.denoise import PINNED_DEFAULTS, denoise, make_scheduler, prepare_initial_latents
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"
needs_golden = pytest.mark.skipif(
    not (GOLDEN / "denoise_loop_io.safetensors").is_file(), reason=f"golden vectors not found under {GOLDEN}"
)


def _close(a: torch.Tensor, ref: torch.Tensor) -> None:
    err = (a - ref).abs()
    assert torch.all(err <= 1e-4 + 1e-4 * ref.abs()), f"max abs error {err.max().item():.3g}"


@pytest.fixture(scope="module")
def golden() -> dict:
    from safetensors.torch import load_file

    if not (GOLDEN / "denoise_loop_io.safetensors").is_file():
        pytest.skip(f"golden vectors not found under {GOLDEN}")
    unet = UNet3DConditionModel(load_unet_config("tiny")).eval()
    weights = load_file(GOLDEN / "unet_tiny_weights.safetensors")
    unet.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return {
        "unet": unet,
        "io": load_file(GOLDEN / "denoise_loop_io.safetensors"),
        "audio": load_file(GOLDEN / "whisper_features.safetensors")["chunks_0_15"],
        "meta": json.loads((GOLDEN / "denoise_loop.json").read_text()),
    }


def _run(golden: dict, guidance: float, **kw) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    io = golden["io"]
    steps: list[tuple[int, torch.Tensor]] = []
    with torch.no_grad():
        out = denoise(
            golden["unet"], make_scheduler(), latents=io["initial_latents"], mask_latents=io["mask_latents"],
            masked_image_latents=io["masked_image_latents"], ref_latents=io["ref_latents"],
            audio_embeds=golden["audio"],
            steps=4, guidance_scale=guidance, callback=lambda i, t, x: steps.append((t, x.clone())), **kw,
        )
    return out, steps


@needs_golden
def test_guided_loop_matches_official(golden: dict) -> None:
    run = golden["meta"]["runs"]["g1_5"]
    out, steps = _run(golden, 1.5)
    assert [t for t, _ in steps] == run["timesteps"] == [751, 501, 251, 1]
    per_step = golden["io"]["per_step_latents_g1_5"]
    for i, (_, latents) in enumerate(steps):
        _close(latents, per_step[i])
    _close(out, golden["io"]["latents_out_g1_5"])


@needs_golden
def test_unguided_loop_matches_official(golden: dict) -> None:
    calls: list[int] = []
    unet = golden["unet"]

    def counting_unet(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
        calls.append(x.shape[0])
        return unet(x, t, **kw)

    golden = {**golden, "unet": counting_unet}
    out, steps = _run(golden, 1.0)
    assert calls == [1, 1, 1, 1]  # no CFG: UNet batch 1
    assert [t for t, _ in steps] == golden["meta"]["runs"]["g1_0"]["timesteps"]
    _close(out, golden["io"]["latents_out_g1_0"])


@needs_golden
def test_progress_and_cache(golden: dict) -> None:
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        out, _ = _run(golden, 1.5, cache_interval=1)  # a full pass every step == no caching
    _close(out, golden["io"]["latents_out_g1_5"])
    starts = [e for e in sink.events if e[0] == "start"]
    assert starts and starts[0][2] == "denoise" and starts[0][3] == 4
    assert sum(e[2] for e in sink.events if e[0] == "advance") == 4
    cached, _ = _run(golden, 1.5, cache_interval=3)  # steps 1, 2 partial; 0, 3 full
    assert cached.shape == out.shape and torch.isfinite(cached).all()
    assert not torch.allclose(cached, out)


def test_scheduler_matches_official_config() -> None:
    s = make_scheduler()
    ref = json.loads((GOLDEN / "denoise_loop.json").read_text())["config"] if GOLDEN.is_dir() else None
    if ref is not None:
        resolved = dict(ref["scheduler_config_resolved"])
        resolved.pop("skip_prk_steps")
        assert {k: s.config[k] for k in resolved} == resolved
        for t, a in ref["alphas_cumprod_at_timesteps"].items():
            assert s.alphas_cumprod[int(t)].item() == pytest.approx(a, rel=1e-6)
        assert s.final_alpha_cumprod.item() == pytest.approx(ref["final_alpha_cumprod"], rel=1e-6)
    s.set_timesteps(20)
    assert s.timesteps.tolist() == list(range(951, 0, -50))
    assert s.init_noise_sigma == 1.0
    # The JSON file in models/configs is the official file and the one source: the scheduler built from it
    # is the default one, and it holds every setting but the pinned diffusers defaults.
    official = official_scheduler_config()
    assert official == load_scheduler_config() and official.pop("skip_prk_steps") is True
    assert make_scheduler(load_scheduler_config()).config == s.config
    assert not set(official) & set(PINNED_DEFAULTS)
    assert {k: s.config[k] for k in official} == official
    assert {k: s.config[k] for k in PINNED_DEFAULTS} == PINNED_DEFAULTS


def test_scheduler_overrides_and_unknown_keys() -> None:
    s = make_scheduler({"timestep_spacing": "trailing", "steps_offset": 0, "skip_prk_steps": True})
    assert s.config.timestep_spacing == "trailing"
    assert s.config.steps_offset == 1  # forced, as the official pipeline does
    with pytest.raises(ConfigError, match="beta_stat"):
        make_scheduler({"beta_stat": 0.1})


def test_initial_latents_structure() -> None:
    g = torch.Generator().manual_seed(1247)
    x = prepare_initial_latents((1, 4, 40, 8, 8), g, torch.float32, "cpu")
    assert x.shape == (1, 4, 40, 8, 8)
    assert torch.equal(x, x[:, :, :1].expand_as(x))  # one noise image for every frame
    y = prepare_initial_latents((1, 4, 40, 8, 8), torch.Generator().manual_seed(1247), torch.float16, "cpu",
                                init_noise_sigma=2.0)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), (2 * x).half().float())
    z = prepare_initial_latents((1, 4, 3, 8, 8), torch.Generator().manual_seed(1), torch.float32, "cpu")
    assert not torch.equal(z[:, :, 0], x[:, :, 0])


def test_audio_shape_is_checked() -> None:
    s = make_scheduler()
    lat = torch.zeros(1, 4, 2, 8, 8)
    with pytest.raises(ValueError, match="audio_embeds"):
        denoise(lambda x, t, **kw: x[:, :4], s, latents=lat, mask_latents=lat[:, :1], masked_image_latents=lat,
                ref_latents=lat, audio_embeds=torch.zeros(3, 50, 384), steps=1, guidance_scale=1.5)
