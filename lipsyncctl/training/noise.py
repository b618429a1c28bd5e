"""Forward noising for UNet training (LATENTSYNC.md §3.1 steps 2, 3 and 5), pinned by
``golden/train/noise_sampling``.

- :func:`mixed_noise`: the official "mixed noise" (``use_mixed_noise``, α = 1): a part shared by all frames
  of a sample (drawn for frame 0 and repeated), variance α²/(1+α²), plus an independent part, variance
  1/(1+α²). α = 0 gives i.i.d. noise.
- :func:`add_noise`: ``√ᾱ_t·x0 + √(1-ᾱ_t)·ε``, as diffusers' ``DDIMScheduler.add_noise``: ᾱ is cast to the
  sample dtype *before* the square roots (in float16 the noise coefficient at t ≤ 1 is off by ±7 %, which
  is what the official fp16 training computes).
- :func:`one_step_x0`: ``(x_t - √(1-ᾱ_t)·ε̂)/√ᾱ_t``, ᾱ indexed in float32 then cast (official
  ``one_step_sampling``; no clipping).

Randomness comes from per-sample generators (:func:`lipsyncctl.training.sampling.sample_generator`), so a
sample's noise and timestep do not depend on the batch size, the number of processes or the step order.
"""

from __future__ import annotations

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000


def alphas_cumprod() -> Tensor:
    """``(1000,)`` float32 ᾱ of the official scheduler config (scaled-linear betas 0.00085..0.012)."""
    from lipsyncctl.pipeline.denoise import make_scheduler

    return make_scheduler().alphas_cumprod.to(torch.float32).clone()


def _per_sample(values: Tensor, ndim: int) -> Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


def add_noise(x0: Tensor, noise: Tensor, timesteps: Tensor, alphas: Tensor) -> Tensor:
    """``x_t`` for latents ``x0`` ``(B, C, F, h, w)``, noise of the same shape and ``timesteps`` ``(B,)``."""
    a = alphas.to(device=x0.device, dtype=x0.dtype)[timesteps.to(x0.device)]
    sqrt_a = _per_sample(a**0.5, x0.ndim)
    sqrt_1ma = _per_sample((1 - a) ** 0.5, x0.ndim)
    return sqrt_a * x0 + sqrt_1ma * noise


def one_step_x0(pred_noise: Tensor, timesteps: Tensor, x_t: Tensor, alphas: Tensor) -> Tensor:
    """The x0 implied by one epsilon prediction (``(B, C, F, h, w)``, dtype of ``pred_noise``)."""
    a = alphas.to(pred_noise.device)[timesteps.to(pred_noise.device)].to(pred_noise.dtype)
    b = 1 - a
    return (x_t - _per_sample(b**0.5, x_t.ndim) * pred_noise) / _per_sample(a**0.5, x_t.ndim)


def mixed_noise(shape: tuple[int, ...], alpha: float, generator: torch.Generator,
                dtype: torch.dtype = torch.float32, kind: str = "mixed") -> Tensor:
    """Noise of one sample, ``shape = (C, F, h, w)``, from ``generator`` (CPU). ``kind`` ``mixed`` (official
    ``use_mixed_noise``): shared part first, then the independent part (two draws of the full shape, as the
    official code draws them; ``alpha`` 0: independent); ``shared`` (the official fallback): one draw, frame 0's
    noise repeated over the frames; ``iid``: one draw."""
    c, f, h, w = shape
    if kind == "shared":
        return torch.randn(shape, generator=generator, dtype=dtype)[:, 0:1].expand(c, f, h, w).contiguous()
    if alpha == 0 or kind == "iid":
        return torch.randn(shape, generator=generator, dtype=dtype)
    shared = torch.randn(shape, generator=generator, dtype=dtype) * (alpha**2 / (1 + alpha**2)) ** 0.5
    shared = shared[:, 0:1].expand(c, f, h, w)
    independent = torch.randn(shape, generator=generator, dtype=dtype) * (1 / (1 + alpha**2)) ** 0.5
    return independent + shared


def draw_timestep(generator: torch.Generator) -> int:
    """One training timestep, uniform in ``[0, 1000)`` (official ``randint(0, 1000)``)."""
    return int(torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=generator))
