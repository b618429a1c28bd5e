"""How much GPU memory a training run needs: :func:`estimate_training_memory` (an estimate, not a measure).

``total = weights + gradients + optimizer + activations + vae_decode + loss_networks + recompute + overhead``
(GiB, 2**30 bytes, what torch and nvidia-smi call GB), for one process and one micro-batch:

- **weights**: the trained network's fp32 master weights (UNet or StableSyncNet; counted on the meta
  device from its config) + the frozen networks in the run's weight dtype (2 bytes in bf16/fp16, 4 in
  fp32): the VAE (83.65 M), and with pixel supervision the weighted loss networks: StableSyncNet (401.3 M),
  LPIPS' VGG16 trunk (14.7 M, always in fp32 and run outside autocast, as the official) and VideoMAE-v2 ViT-g (1 011.9 M, counted from :mod:`lipsyncctl.nets.videomae`).
- **gradients**: fp32, trainable parameters only (674.8 M in stage 2, 284.7 M efficient, all in stage 1).
- **optimizer**: AdamW's two fp32 moments per trainable parameter (+ one fp32 copy with ``run.ema_decay``).
- **activations**: what the trained network keeps for backward (:func:`unet_activation_bytes`), modelled
  unit by unit from the architecture: every resnet, spatial transformer and motion module at its level's
  ``B x F x (res / 8 / 2**level)**2`` latent positions and its channel width, times a measured byte count
  per position and channel (:data:`UNIT_BYTES`); under bf16/fp16 autocast plus the half copies autocast
  makes of the fp32 weights (2 bytes per parameter), which backward keeps. With gradient checkpointing only
  each checkpointed unit's input stays (its width x 2 bytes), plus the samplers and the output head.
- **vae_decode**: pixel supervision decodes the one-step x0 of all ``B x F`` frames at full resolution with
  gradients (:data:`VAE_DECODE_BYTES` per output pixel; checkpointed: the blocks' inputs and the output
  head stay).
- **loss_networks**: LPIPS on the lower halves, the StableSyncNet on the 16-frame stack, TREPA's VideoMAE on
  the 224 px clip (per sample; checkpointed per block).
- SyncNet runs (kind ``syncnet``): the trained StableSyncNet's activations on the run's own input (pixels or
  latents, lower half or not, its frame count) are counted on the meta device for its config at estimate
  time (:func:`syncnet_activation_bytes`): all kept, kept with both towers' blocks checkpointed, and the
  largest block for the recompute term; the frozen sync-loss StableSyncNet of a UNet run the same way.
- **recompute**: with checkpointing, the backward pass re-runs one checkpointed segment at a time; the peak
  holds the largest one in full (the VAE decoder's last up block, 16 frames at full resolution, dominates).
- **overhead**: the CUDA context and kernels (:data:`CUDA_CONTEXT_GB`) and the batch on the GPU.

The sum is conservative in one respect: gradients are counted in full although, with ``grad_accum`` 1,
they are allocated while backward frees the activations (the real peak can be lower by up to the gradient
size). Allocator fragmentation is not counted.

Calibration. The byte counts are measured, not guessed: :func:`measure_saved_bytes` counts the tensors
autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters
excluded) while a network runs on the meta device (no memory, no compute, full size) under the dtype
rules of CUDA autocast (conv/linear/attention in half, group/layer norm and reductions in fp32) and with
flash attention's saved set (q, k, v, out, logsumexp). ``tests/unit/test_train_memory.py`` checks that this
equals a real CPU forward of the tiny UNet at two resolutions with and without checkpointing, and that the
formula stays within a few percent of the meta measurement of the real training step for the official
presets. The peak of a real GPU step is what ``scripts/gpu_train_check.py`` records.

Official figures (README: one GPU, batch 1, fp16 + checkpointing) against this estimate (bf16/fp16 and
checkpointing, ``estimate_training_memory(resolve_train_config(name)).total_gb``):

================  ========  ========  =================================================================
preset            official  estimate  why they differ
================  ========  ========  =================================================================
stage2 (256)      30 GB     29.0 GiB  The official run holds what this one does not: a DDP copy of the
                                      gradients (torchrun wraps the UNet even on one GPU: +2.5 GiB), the
                                      validation-only networks (whisper tiny in fp32, SyncNet v2, S3FD:
                                      +0.3 GiB) and the allocator's slack (nvidia-smi figures).
                                      This one decodes the x0 under autocast (the VAE's group
                                      norms in fp32): +4.5 GiB over the official plain-fp16 decode.
                                      Net: official minus its waste ~27.2 GiB vs 29.0 GiB.
stage2_efficient  20 GB     21.9 GiB  The same terms (DDP gradients +1.1 GiB): ~18.7 vs 21.9 GiB.
stage2_512        55 GB     68.0 GiB  The autocast decode grows with the pixels (+18 GiB at 512).
stage1 / _512     23 / 30   14.3/16.5 Full fine-tune: + DDP gradients (3.2 GiB) gives 17.5 / 19.7; without
                                      checkpointing 19.7 / 33.6 GiB. The rest of the gap is not explained
                                      by anything in the official script.
================  ========  ========  =================================================================

The recompute term dominates every pixel-supervised preset: the backward pass re-runs the VAE decoder's
last up block for all 16 frames at once (9.3 GiB at 256, 37 GiB at 512). Decoding outside autocast
(the VAE already holds half weights) would save 4.5 / 18 GiB; decoding a few frames per checkpointed
call would divide the recompute term by the number of chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lipsyncctl.runner.gpus import GiB
from lipsyncctl.runner.vram import TINY_VAE_ACT_SCALE, TINY_VAE_PARAMS, VAE_PARAMS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lipsyncctl.training.config import TrainConfig
    from lipsyncctl.training.networks import TrainNetworks

#: CUDA context, cuBLAS/cuDNN handles and kernels of one training process (no allocator slack).
CUDA_CONTEXT_GB = 0.6
#: Bytes per parameter: AdamW's exp_avg and exp_avg_sq in fp32; fp32 gradients and master weights.
ADAM_BYTES, GRAD_BYTES, MASTER_BYTES = 8, 4, 4
#: The official TREPA network when ``nets/videomae.py`` cannot be imported (VideoMAE-v2 ViT-g/14, 174 classes).
VIDEOMAE_GIANT_PARAMS = 1_011_855_918

#: Bytes kept for backward per latent position and channel of a UNet unit, measured with
#: :func:`measure_saved_bytes` on the stage2 UNet (fits over every unit at 256 and 512 px, the weight copies
#: taken out). Keys: unit kind and which of its parameters train; ``16`` = bf16/fp16 autocast, ``32`` = fp32.
#: resnet: (per input channel, per output channel, extra per input channel with a 1x1 shortcut).
#: transformer/motion: (per channel and position, per channel and frame: the audio context's keys/values).
#: down/up samplers: per channel and position of their input.
UNIT_BYTES: dict[int, dict[str, tuple[float, ...]]] = {
    16: {"resnet": (10.0, 10.0, 2.0), "transformer": (74.3, 136.0), "transformer_cross": (60.3, 136.0),
         "transformer_frozen": (56.3, 75.0), "motion": (84.4, 0.0), "motion_frozen": (56.3, 0.0),
         "down": (2.0,), "up": (8.0,), "out": (10.0,)},
    32: {"resnet": (10.6, 13.4, 0.9), "transformer": (124.3, 369.0), "transformer_cross": (104.3, 369.0),
         "transformer_frozen": (96.3, 374.0), "motion": (150.4, 0.0), "motion_frozen": (96.3, 0.0),
         "down": (4.0,), "up": (16.0,), "out": (12.0,)},
}
#: sd-vae-ft-mse decoder with gradients, bytes per output pixel (measured at 256 and 512 px; linear in the
#: pixel count): everything kept, kept with block checkpointing, and its last up block (the recompute peak).
VAE_DECODE_BYTES: dict[int, dict[str, float]] = {
    16: {"full": 19136.5, "checkpointed": 2144.3, "recompute": 9472.0},
    32: {"full": 22752.7, "checkpointed": 3264.5, "recompute": 10752.0},
}
#: LPIPS-VGG per pixel of the lower-half images it compares (the fake side keeps its activations).
LPIPS_BYTES_PER_PIXEL = {16: 2076.7, 32: 2438.7}
#: TREPA's VideoMAE-v2 ViT-g per clip (2048 tokens): everything kept, kept with block checkpointing,
#: one block (the recompute peak).
VIDEOMAE_BYTES: dict[int, dict[str, float]] = {
    16: {"full": 2736.3 * 2**20, "checkpointed": 229.2 * 2**20, "recompute": 68.2 * 2**20},
    32: {"full": 4584.6 * 2**20, "checkpointed": 458.4 * 2**20, "recompute": 114.2 * 2**20},
}
#: an activation term of a network the run does not hold (the keys of every activation term)
NOTHING_KEPT: dict[str, float] = {"full": 0.0, "checkpointed": 0.0, "recompute": 0.0}
#: The tiny stand-ins' activations relative to the real networks (channel widths; VideoMAE width x depth).
TINY_SCALE = {"vae": TINY_VAE_ACT_SCALE, "lpips": 8 / 64, "videomae": 32 / 1408 * 2 / 40}


@dataclass(frozen=True)
class MemoryParts:
    """One breakdown, in GiB."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    vae_decode: float
    loss_networks: float
    recompute: float
    overhead: float

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def to_dict(self) -> dict[str, float]:
        return {**{k: round(v, 3) for k, v in asdict(self).items()}, "total": round(self.total, 3)}


@dataclass(frozen=True)
class TrainMemory:
    """The estimate of one training configuration (GiB); ``configured`` follows ``run.grad_checkpointing``."""

    preset: str
    kind: str
    precision: str                     # "16-bit" (bf16/fp16 autocast, frozen networks in half) or "fp32"
    checkpointing: bool
    batch_size: int
    resolution: int
    trained_params: int
    trainable_params: int
    networks: dict[str, int]           # parameters of every network held on the GPU
    configured: MemoryParts
    checkpointed: MemoryParts
    full: MemoryParts
    free_gb: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_gb(self) -> float:
        return self.configured.total

    @property
    def fits(self) -> bool | None:
        """Whether the configured total fits ``free_gb`` (None without a GPU figure)."""
        return None if self.free_gb is None else self.total_gb <= self.free_gb

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("configured", "checkpointed", "full"):
            out[k] = getattr(self, k).to_dict()
        out.update(total_gb=round(self.total_gb, 3), fits=self.fits, notes=list(self.notes))
        return out


# ----------------------------------------------------------------------------------------------------
# Parameter counts (meta device: no memory, no weights)


@functools.lru_cache(maxsize=16)
def meta_unet(unet_config: str) -> nn.Module:
    """The UNet architecture ``unet_config`` (a name or file) built on the meta device: no memory, no weights."""
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.nets.unet import UNet3DConditionModel

    with torch.device("meta"):
        return UNet3DConditionModel(archs.load_unet_config(unet_config))


@functools.lru_cache(maxsize=16)
def _params(role: str, name: str) -> int:
    """Parameter count of a frozen or trained network by role and config name."""
    import torch

    with torch.device("meta"):
        if role == "syncnet":
            from lipsyncctl.checkpoints import archs
            from lipsyncctl.nets.syncnet import StableSyncNet

            module: nn.Module = StableSyncNet(archs.load_syncnet_config(name))
        elif role == "lpips":
            from lipsyncctl.checkpoints.aux_train import TINY_VGG_WIDTHS
            from lipsyncctl.nets.lpips import LPIPS
            from lipsyncctl.nets.vgg import VGG16_WIDTHS

            module = LPIPS(TINY_VGG_WIDTHS if name == "tiny" else VGG16_WIDTHS)
        else:  # videomae
            try:
                from lipsyncctl.checkpoints.aux_train import VIDEOMAE_CONFIGS
                from lipsyncctl.nets.videomae import VideoMAEConfig, VisionTransformer
            except ImportError:  # not in this build: the official figure
                return VIDEOMAE_GIANT_PARAMS
            module = VisionTransformer(VideoMAEConfig(**VIDEOMAE_CONFIGS[name]))
    return sum(p.numel() for p in module.parameters())


def _lora_params(unet_config: str, rule: tuple[str, ...], rank: int) -> int:
    """Parameters of rank-``rank`` adapters on the attention projections ``rule`` selects (A: r x in, B: out x r)."""
    from lipsyncctl.training.lora import target_modules

    model = meta_unet(unet_config)
    modules = dict(model.named_modules())
    return sum(rank * (modules[n].in_features + modules[n].out_features) for n in target_modules(model, rule))


# ----------------------------------------------------------------------------------------------------
# UNet activations, unit by unit


@dataclass(frozen=True)
class _Unit:
    kind: str          # resnet, transformer, motion, down, up
    trained: str       # "all", "some" or "none" of its parameters
    c_in: int
    c_out: int
    level: int         # latent size / 2**level
    params: int


def _units(model: nn.Module, rule: tuple[str, ...]) -> Iterator[_Unit]:
    """The UNet's units in forward order (down blocks, mid block, up blocks)."""
    from lipsyncctl.training.trainable import is_trainable

    def unit(kind: str, prefix: str, module: nn.Module, c_in: int, c_out: int, level: int) -> _Unit:
        names = [f"{prefix}.{n}" for n, _ in module.named_parameters()]
        hits = sum(is_trainable(n, rule) for n in names)
        trained = "all" if hits == len(names) else "some" if hits else "none"
        return _Unit(kind, trained, c_in, c_out, level, sum(p.numel() for p in module.parameters()))

    def layers(prefix: str, block: Any, level: int) -> Iterator[_Unit]:
        for i, res in enumerate(block.resnets):
            yield unit("resnet", f"{prefix}.resnets.{i}", res, res.norm1.num_channels, res.conv1.out_channels, level)
            c = res.conv1.out_channels
            if block.attentions is not None and i < len(block.attentions):
                yield unit("transformer", f"{prefix}.attentions.{i}", block.attentions[i], c, c, level)
            if block.motion_modules is not None and i < len(block.motion_modules):
                yield unit("motion", f"{prefix}.motion_modules.{i}", block.motion_modules[i], c, c, level)

    for lvl, block in enumerate(model.down_blocks):
        yield from layers(f"down_blocks.{lvl}", block, lvl)
        if block.downsamplers is not None:
            c = block.resnets[-1].conv1.out_channels
            yield unit("down", f"down_blocks.{lvl}.downsamplers.0", block.downsamplers[0], c, c, lvl)
    mid, deepest = model.mid_block, len(model.down_blocks) - 1
    c = mid.resnets[0].conv1.out_channels
    yield unit("resnet", "mid_block.resnets.0", mid.resnets[0], c, c, deepest)
    for i, attn in enumerate(mid.attentions):  # official order: transformer, [motion], resnet
        yield unit("transformer", f"mid_block.attentions.{i}", attn, c, c, deepest)
        if mid.motion_modules is not None:
            yield unit("motion", f"mid_block.motion_modules.{i}", mid.motion_modules[i], c, c, deepest)
        yield unit("resnet", f"mid_block.resnets.{i + 1}", mid.resnets[i + 1], c, c, deepest)
    for i, block in enumerate(model.up_blocks):
        lvl = deepest - i
        yield from layers(f"up_blocks.{i}", block, lvl)
        if block.upsamplers is not None:
            c = block.resnets[-1].conv1.out_channels
            yield unit("up", f"up_blocks.{i}.upsamplers.0", block.upsamplers[0], c, c, lvl)


def _unit_full(u: _Unit, positions: float, frames: int, bits: int) -> float:
    """Bytes unit ``u`` keeps for backward when nothing is checkpointed (weight copies included)."""
    table = UNIT_BYTES[bits]
    if u.kind == "resnet":
        per_in, per_out, shortcut = table["resnet"]
        act = positions * (per_in * u.c_in + per_out * u.c_out + (shortcut * u.c_in if u.c_in != u.c_out else 0))
    elif u.kind in ("transformer", "motion"):
        key = u.kind + {"all": "", "some": "_cross", "none": "_frozen"}[u.trained]
        per_pos, per_frame = table.get(key, table[u.kind + "_frozen"])  # motion with some trained: ~frozen
        act = (positions * per_pos + frames * per_frame) * u.c_out
    else:
        act = positions * table[u.kind][0] * u.c_in
    return act + (2 * u.params if bits == 16 else 0)


@dataclass(frozen=True)
class UNetActivations:
    full: float          # bytes, nothing checkpointed
    checkpointed: float  # bytes kept with checkpointing (inputs of checkpointed units, samplers, head)
    recompute: float     # bytes of the largest checkpointed unit, re-run in backward


def unet_activation_bytes(unet_config: str, rule: tuple[str, ...], *, resolution: int, frames: int,
                          batch: int, bits: int) -> UNetActivations:
    """What a UNet keeps for backward in one micro-step (see the module docstring). Units before the first
    one with trained parameters keep nothing (no gradient flows there)."""
    model = meta_unet(unet_config)
    latent = resolution // 8
    act_bytes = bits // 8
    full = ckpt = biggest = 0.0
    on_path = not rule  # stage 1 trains conv_in: everything is on the gradient path
    for u in _units(model, rule):
        on_path = on_path or u.trained != "none"
        if not on_path:
            continue
        positions = batch * frames * (latent / 2**u.level) ** 2
        cost = _unit_full(u, positions, batch * frames, bits)
        full += cost
        if u.kind in ("down", "up"):  # not checkpointed
            ckpt += cost
        else:
            ckpt += positions * u.c_in * act_bytes
            biggest = max(biggest, cost)
    head = UNIT_BYTES[bits]["out"][0] * model.config.block_out_channels[0] * batch * frames * latent**2
    return UNetActivations(full + head, ckpt + head, biggest)


@dataclass(frozen=True)
class SyncNetActivations:
    """What a StableSyncNet keeps for backward, in bytes: ``per_sample`` and ``fixed`` (once per step: the
    half copies autocast makes of fp32 weights) for everything kept (``full``), kept with both towers'
    blocks checkpointed (``checkpointed``), and the largest block re-run in backward (``recompute``)."""

    full: tuple[float, float]          # (per_sample, fixed)
    checkpointed: tuple[float, float]
    recompute: tuple[float, float]

    def at(self, batch: int) -> dict[str, float]:
        """The three figures for a micro-batch of ``batch`` samples."""
        return {k: batch * per + fixed for k, (per, fixed) in
                (("full", self.full), ("checkpointed", self.checkpointed), ("recompute", self.recompute))}


@functools.lru_cache(maxsize=32)
def syncnet_activation_bytes(config: str, visual: tuple[int, int, int], mel_columns: int, *, bits: int,
                             trained: bool) -> SyncNetActivations:
    """Measured on the meta device (:func:`measure_saved_bytes`, full size, no memory): the StableSyncNet
    ``config`` on a ``visual`` ``(C, H, W)`` input and an ``(1, 80, mel_columns)`` mel. ``trained``: fp32
    weights with gradients under autocast (kind ``syncnet``); else frozen in the run's weight dtype with a
    gradient to the visual input (the sync loss of a UNet run). Each figure is counted at batch 1 and 2:
    their difference is the per-sample part, the rest is fixed."""
    import torch

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.nets.syncnet import StableSyncNet

    half = torch.float16 if bits == 16 else None
    with torch.device("meta"):
        net = StableSyncNet(archs.load_syncnet_config(config))
    if not trained:
        net = net.to(dtype=half or torch.float32).eval()
    net.requires_grad_(trained)
    blocks = [*net.audio_encoder.down_blocks, *net.visual_encoder.down_blocks]

    def step(batch: int) -> Callable[[], Any]:
        def run() -> Any:
            dtype = torch.float32 if trained else (half or torch.float32)
            image = torch.zeros((batch, *visual), device="meta", dtype=dtype, requires_grad=not trained)
            mel = torch.zeros((batch, 1, 80, mel_columns), device="meta", dtype=dtype)
            vision, audio = net(image, mel)
            return (vision.float() * audio.float()).sum()
        return run

    def split(one: float, two: float) -> tuple[float, float]:
        return two - one, 2 * one - two

    full = [measure_saved_bytes_by(step(b), blocks, [net], half=half) for b in (1, 2)]
    net.enable_gradient_checkpointing(True)
    ckpt = [measure_saved_bytes(step(b), [net], half=half) for b in (1, 2)]
    worst = max(range(len(blocks)), key=lambda i: full[1][1][i])
    return SyncNetActivations(split(full[0][0], full[1][0]), split(ckpt[0], ckpt[1]),
                              split(full[0][1][worst], full[1][1][worst]))


def _syncnet_activations(cfg: TrainConfig, bits: int) -> SyncNetActivations:
    """:func:`syncnet_activation_bytes` for the StableSyncNet of ``cfg``: the trained one of a SyncNet run
    on its dataset's input (pixels, or VAE latents with ``data.latent_space``; the lower half with
    ``data.lower_half``), or the frozen sync-loss one of a UNet run on the decoded frames' lower half
    (resized to 256 at other resolutions: :func:`~lipsyncctl.training.losses.syncnet_frames`)."""
    from lipsyncctl.checkpoints import archs
    from lipsyncctl.training.data import mel_columns
    from lipsyncctl.training.losses import SYNCNET_SIZE

    name, res = cfg.model.syncnet_config, cfg.model.resolution
    if cfg.kind == "syncnet":
        f = cfg.data.num_frames
        if cfg.data.latent_space:
            h = res // 8
            visual = (4 * f, h // 2 if cfg.data.lower_half else h, h)
        else:
            visual = (3 * f, res // 2 if cfg.data.lower_half else res, res)
        return syncnet_activation_bytes(name, visual, mel_columns(f), bits=bits, trained=True)
    channels = archs.load_syncnet_config(name).visual_encoder.in_channels  # 3 per frame
    return syncnet_activation_bytes(name, (channels, SYNCNET_SIZE // 2, SYNCNET_SIZE), mel_columns(channels // 3),
                                    bits=bits, trained=False)


# ----------------------------------------------------------------------------------------------------
# The estimate


def _bits(cfg: TrainConfig) -> int:
    """16 for bf16/fp16 (``auto`` is one of them on a GPU), 32 for ``no``."""
    return 32 if cfg.run.mixed_precision == "no" else 16


def _tiny(name: str, role: str) -> float:
    return TINY_SCALE[role] if name == "tiny" else 1.0


def _parts(*, weights: float, gradients: float, optimizer: float, activations: float, vae: float,
           losses: float, recompute: float, overhead: float) -> MemoryParts:
    return MemoryParts(*(x / GiB for x in (weights, gradients, optimizer, activations, vae, losses, recompute,
                                           overhead)))


def estimate_training_memory(cfg: TrainConfig, *, free_gb: float | None = None) -> TrainMemory:
    """Estimate the peak GPU memory of one training process for ``cfg`` (module docstring: the formula).

    Args:
        cfg: a resolved training configuration (``mixed_precision`` auto counts as bf16/fp16).
        free_gb: free memory of the GPU in GiB, for :attr:`TrainMemory.fits`.
    """
    bits = _bits(cfg)
    half = 2 if bits == 16 else 4
    b, f, res = cfg.data.batch_size, cfg.data.num_frames, cfg.model.resolution
    notes: list[str] = []
    if cfg.run.mixed_precision == "auto":
        notes.append("mixed_precision auto counted as bf16/fp16 (a GPU run)")
    if cfg.kind == "syncnet":
        trained = _params("syncnet", cfg.model.syncnet_config)
        networks = {"syncnet (trained)": trained}
        act = _syncnet_activations(cfg, bits).at(b)
        batch_bytes = b * (3 * f * res * res // 2 + 80 * 52) * 4
        vae_weights = 0.0
        if cfg.data.latent_space:  # the frozen VAE that encodes the frames (its encode activations: no grad)
            networks["vae"] = TINY_VAE_PARAMS if cfg.model.vae == "tiny" else VAE_PARAMS
            vae_weights = half * networks["vae"]
            notes.append("latent space: the VAE's weights counted; its no-grad encode (640 frames per call) not")
        common = dict(weights=MASTER_BYTES * trained + vae_weights, gradients=GRAD_BYTES * trained,
                      optimizer=(ADAM_BYTES + 4 * bool(cfg.run.ema_decay)) * trained, vae=0.0, losses=0.0,
                      recompute=0.0, overhead=CUDA_CONTEXT_GB * GiB + batch_bytes)
        full = _parts(activations=act["full"], **common)
        checkpointed = _parts(activations=act["checkpointed"], **{**common, "recompute": act["recompute"]})
        return TrainMemory(cfg.name, cfg.kind, f"{bits}-bit" if bits == 16 else "fp32", cfg.run.grad_checkpointing,
                           b, res, trained, trained, networks, checkpointed if cfg.run.grad_checkpointing else full,
                           checkpointed, full, free_gb, tuple(notes))

    # 1. the UNet: fp32 master weights, trained parameters (the rule, or LoRA adapters instead)
    from lipsyncctl.training import trainable

    rule = tuple(cfg.model.trainable)
    meta = meta_unet(cfg.model.unet_config)
    trainable.check_rule((name for name, _ in meta.named_parameters()), rule)  # (a typo counted nothing, in silence)
    counts = trainable.count(meta.named_parameters(), rule)
    unet_params = counts.params + counts.frozen_params
    trained = counts.params
    if cfg.run.lora_rank:
        trained = _lora_params(cfg.model.unet_config, rule, cfg.run.lora_rank)
        notes.append(f"LoRA rank {cfg.run.lora_rank}: {trained:,} adapter parameters train, the UNet is frozen")
    networks = {"unet": unet_params, "vae": TINY_VAE_PARAMS if cfg.model.vae == "tiny" else VAE_PARAMS}
    # 2. the frozen loss networks of the weighted pixel-space terms
    pixel = cfg.pixel_supervision
    if pixel and cfg.loss.sync:
        networks["syncnet"] = _params("syncnet", cfg.model.syncnet_config)
    if pixel and cfg.loss.lpips:
        networks["lpips"] = _params("lpips", cfg.model.lpips)
    if pixel and cfg.loss.trepa:
        networks["videomae"] = _params("videomae", cfg.model.videomae_config)
    weights = MASTER_BYTES * unet_params + sum(v * (4 if k == "lpips" else half) for k, v in networks.items()
                                               if k != "unet")  # LPIPS in float32 (official)
    weights += MASTER_BYTES * trained if cfg.run.lora_rank else 0
    gradients = GRAD_BYTES * trained
    optimizer = (ADAM_BYTES + 4 * bool(cfg.run.ema_decay)) * trained
    # 3. activations: the UNet, the decode and the loss networks
    lora_rule = rule if not cfg.run.lora_rank else ("to_q", "to_k", "to_v", "to_out.0")
    unet = unet_activation_bytes(cfg.model.unet_config, lora_rule, resolution=res, frames=f, batch=b, bits=bits)
    pixels = b * f * res * res
    vae = {k: v * pixels * _tiny(cfg.model.vae, "vae") for k, v in VAE_DECODE_BYTES[bits].items()} if pixel \
        else NOTHING_KEPT
    losses = 0.0
    if "lpips" in networks:
        losses += LPIPS_BYTES_PER_PIXEL[32] * pixels / 2 * _tiny(cfg.model.lpips, "lpips")  # in float32 always
    sync = _syncnet_activations(cfg, bits).at(b) if "syncnet" in networks else NOTHING_KEPT
    vmae = {k: v * b * _tiny(cfg.model.videomae_config, "videomae") for k, v in VIDEOMAE_BYTES[bits].items()} \
        if "videomae" in networks else NOTHING_KEPT
    # 4. the batch on the GPU (gt, masked, reference frames in fp32, audio features) and the context
    batch_bytes = b * f * (3 * 3 * res * res + 50 * 384) * 4
    overhead = CUDA_CONTEXT_GB * GiB + batch_bytes
    common = dict(weights=weights, gradients=gradients, optimizer=optimizer, overhead=overhead)
    checkpointed = _parts(activations=unet.checkpointed, vae=vae["checkpointed"],
                          losses=losses + vmae["checkpointed"] + sync["checkpointed"],
                          recompute=max(unet.recompute, vae["recompute"], vmae["recompute"], sync["recompute"]),
                          **common)
    full = _parts(activations=unet.full, vae=vae["full"], losses=losses + vmae["full"] + sync["full"], recompute=0.0,
                  **common)
    if pixel and bits == 16:
        notes.append("the x0 is decoded under autocast (VAE group norms in fp32)")
    return TrainMemory(cfg.name, cfg.kind, "16-bit" if bits == 16 else "fp32", cfg.run.grad_checkpointing, b, res,
                       unet_params, trained, networks, checkpointed if cfg.run.grad_checkpointing else full,
                       checkpointed, full, free_gb, tuple(notes))


# ----------------------------------------------------------------------------------------------------
# Measurement (calibration, tests, the GPU check)


def _storage_key(t: torch.Tensor) -> int:
    return int(t.untyped_storage()._cdata)


def _cuda_autocast_mode(half: torch.dtype | None) -> Any:
    """A torch-function mode that applies CUDA autocast's dtype rules on any device (the CPU's own autocast
    keeps norms in half), and on the meta device gives ``scaled_dot_product_attention`` flash attention's
    saved set (q, k, v, out as a (B, L, H, D) view, fp32 logsumexp) instead of the math fallback's matrix."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch.overrides import TorchFunctionMode

    from lipsyncctl.training.perceptual import IN_FLOAT32

    to_half = {torch.conv1d, torch.conv2d, torch.conv3d, F.linear, torch.matmul, torch.mm, torch.bmm,
               torch.baddbmm, torch.addmm, torch.einsum, F.scaled_dot_product_attention, torch.Tensor.matmul,
               torch.Tensor.__matmul__}
    to_float = {F.group_norm, F.layer_norm, torch.group_norm, torch.layer_norm, F.softmax, F.log_softmax,
                torch.softmax, torch.Tensor.softmax, F.mse_loss, F.binary_cross_entropy, F.normalize, torch.norm,
                torch.Tensor.norm, torch.rsqrt, torch.Tensor.rsqrt, torch.exp, torch.Tensor.exp, torch.pow,
                torch.Tensor.pow, torch.Tensor.__pow__, torch.sum, torch.Tensor.sum, torch.cumsum,
                torch.logsumexp, F.cosine_similarity}

    def cast(x: Any, dtype: torch.dtype) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x
        if isinstance(x, (list, tuple)):
            return type(x)(cast(y, dtype) for y in x)
        return x

    class Flash(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                    lse: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(q, k, v, out, lse)
            return out.view_as(out)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> Any:  # counting only
            raise NotImplementedError("meta-device attention is for counting saved bytes")

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            target = half if func in to_half else torch.float32 if func in to_float else None
            if half is not None and target is not None and not IN_FLOAT32.get():  # perceptual.in_float32: none
                args, kwargs = cast(args, target), {k: cast(v, target) for k, v in kwargs.items()}
            if func is F.scaled_dot_product_attention and args[0].device.type == "meta":
                q, k, v = args[:3]
                b, h, n = q.shape[:3]
                out = torch.empty(b, n, h, v.shape[-1], dtype=q.dtype, device="meta").transpose(1, 2)
                if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
                    lse = torch.empty(b, h, n, dtype=torch.float32, device="meta")
                    return Flash.apply(q, k, v, out, lse)
                return out
            return func(*args, **kwargs)

    return Mode()


def measure_saved_bytes(fn: Callable[[], Any], modules: Iterable[nn.Module] = (), *,
                        half: torch.dtype | None = None) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn()`` runs: every saved storage once,
    the parameters and buffers of ``modules`` excluded (they are weights, counted apart). ``half``: apply
    CUDA autocast's rules with this dtype (None: run as is). Works on the meta device (full-size networks
    at no cost) and on real tensors (then it equals what the CPU actually keeps)."""
    return measure_saved_bytes_by(fn, (), modules, half=half)[0]


def measure_saved_bytes_by(fn: Callable[[], Any], parts: Iterable[nn.Module], modules: Iterable[nn.Module] = (), *,
                           half: torch.dtype | None = None) -> tuple[int, list[int]]:
    """:func:`measure_saved_bytes`, and the share of it saved while each of ``parts`` (modules that do not
    nest) ran: ``(total, [bytes per part])``."""
    import torch

    skip = {_storage_key(t) for m in modules for t in (*m.parameters(), *m.buffers())}
    seen: dict[int, int] = {}
    alive: list[torch.Tensor] = []  # no storage address is reused (and counted as seen) while we count
    parts = list(parts)
    by_part = [0] * len(parts)
    current: list[int | None] = [None]

    def pack(t: torch.Tensor) -> torch.Tensor:
        k = _storage_key(t)
        if k not in skip and k not in seen:
            seen[k] = t.untyped_storage().nbytes()
            alive.append(t)
            if current[0] is not None:
                by_part[current[0]] += seen[k]
        return t

    def enter(i: int) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            current[0] = i
        return hook

    def leave(*_: Any) -> None:
        current[0] = None

    handles = [h for i, m in enumerate(parts)
               for h in (m.register_forward_pre_hook(enter(i)), m.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _cuda_autocast_mode(half):
            fn()
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values()), by_part


def random_train_networks(cfg: TrainConfig, device: torch.device | str, weight_dtype: torch.dtype) -> TrainNetworks:
    """The networks of a UNet run with random weights and no files (the ``meta`` device for counting, a GPU
    for ``scripts/gpu_train_check.py``): the trained UNet in fp32 with the rule applied, the VAE and the
    weighted loss networks frozen in ``weight_dtype`` (LPIPS in float32), checkpointing as
    ``run.grad_checkpointing`` says."""
    import torch
    from diffusers import AutoencoderKL

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.loaders import SD_VAE_FT_MSE_CONFIG
    from lipsyncctl.checkpoints.tiny import TINY_VAE_CONFIG
    from lipsyncctl.nets.unet import UNet3DConditionModel
    from lipsyncctl.training.networks import TrainNetworks, enable_gradient_checkpointing, freeze

    with torch.device(device):
        unet = UNet3DConditionModel(archs.load_unet_config(cfg.model.unet_config))
        vae = AutoencoderKL(**(TINY_VAE_CONFIG if cfg.model.vae == "tiny" else SD_VAE_FT_MSE_CONFIG))
        aux: dict[str, nn.Module] = {}
        if cfg.pixel_supervision and cfg.loss.lpips:
            from lipsyncctl.checkpoints.aux_train import TINY_VGG_WIDTHS
            from lipsyncctl.nets.lpips import LPIPS
            from lipsyncctl.nets.vgg import VGG16_WIDTHS

            aux["lpips"] = LPIPS(TINY_VGG_WIDTHS if cfg.model.lpips == "tiny" else VGG16_WIDTHS)
        if cfg.pixel_supervision and cfg.loss.sync:
            from lipsyncctl.nets.syncnet import StableSyncNet

            aux["syncnet"] = StableSyncNet(archs.load_syncnet_config(cfg.model.syncnet_config))
        if cfg.pixel_supervision and cfg.loss.trepa:
            from lipsyncctl.checkpoints.aux_train import VIDEOMAE_CONFIGS
            from lipsyncctl.nets.videomae import VideoMAEConfig, VisionTransformer

            aux["videomae"] = VisionTransformer(VideoMAEConfig(**VIDEOMAE_CONFIGS[cfg.model.videomae_config]))
    unet.train()
    from lipsyncctl.training.trainable import select_trainable

    select_trainable(unet, tuple(cfg.model.trainable))
    vae = freeze(vae, None, weight_dtype)
    # as load_train_networks: LPIPS in float32 whatever the run's precision
    aux = {k: freeze(v, None, torch.float32 if k == "lpips" else weight_dtype) for k, v in aux.items()}
    nets = TrainNetworks(unet, vae=vae, aux=aux, arch=unet.config, arch_name=cfg.model.unet_config)
    enable_gradient_checkpointing(nets, cfg)
    return nets


def synthetic_unet_batch(cfg: TrainConfig, device: torch.device | str, generator: torch.Generator | None = None,
                         *, first_index: int = 0) -> dict[str, torch.Tensor]:
    """A batch of ``cfg``'s shapes for :func:`lipsyncctl.training.step.unet_micro_step` (random frames in
    [-1, 1] from ``generator``; ``torch.empty`` on the meta device)."""
    import torch

    b, f, r = cfg.data.batch_size, cfg.data.num_frames, cfg.model.resolution
    shapes = {"gt": (b, f, 3, r, r), "masked": (b, f, 3, r, r), "ref": (b, f, 3, r, r), "mask": (b, 1, r, r),
              "whisper": (b, f, 50, 384), "mel": (b, 1, 80, 52)}
    if str(device) == "meta":
        out = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    else:
        out = {k: (torch.rand(s, generator=generator) * 2 - 1).to(device) for k, s in shapes.items()}
        out["mask"] = (out["mask"] > 0).float()
    out["index"] = torch.arange(first_index, first_index + b)
    return out
