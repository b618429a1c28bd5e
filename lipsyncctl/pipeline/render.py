"""Step 5 of the sync pipeline: render the output frames window by window.

Per window of ``inference.window`` output frames (16 officially, LATENTSYNC.md §1.3 step 8):
a. read the source frames it shows (:class:`~lipsyncctl.media.reader.IndexedReader`, seeking only
   when the plan jumps: loop, ping-pong, conform);
b. align the frames that have a face (the matrices come from step 2) and build reference, masked image
   and mask (official ``prepare_masks_and_masked_images``);
c. VAE-encode masked and reference images (``latent_dist.sample`` from the run's generator);
d. guided DDIM on the window, starting from the clip's one shared noise image;
e. decode, keep generated pixels only inside the mouth mask, paste the face back with the official
   feathered restore (or ``faces.blend: multiband``, same support), blended by the cross-fade weight;
   frames without a face are the source frames;
f. encode (and the matte, if asked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lipsyncctl import progress

if TYPE_CHECKING:
    import torch

    from lipsyncctl.config import Config
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.media.writer import VideoWriter
    from lipsyncctl.pipeline.clip import _Clock
    from lipsyncctl.pipeline.faces import FacePlan
    from lipsyncctl.pipeline.networks import Networks
    from lipsyncctl.pipeline.plan import ClipPlan


class Renderer:
    """Holds what every window needs; :meth:`render` encodes the whole output picture (no audio)."""

    def __init__(self, networks: Networks, config: Config, plan: ClipPlan, faces: FacePlan,
                 features: torch.Tensor, clock: _Clock) -> None:
        import torch

        from lipsyncctl.faces.align import FaceAligner
        from lipsyncctl.faces.mask import mouth_mask

        self.networks = networks
        self.config = config
        self.plan = plan
        self.faces = faces
        self.features = features
        self.clock = clock
        self.res = config.model.resolution
        self.aligner = FaceAligner(resolution=self.res, smooth=False)  # matrices are precomputed
        self.mask = mouth_mask(self.res)
        self.generator = torch.Generator(device=networks.device).manual_seed(config.inference.seed)
        from lipsyncctl.pipeline.denoise import prepare_initial_latents

        h = w = self.res // 8
        # Official: ONE noise image (1, 4, 1, h, w) shared by every frame of the clip.
        self.noise = prepare_initial_latents((1, 4, 1, h, w), self.generator, networks.dtype, networks.device,
                                             float(networks.scheduler.init_noise_sigma))

    # ---------------------------------------------------------------------------------------------
    def render(self, reader: IndexedReader, writer: VideoWriter, matte: VideoWriter | None = None) -> None:
        """Render every output frame in order into ``writer`` (and the matte into ``matte``).

        The writers are not closed here: the caller owns them (and renames them into place only when
        everything succeeded)."""
        from lipsyncctl.pipeline.memory import trim_heap

        plan, clock = self.plan, self.clock
        window = self.config.inference.window
        n_windows = -(-plan.num_frames // window)
        with progress.Task("render", total=plan.num_frames) as task:
            for s, e in progress.track(plan.windows(window), "windows", total=n_windows):
                src = plan.source_indices(s, e)
                with clock("decode"):
                    frames = reader.read(src)
                outs, mattes = self._window(s, e, [frames[i] for i in src], src, matte is not None)
                del frames
                with clock("encode"):
                    for k, frame in enumerate(outs):
                        writer.write(frame)
                        if matte is not None:
                            matte.write(mattes[k])
                task.advance(e - s)
                trim_heap()  # keep RSS flat over long clips (see lipsyncctl.pipeline.memory)

    # ---------------------------------------------------------------------------------------------
    def _window(self, s: int, e: int, frames: list[np.ndarray], src: list[int], want_matte: bool
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Output frames (and mattes) for output frames ``s .. e-1`` showing source frames ``src``."""
        import cv2
        import torch

        from lipsyncctl.audio.features import feature_chunks
        from lipsyncctl.faces.blend import paste_face
        from lipsyncctl.faces.mask import latent_mask, prepare_masked_images
        from lipsyncctl.pipeline import vae as vae_io
        from lipsyncctl.pipeline.denoise import denoise

        plan, networks, clock, inf = self.plan, self.networks, self.clock, self.config.inference
        base = plan.first_frame
        mats = [self.faces.matrices[i - base] for i in src]
        weights = [float(self.faces.weights[i - base]) for i in src]
        pos = [k for k, m in enumerate(mats) if m is not None and weights[k] > 0]
        outs = [f for f in frames]
        mattes = [np.zeros_like(f) for f in frames] if want_matte else []
        if not pos:
            return outs, mattes

        # b. Align and prepare the masked/reference images.
        with clock("align"):
            crops = []
            for k in pos:
                crop = self.aligner.warp_crop(frames[k], mats[k])
                crops.append(cv2.resize(crop, (self.res, self.res), interpolation=cv2.INTER_LANCZOS4))
            faces_u8 = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
            ref, masked, masks = prepare_masked_images(faces_u8, self.mask)
        # c. VAE encode (masked first, then reference, as upstream).
        with clock("vae encode"):
            masked_lat = vae_io.encode(networks.vae, masked, self.generator, inf.vae_batch)
            ref_lat = vae_io.encode(networks.vae, ref, self.generator, inf.vae_batch)
            mask_lat = latent_mask(masks).to(networks.device, networks.dtype)
        # d. Denoise (f c h w -> 1 c f h w).
        with clock("denoise"):
            def video(x: torch.Tensor) -> torch.Tensor:
                return x.permute(1, 0, 2, 3).unsqueeze(0)

            audio = feature_chunks(self.features, e - s, plan.fps, start=s)[pos]
            audio = audio.to(networks.device, networks.dtype)
            latents = self.noise.repeat(1, 1, len(pos), 1, 1)
            cache = inf.deepcache_interval if inf.deepcache else None
            with torch.inference_mode():
                latents = denoise(networks.unet, networks.scheduler, latents=latents, mask_latents=video(mask_lat),
                                  masked_image_latents=video(masked_lat), ref_latents=video(ref_lat),
                                  audio_embeds=audio, steps=inf.steps, guidance_scale=inf.guidance,
                                  cache_interval=cache)
        # e. Decode; generated pixels only inside the mouth mask (official paste_surrounding_pixels_back).
        with clock("vae decode"):
            decoded = vae_io.decode(networks.vae, latents[0].permute(1, 0, 2, 3), inf.vae_batch)
            decoded = decoded * (1 - masks) + ref * masks
        with clock("paste"):
            for j, k in enumerate(pos):
                pasted = paste_face(self.aligner, frames[k], decoded[j], mats[k], blend=self.config.faces.blend,
                                    reference=ref[j], keep_mask=self.mask)
                w = weights[k]
                if w < 1.0:  # cross-fade where the face comes back or leaves
                    blend = frames[k].astype(np.float32) + w * (pasted.astype(np.float32) - frames[k])
                    pasted = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
                outs[k] = pasted
                if want_matte:
                    mattes[k] = self._matte(frames[k], mats[k], w)
        return outs, mattes

    def _matte(self, frame: np.ndarray, matrix: np.ndarray, weight: float) -> np.ndarray:
        """The feathered paste-back weight as a grey image, 0 exactly where the source pixel is kept.

        Computed with the official restore itself: a black face pasted onto a white frame stays 255
        only where the paste weight is exactly 0, so ``255 - that`` is ``ceil(255 * weight)``-like and
        never 0 where the output may differ from the source."""
        import torch

        white = np.full_like(frame, 255)
        black = -torch.ones((3, self.res, self.res))
        m = 255 - self.aligner.restore(white, black, matrix)
        if weight < 1.0:
            m = np.ceil(m.astype(np.float32) * weight).astype(np.uint8)
        return m
