"""Reduced-precision error of the sync networks, measured against fp32 on the same seeded weights and inputs.

Four measurements, each building its network with seeded random weights (the tiny models' initialiser:
N(0, 1/fan_in) matrices, unit norms, so activations stay O(1)), running it once in fp32 and once after
``.to(dtype)``, and comparing with :func:`lipsyncctl.runner.precision.compare`:

1. ``unet``: one UNet forward, the CFG batch (2, 13, F, h, w), timestep 501, audio (2F, 50, 384).
2. ``window``: a 20-step guided DDIM window (guidance 1.5) through :func:`lipsyncctl.pipeline.denoise.denoise`.
3. ``vae``: the VAE round trip encode (posterior sample) -> decode, images in [-1, 1].
4. ``whisper``: :func:`lipsyncctl.audio.features.audio_features` of a 3 s signal (one padded 30 s window).

Setups (:data:`SETUPS`): ``cpu`` is what the default test suite can afford on 2 CPU cores without native
bf16 (bf16 convolutions take torch's slow reference path there, ~10x fp32): the official stage2 UNet layout
and depth (2 layers per block, every block type, motion modules) at narrow widths, the tiny UNet for the
20-step window, the sd-vae-ft-mse layout at quarter width and 64 px, whisper tiny at its real dimensions.
``full`` is the real widths and sizes (stage2 at 256 px, 16 frames; sd-vae-ft-mse at 256 px) for a GPU.

:func:`activation_maxima` records the largest ``|activation|`` of every leaf module (the fp16 overflow
check: fp16 turns anything beyond 65504 into inf).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lipsyncctl.runner.precision import Budget, ErrorStats, budget, compare

if TYPE_CHECKING:
    import torch
    from torch import nn

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

#: Measurement setups by name. Widths/sizes are stated in the README's precision table.
SETUPS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "unet": {"widths": (32, 64, 64, 64), "layers": 2, "heads": 4, "latent": 8, "frames": 4},
        "window": {"config": "tiny", "latent": 8, "frames": 4, "steps": 20, "guidance": 1.5},
        "vae": {"widths": (32, 64, 128, 128), "groups": 8, "size": 64, "batch": 2},
        "whisper": {"seconds": 3.0},
    },
    "full": {
        "unet": {"widths": None, "layers": 2, "heads": 8, "latent": 32, "frames": 16},
        "window": {"config": "stage2", "latent": 32, "frames": 16, "steps": 20, "guidance": 1.5},
        "vae": {"widths": None, "groups": 32, "size": 256, "batch": 4},
        "whisper": {"seconds": 30.0},
    },
}


@dataclass(frozen=True)
class PrecisionResult:
    """One measurement: ``component`` in ``dtype`` on ``device`` against fp32, and its budget."""

    component: str
    dtype: str
    device: str
    setup: str
    stats: ErrorStats
    budget: Budget
    seconds_fp32: float
    seconds: float

    @property
    def within(self) -> bool:
        return self.stats.within(self.budget)

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component, "dtype": self.dtype, "device": self.device, "setup": self.setup,
            **dataclasses.asdict(self.stats),
            "budget_max_rel": self.budget.max_rel, "budget_mean_rel": self.budget.mean_rel,
            "within": self.within, "seconds_fp32": self.seconds_fp32, "seconds": self.seconds,
        }


# --------------------------------------------------------------------------------------------------
# Seeded networks


def _init(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Seeded parameters (buffers such as the motion modules' position tables keep their values)."""
    from lipsyncctl.checkpoints.tiny import randomize

    state = model.state_dict()
    state.update(randomize(model.named_parameters(), gen))
    model.load_state_dict(state)
    return model.eval()


def build_unet(gen: torch.Generator, *, config: str = "stage2", widths: tuple[int, ...] | None = None,
               layers: int | None = None, heads: int | None = None) -> nn.Module:
    """The UNet of ``models/configs/unet/<config>.yaml``, optionally narrowed (``widths``, ``layers``
    per block, ``heads`` in the spatial and motion attention), with seeded weights."""
    from lipsyncctl.checkpoints.archs import load_unet_config
    from lipsyncctl.nets.unet import UNet3DConditionModel

    cfg = load_unet_config(config)
    changes: dict[str, Any] = {}
    if widths is not None:
        changes["block_out_channels"] = tuple(widths)
    if layers is not None:
        changes["layers_per_block"] = layers
    if heads is not None:
        changes["attention_head_dim"] = heads
        changes["motion_module_kwargs"] = dataclasses.replace(cfg.motion_module_kwargs, num_attention_heads=heads)
    return _init(UNet3DConditionModel(dataclasses.replace(cfg, **changes)), gen)


def build_vae(gen: torch.Generator, *, widths: tuple[int, ...] | None = None, groups: int = 32) -> nn.Module:
    """The sd-vae-ft-mse ``AutoencoderKL`` layout (optionally narrower), seeded."""
    from diffusers import AutoencoderKL

    from lipsyncctl.checkpoints.loaders import SD_VAE_FT_MSE_CONFIG

    cfg = dict(SD_VAE_FT_MSE_CONFIG, norm_num_groups=groups)
    if widths is not None:
        cfg["block_out_channels"] = list(widths)
    return _init(AutoencoderKL(**cfg), gen)


def build_whisper(gen: torch.Generator) -> nn.Module:
    """Whisper tiny's encoder at its real dimensions (the tiny models' seeded fp16 weights)."""
    from lipsyncctl.checkpoints.tiny import WHISPER_TINY_DIMS, tiny_whisper_state_dict
    from lipsyncctl.checkpoints.whisper import convert_openai_whisper
    from lipsyncctl.nets.whisper import WhisperFeatureEncoder, build_whisper_encoder

    hf_config, state = convert_openai_whisper(tiny_whisper_state_dict(gen), WHISPER_TINY_DIMS)
    enc = build_whisper_encoder(hf_config)
    enc.load_state_dict({k: v.float() for k, v in state.items()})
    return WhisperFeatureEncoder(enc).eval()


def smooth_images(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """``(n, 3, size, size)`` in [-1, 1]: noise at 1/8 size upsampled bicubically plus fine noise (an
    image-like spectrum, so the VAE sees structure rather than white noise)."""
    import torch

    coarse = torch.rand(n, 3, max(size // 8, 2), max(size // 8, 2), generator=gen) * 2 - 1
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (img + 0.05 * torch.randn(img.shape, generator=gen)).clamp(-1, 1)


# --------------------------------------------------------------------------------------------------
# Measurements


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def _pair(model: nn.Module, run: Callable[[nn.Module, torch.dtype], torch.Tensor], component: str,
          dtype: str, device: torch.device, setup: str) -> PrecisionResult:
    """Run ``run(model, dtype)`` in fp32 and in ``dtype`` (a copy of the model) and compare."""
    import torch

    low = getattr(torch, DTYPES[dtype])
    ref, t_ref = _timed(lambda: run(model.to(device, torch.float32), torch.float32), device)
    reduced = copy.deepcopy(model).to(device, low)
    out, t_low = _timed(lambda: run(reduced, low), device)
    return PrecisionResult(component, dtype, str(device), setup, compare(out, ref), budget(dtype, component),
                           t_ref, t_low)


def _unet_inputs(gen: torch.Generator, batch: int, frames: int, latent: int, audio_dim: int = 384
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    x = torch.randn(batch, 13, frames, latent, latent, generator=gen)
    audio = torch.randn(batch * frames, 50, audio_dim, generator=gen)
    return x, audio


def measure_unet(dtype: str, device: torch.device, setup: str = "cpu", seed: int = 0) -> PrecisionResult:
    """One CFG-batch UNet forward in ``dtype`` vs fp32."""
    s = SETUPS[setup]["unet"]
    gen = _generator(seed)
    model = build_unet(gen, widths=s["widths"], layers=s["layers"], heads=s["heads"])
    x, audio = _unet_inputs(gen, 2, s["frames"], s["latent"])

    def run(m: nn.Module, dt: torch.dtype) -> torch.Tensor:
        return m(x.to(device, dt), 501, encoder_hidden_states=audio.to(device, dt))

    return _pair(model, run, "unet", dtype, device, setup)


def measure_window(dtype: str, device: torch.device, setup: str = "cpu", seed: int = 0) -> PrecisionResult:
    """A whole guided DDIM window (official scheduler, eta 0) in ``dtype`` vs fp32: final latents."""
    import torch

    from lipsyncctl.pipeline.denoise import denoise, make_scheduler

    s = SETUPS[setup]["window"]
    gen = _generator(seed)
    model = build_unet(gen, config=s["config"])
    f, h = s["frames"], s["latent"]
    noise = torch.randn(1, 4, 1, h, h, generator=gen).repeat(1, 1, f, 1, 1)
    mask = (torch.rand(1, 1, 1, h, h, generator=gen) > 0.5).float().repeat(1, 1, f, 1, 1)
    masked = torch.randn(1, 4, f, h, h, generator=gen)
    ref_lat = torch.randn(1, 4, f, h, h, generator=gen)
    audio = torch.randn(f, 50, 384, generator=gen)

    def run(m: nn.Module, dt: torch.dtype) -> torch.Tensor:
        return denoise(m, make_scheduler(), latents=noise.to(device, dt), mask_latents=mask.to(device, dt),
                       masked_image_latents=masked.to(device, dt), ref_latents=ref_lat.to(device, dt),
                       audio_embeds=audio.to(device, dt), steps=s["steps"], guidance_scale=s["guidance"])

    return _pair(model, run, "window", dtype, device, setup)


def measure_vae(dtype: str, device: torch.device, setup: str = "cpu", seed: int = 0) -> PrecisionResult:
    """VAE encode (posterior sample, seeded) -> decode in ``dtype`` vs fp32: the images."""
    import torch

    from lipsyncctl.pipeline.vae import decode, encode

    s = SETUPS[setup]["vae"]
    gen = _generator(seed)
    model = build_vae(gen, widths=s["widths"], groups=s["groups"])
    images = smooth_images(gen, s["batch"], s["size"])

    def run(m: nn.Module, dt: torch.dtype) -> torch.Tensor:
        sample_gen = torch.Generator(device).manual_seed(seed)
        return decode(m, encode(m, images, generator=sample_gen))

    return _pair(model, run, "vae", dtype, device, setup)


def measure_whisper(dtype: str, device: torch.device, setup: str = "cpu", seed: int = 0) -> PrecisionResult:
    """Whisper features ``(L, 5, 384)`` of a seeded signal in ``dtype`` vs fp32."""
    import torch

    from lipsyncctl.audio import MODEL_AUDIO_RATE
    from lipsyncctl.audio.features import audio_features

    s = SETUPS[setup]["whisper"]
    gen = _generator(seed)
    model = build_whisper(gen)
    n = int(MODEL_AUDIO_RATE * s["seconds"])
    t = torch.arange(n) / MODEL_AUDIO_RATE
    # a voiced-like signal: a 120-220 Hz glide with harmonics under a syllable-rate envelope, plus noise
    f0 = 120 + 100 * t / max(s["seconds"], 1e-3)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / MODEL_AUDIO_RATE
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t))
    audio = (0.3 * voice / 2 + 0.01 * torch.randn(n, generator=gen)).clamp(-1, 1)

    def run(m: nn.Module, dt: torch.dtype) -> torch.Tensor:
        return audio_features(m, audio)

    return _pair(model, run, "whisper", dtype, device, setup)


MEASUREMENTS: dict[str, Callable[..., PrecisionResult]] = {
    "unet": measure_unet, "window": measure_window, "vae": measure_vae, "whisper": measure_whisper,
}


def measure_all(dtype: str, device: torch.device, setup: str = "cpu", seed: int = 0,
                components: tuple[str, ...] = ("unet", "window", "vae", "whisper")) -> list[PrecisionResult]:
    return [MEASUREMENTS[c](dtype, device, setup, seed) for c in components]


# --------------------------------------------------------------------------------------------------
# fp16 range


def activation_maxima(model: nn.Module, run: Callable[[], Any]) -> dict[str, float]:
    """``{leaf module name: max |output|}`` over one call of ``run()`` (which calls ``model``); a
    non-finite output is reported as inf."""
    import torch

    maxima: dict[str, float] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            t = out[0] if isinstance(out, tuple) else out
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                value = float(t.detach().abs().max()) if bool(torch.isfinite(t).all()) else math.inf
                maxima[name] = max(maxima.get(name, 0.0), value)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return maxima


def vae_decoder_maxima(vae: nn.Module, size: int, dtype: torch.dtype, device: torch.device,
                       seed: int = 0) -> tuple[dict[str, float], torch.Tensor]:
    """Leaf activation maxima of the VAE decoder decoding the latents of smooth images of ``size`` px
    (encoded in fp32), and the decoded images. Run with ``dtype=float16`` to see an overflow as inf."""
    import torch

    from lipsyncctl.checkpoints.loaders import VAE_SCALING_FACTOR
    from lipsyncctl.pipeline.vae import encode

    gen = _generator(seed)
    images = smooth_images(gen, 1, size)
    vae32 = vae.to(device, torch.float32)
    latents = encode(vae32, images, generator=torch.Generator(device).manual_seed(seed)) / VAE_SCALING_FACTOR
    model = vae32.to(device, dtype)
    out: list[torch.Tensor] = []
    maxima = activation_maxima(model.decoder,
                               lambda: out.append(model.decode(latents.to(device, dtype)).sample))
    return maxima, out[0]


def _generator(seed: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(seed)
