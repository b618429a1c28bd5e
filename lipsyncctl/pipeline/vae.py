"""VAE encode/decode for the sync pipeline (diffusers ``AutoencoderKL``, SD scaling 0.18215, shift 0).

Official behaviour (LATENTSYNC.md §1.3 c/e, §1.2): encodings use ``latent_dist.sample()`` (stochastic,
here drawn from the passed ``torch.Generator``), latents are ``(z - shift) * scaling``; decoding
divides back. Frames are processed ``batch`` at a time to bound memory. Host tensors are copied with
``non_blocking`` (asynchronous when the caller pinned them, as the renderer does on CUDA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lipsyncctl.checkpoints.loaders import VAE_SCALING_FACTOR, VAE_SHIFT_FACTOR

if TYPE_CHECKING:
    import torch



def encode(
    vae: object,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    batch: int = 16,
    scaling: float = VAE_SCALING_FACTOR,
    shift: float = VAE_SHIFT_FACTOR,
) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` in [-1, 1] -> scaled latents ``(N, 4, H/8, W/8)`` (VAE dtype/device).

    Sampling draws noise from ``generator`` (on the VAE's device) in order, batch by batch.
    """
    import torch

    param = next(vae.parameters())  # type: ignore[attr-defined]
    out = []
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch):
            x = images[i : i + batch].to(device=param.device, dtype=param.dtype, non_blocking=True)
            dist = vae.encode(x).latent_dist  # type: ignore[attr-defined]
            z = dist.sample(generator=generator)
            out.append((z - shift) * scaling)
    return torch.cat(out)


def decode(
    vae: object,
    latents: torch.Tensor,
    batch: int = 16,
    scaling: float = VAE_SCALING_FACTOR,
    shift: float = VAE_SHIFT_FACTOR,
    on_device: bool = False,
) -> torch.Tensor:
    """Scaled latents ``(N, 4, h, w)`` -> images ``(N, 3, 8h, 8w)`` in [-1, 1] (float32, CPU; ``on_device``: left on
    the VAE's device).

    Values are clamped to [-1, 1] (the official restore clamps after ``/2 + 0.5``; same result).
    """
    import torch

    param = next(vae.parameters())  # type: ignore[attr-defined]
    out = []
    with torch.inference_mode():
        for i in range(0, latents.shape[0], batch):
            z = latents[i : i + batch].to(device=param.device, dtype=param.dtype) / scaling + shift
            img = vae.decode(z).sample  # type: ignore[attr-defined]
            img = img.float().clamp_(-1, 1)
            out.append(img if on_device else img.cpu())
    return torch.cat(out)
