"""How many bytes of GPU memory a run configuration needs: :func:`estimate_vram` (an estimate; its
docstring gives the formula and where each constant comes from). Pure arithmetic over the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lipsyncctl.runner.gpus import GiB, MiB

if TYPE_CHECKING:
    from lipsyncctl.config import Config, ModelOptions

# The ``tiny`` preset's random models (lipsyncctl/checkpoints/tiny.py). Counted on the meta device;
# tests/cli/test_doctor.py recounts them from the configs, so a change of a tiny config fails that test.
#: UNet of ``models/configs/unet/tiny.yaml`` (block_out_channels [32, 32, 32, 32]).
TINY_UNET_PARAMS = 1_226_308
#: ``checkpoints.tiny.TINY_VAE_CONFIG`` (block_out_channels [8, 8, 16, 16]).
TINY_VAE_PARAMS = 67_231
#: Activation width of the tiny models relative to the official ones at full resolution, where the
#: activations peak: UNet 32 / 320 channels, VAE decoder 8 / 128 channels.
TINY_UNET_ACT_SCALE = 32 / 320
TINY_VAE_ACT_SCALE = 8 / 128
#: CUDA context plus small cuBLAS/cuDNN workspaces for models this small (no large allocator slack).
TINY_FIXED_OVERHEAD = 512 * MiB

#: Parameter counts of the UNet configs (measured on the official configs, see LATENTSYNC.md §2.1).
UNET_PARAMS: dict[str, int] = {
    "stage1": 849_962_244,
    "stage1_512": 849_962_244,
    "stage2": 1_267_099_844,
    "stage2_512": 1_267_099_844,
    "stage2_efficient": 1_100_244_804,
    "tiny": TINY_UNET_PARAMS,
}
#: sd-vae-ft-mse (LATENTSYNC.md §2.5).
VAE_PARAMS = 83_653_863
#: Whisper tiny encoder; kept in fp32 like the official code (fp16 only for activations).
WHISPER_ENCODER_PARAMS = 7_632_384
#: UNet activations per (frame x CFG batch) sample at 256x256 in 16-bit (latent 32x32): skip connections
#: and the working tensors of one forward pass without autograd, with memory-efficient attention.
UNET_ACT_PER_SAMPLE_256 = 40 * MiB
#: VAE decoder activations per frame at 256x256 in 16-bit (the full-resolution up blocks dominate).
VAE_ACT_PER_FRAME_256 = 128 * MiB
#: CUDA context, cuBLAS/cuDNN workspaces and the caching allocator's slack: independent of the run.
FIXED_OVERHEAD = int(1.9 * GiB)

_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "auto": 2}


@dataclass(frozen=True)
class ModelSizes:
    """What :func:`estimate_vram` needs to know of the networks: their sizes, not their names."""

    unet_params: int
    unet_act_scale: float  # UNet activations relative to stage2's at the same resolution
    vae_params: int
    vae_act_scale: float  # VAE decoder activations relative to sd-vae-ft-mse's
    fixed_overhead: int  # CUDA context, workspaces, allocator slack


def is_tiny(config: Config) -> bool:
    """Whether the run's UNet is the tiny one (``"unet" in config.model.tiny_roles()``): sized as such,
    and fast enough on a CPU."""
    return "unet" in config.model.tiny_roles()


def model_sizes(model: ModelOptions) -> ModelSizes:
    """The sizes of the networks named by ``model``; tiny roles (:meth:`ModelOptions.tiny_roles`) count
    the tiny models' own sizes.

    An official UNet's activations are scaled by ``params / stage2 params`` (a rough proxy for narrower
    layers; unknown configs count as stage2, the largest); the tiny ones by their channel widths
    (``TINY_UNET_ACT_SCALE``, ``TINY_VAE_ACT_SCALE``). A tiny UNet run has ``TINY_FIXED_OVERHEAD``
    instead of ``FIXED_OVERHEAD``. Whisper keeps the real tiny encoder's dims either way.
    """
    tiny = model.tiny_roles()
    if "unet" in tiny:
        unet_params, unet_scale, overhead = TINY_UNET_PARAMS, TINY_UNET_ACT_SCALE, TINY_FIXED_OVERHEAD
    else:
        unet_params = UNET_PARAMS.get(model.unet_config, UNET_PARAMS["stage2"])
        unet_scale, overhead = min(1.0, unet_params / UNET_PARAMS["stage2"]), FIXED_OVERHEAD
    if "vae" in tiny:
        vae_params, vae_scale = TINY_VAE_PARAMS, TINY_VAE_ACT_SCALE
    else:
        vae_params, vae_scale = VAE_PARAMS, 1.0
    return ModelSizes(unet_params, unet_scale, vae_params, vae_scale, overhead)


def estimate_vram(config: Config, sizes: ModelSizes | None = None) -> int:
    """Estimate the peak GPU memory (bytes) one sync run with ``config`` needs. An estimate, not a measure.

    ``peak = weights + unet_activations + vae_activations + fixed_overhead`` where, with ``m`` the
    :class:`ModelSizes` (``sizes``, default :func:`model_sizes` of ``config.model``), ``b`` = bytes per
    element of ``inference.dtype`` (fp32 4, fp16/bf16 2, ``auto`` = fp16 as on CUDA) and
    ``s = (model.resolution / 256)**2`` (activations grow with the pixel count):

    - ``weights = m.unet_params * b + m.vae_params * b + WHISPER_ENCODER_PARAMS * 4``;
    - ``unet_activations = UNET_ACT_PER_SAMPLE_256 * s * inference.window * inference.batch_windows * cfg * b
      / 2 * m.unet_act_scale``, with ``cfg = 2`` when ``inference.guidance > 1`` (the ``[uncond, cond]``
      batch) else 1;
    - ``vae_activations = VAE_ACT_PER_FRAME_256 * s * inference.vae_batch * b / 2 * m.vae_act_scale``.

    The ``tiny`` preset goes through the same formula with the tiny models' sizes: about 1 GiB in fp32
    rather than the ~2.4 GiB the official sizes would give.

    The activation constants are chosen so that the official defaults land on the official README's
    minimum VRAM, 8 GB for LatentSync 1.5 (256, fp16, 16 frames, guidance 1.5) and 18 GB for 1.6 (512): this
    formula gives 7.7 GiB and 17.4 GiB. Measured on an H200 (``scripts/gpu_sync_bench.py``, full-size random
    weights): 4.75 / 10.6 GiB allocated at the peak, 8.3 / 18.3 GiB reserved by torch's caching allocator,
    so the estimate is close to what the process holds. DeepCache's cached features and whisper's activations
    are small and ignored.
    """
    m = sizes or model_sizes(config.model)
    b = _DTYPE_BYTES[config.inference.dtype]
    s = (config.model.resolution / 256) ** 2
    cfg_batch = 2 if config.inference.guidance > 1.0 else 1
    weights = m.unet_params * b + m.vae_params * b + WHISPER_ENCODER_PARAMS * 4
    unet_act = (UNET_ACT_PER_SAMPLE_256 * s * config.inference.window * config.inference.batch_windows
                * cfg_batch * b / 2 * m.unet_act_scale)
    vae_act = VAE_ACT_PER_FRAME_256 * s * config.inference.vae_batch * b / 2 * m.vae_act_scale
    return int(weights + unet_act + vae_act + m.fixed_overhead)
