"""The guided DDIM denoising loop of one window of frames, and its scheduler and initial noise.

Reproduces the loop body of the official ``LipsyncPipeline.__call__`` (LATENTSYNC.md §1.3 step 8d, §1.9):

1. ``scheduler.set_timesteps(steps)`` (20 steps -> 951, 901, ..., 51, 1).
2. Guidance is on iff ``guidance_scale > 1``: the UNet batch is ``[uncond, cond]``, the unconditional
   audio being all zeros (training never drops the audio; zeros are what upstream feeds).
3. Per step: ``x = scale_model_input(cat([latents]*2))``; UNet input
   ``cat([x, mask, masked-image latents, reference latents], dim=1)`` (13 channels);
   ``eps = u + g (c - u)``; ``latents = scheduler.step(eps, t, latents, eta=0).prev_sample``.

The initial noise is one image ``(1, 4, 1, h, w)`` repeated over every frame of the video
(:func:`prepare_initial_latents`). torch/diffusers are imported lazily (the CLI imports this package).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lipsyncctl import progress
from lipsyncctl.errors import ArchConfigError

if TYPE_CHECKING:
    import torch
    from diffusers import DDIMScheduler

#: The diffusers defaults the official runs relied on, pinned so that a diffusers release cannot move them.
#: They are not in the official ``configs/scheduler_config.json``; every other setting comes from that
#: file, shipped with the package (:func:`lipsyncctl.checkpoints.archs.official_scheduler_config`).
PINNED_DEFAULTS: dict[str, Any] = {
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "thresholding": False,
    "rescale_betas_zero_snr": False,
}

# Keys that may appear in scheduler config files but are not DDIM arguments; dropped silently.
_IGNORED_SCHEDULER_KEYS = {"skip_prk_steps", "_class_name", "_diffusers_version", "_use_default_values"}

#: Called after every step as ``callback(step_index, timestep, latents)``.
StepCallback = Callable[[int, int, "torch.Tensor"], None]


def make_scheduler(config: Mapping[str, Any] | None = None) -> DDIMScheduler:
    """A diffusers ``DDIMScheduler``: the official scheduler JSON over :data:`PINNED_DEFAULTS`, updated
    with ``config``.

    ``config`` may be a whole scheduler JSON (e.g. from :func:`lipsyncctl.checkpoints.archs.load_scheduler_config`)
    or a few overrides. Unknown keys raise ConfigError naming the key; ``skip_prk_steps`` (a PNDM option of
    the official file that DDIM ignores) and diffusers' bookkeeping keys are dropped. As the official
    pipeline does, ``steps_offset`` is forced to 1 and ``clip_sample`` to False.
    """
    from diffusers import DDIMScheduler

    from lipsyncctl.checkpoints.archs import official_scheduler_config

    allowed = set(inspect.signature(DDIMScheduler.__init__).parameters) - {"self"}
    merged = dict(PINNED_DEFAULTS)
    for key, value in {**official_scheduler_config(), **(config or {})}.items():
        if key in _IGNORED_SCHEDULER_KEYS:
            continue
        if key not in allowed:
            raise ArchConfigError(f"scheduler config: unknown key {key!r} (DDIMScheduler takes: {', '.join(sorted(allowed))})")
        merged[key] = value
    merged["steps_offset"] = 1
    merged["clip_sample"] = False
    return DDIMScheduler(**merged)


def prepare_initial_latents(
    shape: tuple[int, int, int, int, int],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str,
    init_noise_sigma: float = 1.0,
) -> torch.Tensor:
    """Initial noise ``shape = (B, C, F, h, w)``: one ``randn(B, C, 1, h, w)`` repeated over all F frames.

    This is the official structure (the same noise for every frame of the whole video; pass the video's
    frame count as F and slice windows from it). The draw is float32 on the generator's device (CPU if
    None), so a seed gives the same noise for every target device and dtype; then cast and moved.
    """
    import torch

    b, c, f, h, w = shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn((b, c, 1, h, w), generator=generator, device=gen_device, dtype=torch.float32)
    noise = noise * init_noise_sigma
    return noise.to(device=device, dtype=dtype).repeat(1, 1, f, 1, 1)


def _flatten_audio(audio_embeds: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """``(F, L, D)`` (B=1), ``(B*F, L, D)`` or ``(B, F, L, D)`` -> ``(B*F, L, D)`` with row = b*F + f."""
    if audio_embeds.dim() == 4:
        audio_embeds = audio_embeds.reshape(-1, *audio_embeds.shape[2:])
    if audio_embeds.dim() != 3 or audio_embeds.shape[0] != batch * frames:
        raise ValueError(f"audio_embeds: expected (B*F, L, D) with B*F = {batch * frames}, got "
                         f"{tuple(audio_embeds.shape)}")
    return audio_embeds


def denoise(
    unet: Callable[..., Any],
    scheduler: DDIMScheduler,
    *,
    latents: torch.Tensor,
    mask_latents: torch.Tensor,
    masked_image_latents: torch.Tensor,
    ref_latents: torch.Tensor,
    audio_embeds: torch.Tensor,
    steps: int,
    guidance_scale: float,
    extra_step_kwargs: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    cache_interval: int | None = None,
    description: str = "denoise",
) -> torch.Tensor:
    """Run the guided DDIM loop on one window and return the denoised latents ``(B, 4, F, h, w)``, under
    ``torch.no_grad`` (sampling is not differentiated: the result and ``callback``'s latents carry no graph).

    The networks come positionally, every tensor by keyword (five same-shaped latents are easy to
    swap by position; the official channel order of the UNet input is fixed here, not by the caller).

    Args:
        unet: ``unet(x (N,13,F,h,w), t, encoder_hidden_states=(N*F,L,D)) -> (N,4,F,h,w)`` (our
            :class:`~lipsyncctl.nets.unet.UNet3DConditionModel`; an object with ``.sample`` is unwrapped).
        scheduler: a DDIM scheduler (:func:`make_scheduler`); ``set_timesteps(steps)`` is called here.
        latents: initial noise ``(B, 4, F, h, w)`` (already scaled by ``init_noise_sigma``).
        mask_latents: ``(B, 1, F, h, w)``, 1 = keep, 0 = regenerate.
        masked_image_latents, ref_latents: VAE latents ``(B, 4, F, h, w)``, already scaled by 0.18215.
        audio_embeds: the conditional audio ``(B*F, 50, 384)`` (row = b*F + f), ``(B, F, 50, 384)`` or,
            for B = 1, ``(F, 50, 384)``.
        steps: number of DDIM steps.
        guidance_scale: classifier-free guidance; ``<= 1`` runs the conditional branch only (UNet batch B).
        extra_step_kwargs: extra ``scheduler.step`` arguments; default ``{"eta": 0.0}``.
        callback: ``callback(step_index, timestep, latents)`` after every step.
        cache_interval: DeepCache-style feature reuse (our UNet only): a full UNet pass every
            ``cache_interval`` steps starting with step 0 (official: 3), partial passes in between.
        description: the progress task name (reported through :func:`lipsyncctl.progress.track`).
    """
    import torch

    # Sampling is never differentiated: without this a caller outside inference_mode (the README's parts) kept every
    # step's graph, hundreds of MB a step.
    with torch.no_grad():
        b, _, f = latents.shape[:3]
        audio = _flatten_audio(audio_embeds, b, f)
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            audio = torch.cat([torch.zeros_like(audio), audio])
            cond = torch.cat([mask_latents, masked_image_latents, ref_latents], dim=1)
            cond = torch.cat([cond, cond])
        else:
            cond = torch.cat([mask_latents, masked_image_latents, ref_latents], dim=1)
        step_kwargs = {"eta": 0.0, **dict(extra_step_kwargs or {})}

        unet_kwargs: dict[str, Any] = {}
        cache = None
        if cache_interval is not None:
            if cache_interval < 1:
                raise ValueError(f"cache_interval must be >= 1, got {cache_interval}")
            from lipsyncctl.nets.unet import UNetFeatureCache

            cache = UNetFeatureCache()
            unet_kwargs["cache"] = cache

        scheduler.set_timesteps(steps, device=latents.device)
        timesteps = scheduler.timesteps
        for i, t in enumerate(progress.track(timesteps, description, total=len(timesteps))):
            if cache is not None:
                cache.refresh = i % cache_interval == 0  # type: ignore[operator]
            x = torch.cat([latents, latents]) if do_cfg else latents
            x = scheduler.scale_model_input(x, t)
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
            out = unet(x, t, encoder_hidden_states=audio, **unet_kwargs)
            noise = getattr(out, "sample", out).to(latents.dtype)
            if do_cfg:
                uncond, cond_pred = noise.chunk(2)
                noise = uncond + guidance_scale * (cond_pred - uncond)
            latents = scheduler.step(noise, t, latents, **step_kwargs).prev_sample
            if callback is not None:
                callback(i, int(t), latents)
        return latents
