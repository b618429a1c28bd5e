"""Steps 4-8 of the sync pipeline (DESIGN §3): render the output frames window by window.

Per window of ``inference.window`` output frames (16 officially, LATENTSYNC.md §1.3 step 8):
4. read the source frames it shows (:class:`~lipsyncctl.media.reader.IndexedReader`, seeking only
   when the plan jumps: loop, ping-pong, conform; or those a face pass beside the render decoded,
   :class:`~lipsyncctl.pipeline.faces.StreamFrames`)
   and align those that have a face (the matrices come from step 3, the faces);
5. condition: build reference, masked image and mask (official ``prepare_masks_and_masked_images``), VAE-encode
   masked and reference images (``latent_dist.sample`` from the run's generator);
6. denoise: guided DDIM on the window, starting from the clip's one shared noise image (``inference.batch_windows``
   consecutive windows in one UNet batch);
7. decode, keep generated pixels only inside the mouth mask, paste the face back with the official
   feathered restore (or ``faces.blend: multiband``, same support), blended by the cross-fade weight;
   frames without a face are the source frames;
8. encode (and the matte, if asked).

Four stages: :meth:`Renderer.prepare` (4, and 5's masks), :meth:`Renderer.generate` (5-7, the networks),
:meth:`Renderer.paste` (the rest of 7) and :meth:`Renderer.encode` (8). With ``inference.pipelined``
(default) they run concurrently on consecutive windows: a thread decodes and aligns window ``i + 1``, one
pastes window ``i - 1`` and one encodes window ``i - 2`` while the calling thread runs the networks on window
``i`` (two stages, since on a fast GPU with its options the networks outrun paste and encode together);
queues of one window between them keep memory flat (at most seven windows of frames in flight, whatever
the clip's length; with ``inference.batch_windows`` = k the stages pass groups of k windows). The output
is the serial one byte for byte: every stage still sees the windows in order, only the networks draw from
the run's generator (always in the calling thread), and torch runs every stage with the calling thread's
thread count.
An error or Ctrl-C in any stage stops the others, all threads are joined, and the error is raised in the
calling thread (whose caller then removes the partial output as for the serial path). Stage seconds
(``--json``) then overlap: their sum exceeds the wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.runner.pipelined import run_stages

if TYPE_CHECKING:
    import torch

    from lipsyncctl.config import Config
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.media.splice import Splicer
    from lipsyncctl.media.writer import VideoWriter
    from lipsyncctl.pipeline.clip import _Clock
    from lipsyncctl.pipeline.faces import FacePlan, FaceStream, StreamFrames
    from lipsyncctl.pipeline.networks import Networks
    from lipsyncctl.pipeline.plan import ClipPlan



@dataclass
class Window:
    """One window between the stages: output frames ``start .. stop-1`` showing source frames ``src``.

    ``frames`` (H, W, 3) uint8 per output frame and ``sources`` their decoded frames (None: the output is
    written from the RGB images; with a splice, stage 1 already makes each frame without a face the source's own
    output frame, an ``av.VideoFrame``, and keeps the RGB image and source only of those with one);
    ``faces`` the indices (into ``frames``) with a face to re-render;
    ``ref``/``masked`` (n, 3, res, res) in [-1, 1] and ``masks`` (n, 1, res, res) for those (stage 1);
    ``decoded`` (n, 3, res, res) in [-1, 1], the generated faces (stage 2); after stage 3 ``frames`` are the
    output frames (spliced ``av.VideoFrame`` objects, or RGB images where the splice does not apply) and
    ``mattes`` the matte's, when one is written."""

    start: int
    stop: int
    src: list[int]
    frames: list[np.ndarray]
    matrices: list[np.ndarray | None]
    weights: list[float]
    faces: list[int]
    ref: Any = None
    masked: Any = None
    masks: Any = None
    decoded: Any = None
    mattes: list[np.ndarray] | None = None
    sources: list[Any] | None = None
    ready: Any = None  # with inference.gpu_paste on CUDA: the event recorded after the window's decode

    def pin(self) -> None:
        """Page-lock the faces' tensors (on CUDA their copies to the GPU then run without blocking)."""
        self.ref, self.masked, self.masks = (t.pin_memory() for t in (self.ref, self.masked, self.masks))


class Renderer:
    """Holds what every window needs; :meth:`render` encodes the whole output picture (no audio)."""

    def __init__(self, networks: Networks, config: Config, plan: ClipPlan, faces: FacePlan | FaceStream,
                 features: torch.Tensor, clock: _Clock) -> None:
        import torch

        from lipsyncctl.faces.align import FaceAligner
        from lipsyncctl.faces.mask import mouth_mask

        self.networks = networks
        self.splicer: Splicer | None = None  # set by render() for its writer
        self.config = config
        self.plan = plan
        self.faces = faces
        self.features = features
        self.clock = clock
        self.res = config.model.resolution
        # matrices are precomputed; inference.gpu_paste pastes on the networks' device
        self.aligner = FaceAligner(resolution=self.res, smooth=False,
                                   device=str(networks.device) if config.inference.gpu_paste else None)
        # On CUDA the paste runs on a stream of its own: on the default one its kernels would wait behind the
        # next window's UNet (each window's paste first waits for the event its decode recorded).
        self.paste_stream = (torch.cuda.Stream(networks.device) if config.inference.gpu_paste
                             and networks.device.type == "cuda" else None)
        self.mask = mouth_mask(self.res, config.model.mask)
        self.generator = torch.Generator(device=networks.device).manual_seed(config.inference.seed)
        from lipsyncctl.pipeline.denoise import prepare_initial_latents

        h = w = self.res // 8
        # Official: ONE noise image (1, 4, 1, h, w) shared by every frame of the clip.
        self.noise = prepare_initial_latents((1, 4, 1, h, w), self.generator, networks.dtype, networks.device,
                                             float(networks.scheduler.init_noise_sigma))

    # ---------------------------------------------------------------------------------------------
    def render(self, reader: IndexedReader | StreamFrames, writer: VideoWriter,
               matte: VideoWriter | None = None) -> None:
        """Render every output frame in order into ``writer`` (and the matte into ``matte``).

        The writers are not closed here: the caller owns them (and renames them into place only when
        everything succeeded)."""
        from lipsyncctl.media.splice import Splicer

        splicer = Splicer(writer.pix_fmt)
        self.splicer = splicer if splicer.active else None
        with progress.Task("render", total=self.plan.num_frames) as task:
            windows = self._prepared(reader)

            def paste(wins: list[Window]) -> list[Window]:
                return [self.paste(win, mattes=matte is not None) for win in wins]

            def encode(wins: list[Window]) -> None:
                for win in wins:
                    self.encode(win, writer, matte)
                    task.advance(win.stop - win.start)

            groups = _batched(windows, self.config.inference.batch_windows)
            if self.config.inference.pipelined:
                run_stages(groups, [self.generate, paste, encode], main=0, name="render")
            else:
                for group in groups:
                    encode(paste(self.generate(group)))

    def _prepared(self, reader: IndexedReader | StreamFrames) -> Iterator[Window]:
        """Stage 1 over the clip, window by window (its progress task lives and ends with the iteration)."""
        window = self.config.inference.window
        n_windows = -(-self.plan.num_frames // window)
        for s, e in progress.track(self.plan.windows(window), "windows", total=n_windows):
            yield self.prepare(reader, s, e)

    # ---------------------------------------------------------------------------------------------
    def prepare(self, reader: IndexedReader | StreamFrames, s: int, e: int) -> Window:
        """Stage 1 (step 4 and the masks of 5): the source frames of output frames ``s .. e-1``, aligned faces and masked
        images."""
        import cv2
        import torch

        from lipsyncctl.faces.mask import prepare_masked_images

        plan, clock = self.plan, self.clock
        src = plan.source_indices(s, e)
        with clock("decode"):
            got = reader.read_sources(src)
        base = plan.first_frame
        records = [self.faces.at(i - base) for i in src]  # a FaceStream waits here for the face pass
        mats = [m for m, _ in records]
        weights = [w for _, w in records]
        decoded = [got[i][1] for i in src]
        win = Window(s, e, src, [got[i][0] for i in src], mats, weights,
                     [k for k, m in enumerate(mats) if m is not None and weights[k] > 0],
                     sources=list(decoded) if self.splicer is not None else None)
        del got
        if win.sources is not None:  # a frame without a face is the source's own now (its RGB image is not kept)
            with clock("decode"):  # this thread's stage (a clock's stage is timed by one thread)
                for k, source in enumerate(win.sources):
                    if k not in win.faces:
                        spliced = self.splicer.frame(source)
                        win.frames[k] = win.frames[k] if spliced is None else spliced
                        win.sources[k] = None
        if win.faces:
            with clock("align"):
                crops = []
                for k in win.faces:
                    crop = self.aligner.warp_crop(win.frames[k], mats[k])
                    crops.append(cv2.resize(crop, (self.res, self.res), interpolation=cv2.INTER_LANCZOS4))
                faces_u8 = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
                win.ref, win.masked, win.masks = prepare_masked_images(faces_u8, self.mask)
                if self.networks.device.type == "cuda":
                    win.pin()
        if any(f.stored is not None for f in decoded):
            # A deinterlaced read: the faces were found and aligned on progressive pictures; the output is
            # made of the source's own (both fields as stored), the faces pasted onto it.
            with clock("decode"):
                for k, f in enumerate(decoded):
                    if isinstance(win.frames[k], np.ndarray):  # not already the source's spliced frame
                        win.frames[k] = f.source_image(win.frames[k])
        return win

    def generate(self, wins: list[Window]) -> list[Window]:
        """Stage 2 (steps 5-7, the networks): the generated faces of ``wins`` (drawing from the run's generator).

        The windows are VAE-encoded one after the other (the generator's draws are those of one window at a
        time) and denoised together, those with the same number of faces in one UNet batch
        (``inference.batch_windows``)."""
        import torch

        from lipsyncctl.audio.features import feature_chunks
        from lipsyncctl.faces.mask import latent_mask
        from lipsyncctl.pipeline import vae as vae_io
        from lipsyncctl.pipeline.denoise import denoise

        todo = [win for win in wins if win.faces]
        if not todo:
            return wins
        networks, clock, inf = self.networks, self.clock, self.config.inference

        def video(x: torch.Tensor) -> torch.Tensor:  # f c h w -> 1 c f h w
            return x.permute(1, 0, 2, 3).unsqueeze(0)

        # 5. VAE encode (masked first, then reference, as upstream), window by window.
        cond: list[dict[str, torch.Tensor]] = []
        with clock("vae encode"):
            for win in todo:
                cond.append({
                    "masked_image_latents": video(vae_io.encode(networks.vae, win.masked, self.generator,
                                                                inf.vae_batch)),
                    "ref_latents": video(vae_io.encode(networks.vae, win.ref, self.generator, inf.vae_batch)),
                    "mask_latents": video(latent_mask(win.masks).to(networks.device, networks.dtype,
                                                                    non_blocking=True))})
        # 6. Denoise: windows with as many faces in one batch (B, c, f, h, w).
        latents: list[torch.Tensor] = [torch.empty(0)] * len(todo)
        with clock("denoise"):
            for n in dict.fromkeys(len(win.faces) for win in todo):
                batch = [i for i, win in enumerate(todo) if len(win.faces) == n]
                audio = torch.cat([feature_chunks(self.features, todo[i].stop - todo[i].start, self.plan.fps,
                                                  start=todo[i].start)[todo[i].faces] for i in batch])
                audio = audio.to(networks.device, networks.dtype, non_blocking=True)
                with torch.inference_mode():
                    out = denoise(networks.unet, networks.scheduler,
                                  latents=self.noise.repeat(len(batch), 1, n, 1, 1), audio_embeds=audio,
                                  **{k: torch.cat([cond[i][k] for i in batch]) for k in cond[0]},
                                  steps=inf.steps, guidance_scale=inf.guidance,
                                  cache_interval=inf.deepcache_interval if inf.deepcache else None)
                for j, i in enumerate(batch):
                    latents[i] = out[j]
        # 7. Decode; generated pixels only inside the mouth mask (official paste_surrounding_pixels_back).
        with clock("vae decode"):
            for win, lat in zip(todo, latents, strict=True):
                decoded = vae_io.decode(networks.vae, lat.permute(1, 0, 2, 3), inf.vae_batch, on_device=inf.gpu_paste)
                masks, ref = (t.to(decoded.device, non_blocking=True) for t in (win.masks, win.ref))
                win.decoded = decoded * (1 - masks) + ref * masks
                win.masked = None
                if self.paste_stream is not None:
                    win.ready = torch.cuda.Event()
                    win.ready.record()
        return wins

    def paste(self, win: Window, mattes: bool = False) -> Window:
        """Stage 3 (the rest of step 7): paste the generated faces back and cross-fade (``win.frames`` become the output
        frames: spliced into the source's own pixels where :attr:`splicer` applies, :mod:`lipsyncctl.media.splice`),
        and with ``mattes`` the matte's frames (``win.mattes``)."""
        import contextlib

        from lipsyncctl.faces.blend import paste_face

        on_stream = contextlib.nullcontext()
        if self.paste_stream is not None and win.ready is not None:
            import torch

            self.paste_stream.wait_event(win.ready)
            on_stream = torch.cuda.stream(self.paste_stream)
        with self.clock("paste"), on_stream:
            if mattes:
                win.mattes = [self._matte(f, win.matrices[k], win.weights[k]) if k in win.faces
                              else np.zeros((f.height, f.width, 3), np.uint8) if hasattr(f, "planes")
                              else np.zeros_like(f) for k, f in enumerate(win.frames)]
            for j, k in enumerate(win.faces):
                frame, mat, w = win.frames[k], win.matrices[k], win.weights[k]
                pasted = paste_face(self.aligner, frame, win.decoded[j], mat, blend=self.config.faces.blend,
                                    reference=win.ref[j], keep_mask=self.mask)
                if w < 1.0:  # cross-fade where the face comes back or leaves
                    blend = frame.astype(np.float32) + w * (pasted.astype(np.float32) - frame)
                    pasted = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
                if win.sources is not None:
                    box = self.aligner.paste_bounds(frame.shape[:2], mat)  # the pixels outside it are the frame's
                    spliced = self.splicer.frame(win.sources[k], frame, pasted, within=box)
                    win.frames[k] = pasted if spliced is None else spliced
                    win.sources[k] = None
                else:
                    win.frames[k] = pasted
        win.decoded = win.ref = win.masks = win.sources = win.ready = None
        return win

    def encode(self, win: Window, writer: VideoWriter, matte: VideoWriter | None) -> None:
        """Stage 4 (step 8): encode the output frames (and the matte)."""
        from lipsyncctl.pipeline.memory import trim_heap

        with self.clock("encode"):
            for k, frame in enumerate(win.frames):
                writer.write(frame)
                if matte is not None and win.mattes is not None:
                    matte.write(win.mattes[k])
        trim_heap()  # keep RSS flat over long clips (see lipsyncctl.pipeline.memory)

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


def _batched(items: Iterator[Window], n: int) -> Iterator[list[Window]]:
    """``items`` in lists of ``n`` (the last one shorter)."""
    group: list[Window] = []
    for item in items:
        group.append(item)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group
