"""One micro-step of each kind of training, as the official scripts compute it (LATENTSYNC.md §3.1, §3.4).

The random draws of sample ``k`` (VAE posterior noise of its gt / masked / reference frames, its diffusion
noise and timestep) come from its own generator (:func:`sample_draws`), so a sample sees the same draws
whatever the batch size, the number of processes or the data-loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lipsyncctl.checkpoints.loaders import VAE_SCALING_FACTOR
from lipsyncctl.training import noise
from lipsyncctl.training.losses import UNetLosses, sync_bce, unet_losses

if TYPE_CHECKING:
    from lipsyncctl.training.config import TrainConfig
    from lipsyncctl.training.networks import TrainNetworks

#: a separate stream of the per-sample generator for the step's draws (the dataset uses stream 0)
DRAWS_STREAM = 1


@dataclass
class Draws:
    """Per-sample random values of one batch (CPU, float32)."""

    vae_eps: Tensor     # (3, B, F, 4, h, w): gt, masked, reference posterior noise
    noise: Tensor       # (B, 4, F, h, w)
    timesteps: Tensor   # (B,) int64


def sample_draws(indices: list[int], *, seed: int, frames: int, latent_hw: tuple[int, int],
                 alpha: float, kind: str = "mixed") -> Draws:
    """The draws of the samples ``indices`` (global sample counters), each from its own generator."""
    from lipsyncctl.training.sampling import sample_generator

    h, w = latent_hw
    eps, noises, ts = [], [], []
    for k in indices:
        g = sample_generator(seed, k, stream=DRAWS_STREAM)
        eps.append(torch.randn((3, frames, 4, h, w), generator=g))
        noises.append(noise.mixed_noise((4, frames, h, w), alpha, g, kind=kind))
        ts.append(noise.draw_timestep(g))
    return Draws(torch.stack(eps, 1), torch.stack(noises), torch.tensor(ts, dtype=torch.int64))


def encode_latents(vae: Any, frames: Tensor, eps: Tensor) -> Tensor:
    """VAE-encode ``(B, F, 3, H, W)`` frames in [-1, 1] with posterior noise ``eps`` ``(B, F, 4, h, w)``
    (``latent_dist.sample()`` written out: mean + std·ε) -> scaled latents ``(B, 4, F, h, w)``. No gradient."""
    b, f = frames.shape[:2]
    param = next(vae.parameters())
    with torch.no_grad():
        dist = vae.encode(frames.flatten(0, 1).to(device=param.device, dtype=param.dtype)).latent_dist
        z = dist.mean + dist.std * eps.flatten(0, 1).to(device=param.device, dtype=param.dtype)
    return (z * VAE_SCALING_FACTOR).unflatten(0, (b, f)).permute(0, 2, 1, 3, 4).float()


def decode_frames(vae: Any, latents: Tensor) -> Tensor:
    """Decode ``(B, 4, F, h, w)`` latents with gradients -> frames ``(B, 3, F, H, W)`` (not clamped)."""
    b, _, f = latents.shape[:3]
    param = next(vae.parameters())
    z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1).to(param.dtype) / VAE_SCALING_FACTOR
    x = vae.decode(z).sample
    return x.unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)


def unet_micro_step(nets: TrainNetworks, batch: dict[str, Tensor], cfg: TrainConfig, *, alphas: Tensor,
                    device: torch.device, autocast: Any, draws: Draws | None = None,
                    keep: bool = False) -> UNetLosses:
    """Steps 1-9 of the official UNet step for one micro-batch; returns the losses (backward is the caller's).

    ``batch``: ``gt``/``masked``/``ref`` ``(B, F, 3, H, W)`` in [-1, 1], ``mask`` ``(B, 1, H, W)`` (1 = keep),
    ``whisper`` ``(B, F, 50, 384)``, ``mel`` ``(B, 1, 80, 52)``, ``index`` ``(B,)``. ``draws``: the random
    values (default: each sample's own, :func:`sample_draws`; a golden test passes the official ones). ``keep``:
    also return the intermediate tensors in ``UNetLosses.tensors`` (latents, mask, noise, noisy latents, the
    prediction, its one-step x0 and the decoded frames)."""
    from lipsyncctl.faces.mask import latent_mask

    frames, res = cfg.data.num_frames, cfg.model.resolution
    hw = (res // 8, res // 8)
    if draws is None:
        draws = sample_draws([int(k) for k in batch["index"]], seed=cfg.run.seed, frames=frames, latent_hw=hw,
                             alpha=cfg.loss.mixed_noise_alpha, kind=cfg.loss.noise)
    eps = draws.vae_eps
    # 1. latents of the target, the masked target and the reference frames; the mask at latent size
    gt = encode_latents(nets.vae, batch["gt"], eps[0])
    masked = encode_latents(nets.vae, batch["masked"], eps[1])
    ref = encode_latents(nets.vae, batch["ref"], eps[2])
    mask = latent_mask(batch["mask"].to(device).float(), hw).unsqueeze(2).expand(-1, -1, frames, -1, -1)
    # 2-3. mixed noise, timesteps, forward noising (target: the noise)
    target = draws.noise.to(device)
    t = draws.timesteps.to(device)
    noisy = noise.add_noise(gt, target, t, alphas)
    # 4. the UNet's epsilon prediction (no audio dropout: the official recipe has no CFG training)
    with autocast():
        pred = nets.model(torch.cat([noisy, mask, masked, ref], dim=1), t,
                          batch["whisper"].to(device))
    decoded = gt_frames = x0 = None
    if cfg.pixel_supervision:
        # 5. one-step x0, decoded with gradients
        # in the VAE's own dtype (official: the fp16 VAE, no autocast; autocast would keep its GroupNorms in
        # fp32 and cost 4.5 GiB more at 256)
        x0 = noise.one_step_x0(pred.float(), t, noisy, alphas)
        decoded = decode_frames(nets.vae, x0)
        gt_frames = batch["gt"].to(device).permute(0, 2, 1, 3, 4).to(decoded.dtype)
    # 5-9. recon MSE (+ LPIPS, sync, TREPA) and their weighted sum
    with autocast():
        losses = unet_losses(pred_noise=pred, noise=target, weights=cfg.loss, decoded=decoded, sync_view=nets.sync_view,
                             gt_frames=gt_frames, mel=batch["mel"].to(device), aux=nets.aux)
    if keep:
        losses.tensors = {"gt_latents": gt, "masked_latents": masked, "ref_latents": ref, "latent_masks": mask,
                          "noise": target, "noisy_latents": noisy, "pred_noise": pred, "pred_latents": x0,
                          "decoded": decoded}
    return losses


#: frames per VAE encode call of a latent-space SyncNet batch (official ``num_samples_limit``: memory bound)
ENCODE_FRAMES = 640


def syncnet_latent_draws(indices: list[int], *, seed: int, frames: int, latent_hw: tuple[int, int]) -> Tensor:
    """The VAE posterior noise ``(B, F, 4, h, w)`` of latent-space SyncNet samples, each from its own
    generator (the draws stream of :func:`sample_draws`): independent of batch size, ranks and workers."""
    from lipsyncctl.training.sampling import sample_generator

    return torch.stack([torch.randn((frames, 4, *latent_hw), generator=sample_generator(seed, k, stream=DRAWS_STREAM))
                        for k in indices])


def syncnet_visual_input(nets: TrainNetworks, batch: dict[str, Tensor], cfg: TrainConfig | None,
                         device: torch.device) -> Tensor:
    """The StableSyncNet's visual input of a batch. Pixel runs: ``frames`` ``(B, 3F, H, W)`` as the dataset
    stacked them. Latent-space runs (``cfg.data.latent_space``, official ``syncnet_16_latent``): the frames
    VAE-encoded (posterior mean + std·ε, × 0.18215, at most :data:`ENCODE_FRAMES` frames per call, no
    gradient), stacked ``b (f c) h w`` with 4 channels per frame, and the lower half of the latents taken
    when ``data.lower_half`` (official order: encode, then crop)."""
    frames = batch["frames"]
    if cfg is None or not cfg.data.latent_space:
        return frames.to(device)
    b, fc, height, width = frames.shape
    f = fc // 3
    pixels = frames.reshape(b, f, 3, height, width)
    eps = syncnet_latent_draws([int(k) for k in batch["index"]], seed=cfg.run.seed, frames=f,
                               latent_hw=(height // 8, width // 8))
    per_call = max(1, ENCODE_FRAMES // f)
    latents = torch.cat([encode_latents(nets.vae, pixels[i:i + per_call], eps[i:i + per_call])
                         for i in range(0, b, per_call)])              # (B, 4, F, h, w)
    x = latents.permute(0, 2, 1, 3, 4).flatten(1, 2)                   # (B, F * 4, h, w): channel 4·frame + c
    return x[:, :, x.shape[2] // 2:] if cfg.data.lower_half else x


def syncnet_micro_step(nets: TrainNetworks, batch: dict[str, Tensor], *, device: torch.device,
                       autocast: Any, cfg: TrainConfig | None = None) -> tuple[Tensor, Tensor]:
    """``(mean loss, per-sample cosine)`` of a SyncNet micro-batch: ``frames`` ``(B, 3F, H, W)``, ``mel``
    ``(B, 1, 80, C)``, ``label`` ``(B,)`` (official: BCE on the cosine of the two embeddings). ``cfg``: the
    run's config (latent-space runs encode the frames first, :func:`syncnet_visual_input`)."""
    from lipsyncctl.nets.syncnet import sync_cosine

    visual = syncnet_visual_input(nets, batch, cfg, device)
    with autocast():
        vision, audio = nets.model(visual, batch["mel"].to(device))
    loss, _ = sync_bce(vision, audio, batch["label"].to(device))
    return loss, sync_cosine(vision.float(), audio.float()).detach()

