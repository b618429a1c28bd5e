"""The ``tiny`` models: the real LatentSync networks with tiny, seeded random weights.

They exist so that every stage of ``sync`` (faces, alignment, VAE, denoising, paste-back, encoding) runs
on a laptop CPU in tests and offline demos. **Their output is not lip-synced** (the weights are random).

The files are generated deterministically from a seeded ``torch.Generator`` and saved in the official
formats, so they are read back through the same loaders as the real checkpoints:

``<models dir>/tiny/``
    ``latentsync_unet.pt``   ``{"state_dict": ...}`` of the UNet in ``models/configs/unet/tiny.yaml``
                             (the golden ``unet_stage2_tiny`` layout: 13 in-channels, 384 cross-attention)
    ``whisper/tiny.pt``      ``{"dims", "model_state_dict"}``, the real whisper-tiny *encoder* layout
                             (dims of tiny; the unused decoder is left out), float16 like OpenAI's file
    ``vae/``                 a diffusers ``AutoencoderKL`` folder (4 levels -> latents at 1/8, 4 channels)
    ``tiny.json``            generator version and seed; files are rebuilt when it changes

Generation takes about a second and happens on first use (:func:`ensure_tiny_models`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import paths
from lipsyncctl.checkpoints.loaders import VAE_SCALING_FACTOR
from lipsyncctl.errors import MissingModelError

if TYPE_CHECKING:
    import torch

#: Bump when the generated files change, so stale ones are rebuilt.
TINY_VERSION = 1
TINY_SEED = 20250620
TINY_NAME = "tiny"

#: OpenAI ``ModelDimensions`` of whisper tiny (the encoder part is what LatentSync uses).
WHISPER_TINY_DIMS: dict[str, int] = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}

#: A small diffusers ``AutoencoderKL``: same block types as sd-vae-ft-mse, 4 levels (1/8 latents).
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 256,
    "scaling_factor": VAE_SCALING_FACTOR,
}

NOT_LIP_SYNCED = (
    "tiny preset: random tiny networks, the output is NOT lip-synced "
    "(install real weights with `lipsyncctl models fetch latentsync-1.5` and use --preset latentsync-1.5)"
)


@dataclass(frozen=True)
class TinyModelPaths:
    """Where the tiny files are (all inside :attr:`root`)."""

    root: Path
    unet: Path
    whisper: Path
    vae: Path
    unet_config: str = "tiny"


def tiny_root(models_dir: Path | None = None) -> Path:
    return (models_dir or paths.models_dir()) / TINY_NAME


def _paths(root: Path) -> TinyModelPaths:
    return TinyModelPaths(root, root / "latentsync_unet.pt", root / "whisper" / "tiny.pt", root / "vae")


def _manifest(seed: int) -> dict[str, Any]:
    return {"version": TINY_VERSION, "seed": seed, "note": NOT_LIP_SYNCED}


def ensure_tiny_models(models_dir: Path | None = None, seed: int = TINY_SEED) -> TinyModelPaths:
    """Generate the tiny files under ``<models_dir>/tiny`` unless they are already there.

    Written into a temporary folder and renamed into place, so concurrent runs and crashes never
    leave a half-written set. Returns their paths.
    """
    root = tiny_root(models_dir)
    if not tiny_models_current(models_dir, seed):
        write_folder(root, _manifest(seed), lambda tmp: write_tiny_models(tmp, seed))
    return _paths(root)


def check_can_make(root: Path) -> None:
    """The tiny files can be written at ``root`` (their folder, made on first use: :func:`ensure_tiny_models`).

    Raises:
        MissingModelError: :func:`~lipsyncctl.checkpoints.io.check_models_writable`."""
    from lipsyncctl.checkpoints.io import check_models_writable

    check_models_writable(root, "the tiny models", made="they are made on first use")


def tiny_models_current(models_dir: Path | None = None, seed: int = TINY_SEED) -> bool:
    """Whether the tiny files are there, made as this version makes them (:func:`ensure_tiny_models` has nothing
    to write)."""
    root = tiny_root(models_dir)
    out = _paths(root)
    return is_current(root, (out.unet, out.whisper, out.vae / "config.json"), _manifest(seed))


def is_current(root: Path, files: Iterable[Path], marker: dict[str, Any]) -> bool:
    """Whether the generated folder ``root`` (:func:`write_folder`) holds each of ``files`` and was made as
    ``marker`` says (its ``tiny.json``: the version and seed of the files)."""
    return all(Path(p).is_file() for p in files) and _marker_of(root) == marker


def _marker_of(root: Path) -> Any:
    """The ``tiny.json`` of the generated folder ``root`` (None: none, or unreadable)."""
    try:
        return json.loads((root / "tiny.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


class TinyNotMade(MissingModelError):
    """A tiny set that is not made yet, asked for where nothing may be written (:func:`not_generated`)."""


_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("tiny_read_only", default=False)


@contextlib.contextmanager
def not_generated() -> Iterator[None]:
    """Within the block, a tiny set that is not made yet (or not current) is not written: :func:`write_folder` raises
    :class:`TinyNotMade` (a dry run writes nothing; a run makes the set)."""
    token = _READ_ONLY.set(True)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


def write_folder(root: Path, marker: dict[str, Any], write: Any) -> None:
    """(Re)generate the folder ``root`` of seeded files: ``write(tmp)`` fills a temporary folder beside it,
    which gets ``tiny.json`` = ``marker`` and is renamed into place, so concurrent runs and crashes never leave
    a half-written set (a concurrent writer that won the race is accepted).

    Raises:
        TinyNotMade: within :func:`not_generated`.
        MissingModelError: ``root`` cannot be written (:func:`check_can_make`).
    """
    if _READ_ONLY.get():
        raise TinyNotMade(f"{root}: the tiny models are not made yet", hint="a run makes them")
    check_can_make(root)  # a read-only models folder, a file in the way: said naming it (not a temporary's name)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write(tmp)
        (tmp / "tiny.json").write_text(json.dumps(marker, indent=1) + "\n")
        if _marker_of(root) == marker and all((root / p.relative_to(tmp)).exists() for p in tmp.rglob("*")):
            return  # a concurrent run put the same whole set in place meanwhile: keep it (a reader may use it)
        if root.exists():
            old = root.with_name(f".{root.name}-old-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):  # moved away by a concurrent run meanwhile
                os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "tiny.json").is_file():  # not a concurrent writer that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_tiny_models(root: Path, seed: int = TINY_SEED) -> TinyModelPaths:
    """Generate and save the three tiny models in the official formats under ``root``."""
    import torch

    out = _paths(root)
    gen = torch.Generator().manual_seed(seed)
    out.whisper.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": tiny_unet_state_dict(gen)}, out.unet)
    torch.save(
        {"dims": dict(WHISPER_TINY_DIMS), "model_state_dict": tiny_whisper_state_dict(gen)}, out.whisper
    )
    save_tiny_vae(out.vae, gen)
    return out


# ---------------------------------------------------------------------------------------------------
# Deterministic initialisation


def randomize(named: Iterable[tuple[str, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Seeded values for each named tensor, in sorted name order (independent of module order).

    Normalisation weights -> 1, biases -> small noise, matrices/kernels -> N(0, 1/fan_in) so that
    activations stay O(1) through the network.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, ref in sorted(named, key=lambda kv: kv[0]):
        shape = tuple(ref.shape)
        leaf = name.rsplit(".", 2)
        is_norm = any(tag in name for tag in ("norm", "_ln", "ln_")) and len(shape) == 1
        if is_norm and leaf[-1] == "weight":
            value = torch.ones(shape)
        elif len(shape) <= 1:
            value = 0.02 * torch.randn(shape, generator=gen)
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        out[name] = value.to(torch.float32)
    return out


def tiny_unet_config() -> Any:
    """The :class:`~lipsyncctl.nets.unet_config.UNetConfig` of ``models/configs/unet/tiny.yaml``."""
    from lipsyncctl.checkpoints.archs import load_unet_config

    return load_unet_config("tiny")


def tiny_unet_state_dict(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A full UNet ``state_dict`` (official key names) with seeded parameters; buffers (the motion
    modules' sinusoidal position encodings) keep their computed values."""
    import torch

    from lipsyncctl.nets.unet import UNet3DConditionModel

    model = UNet3DConditionModel(tiny_unet_config())
    params = randomize(model.named_parameters(), gen)
    state = model.state_dict()
    for name, value in params.items():
        state[name] = value
    return {k: v.detach().to(torch.float32).clone() for k, v in state.items()}


def _sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's positional embedding (sin then cos, timescales 1 .. 10000)."""
    import torch

    inc = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def whisper_encoder_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """OpenAI-layout ``encoder.*`` tensor names and shapes for ``dims`` (parameters only)."""
    s, m = dims["n_audio_state"], dims["n_mels"]
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (s, m, 3),
        "encoder.conv1.bias": (s,),
        "encoder.conv2.weight": (s, s, 3),
        "encoder.conv2.bias": (s,),
        "encoder.ln_post.weight": (s,),
        "encoder.ln_post.bias": (s,),
    }
    for i in range(dims["n_audio_layer"]):
        p = f"encoder.blocks.{i}."
        shapes.update({
            p + "attn.query.weight": (s, s), p + "attn.query.bias": (s,),
            p + "attn.key.weight": (s, s),
            p + "attn.value.weight": (s, s), p + "attn.value.bias": (s,),
            p + "attn.out.weight": (s, s), p + "attn.out.bias": (s,),
            p + "attn_ln.weight": (s,), p + "attn_ln.bias": (s,),
            p + "mlp.0.weight": (4 * s, s), p + "mlp.0.bias": (4 * s,),
            p + "mlp.2.weight": (s, 4 * s), p + "mlp.2.bias": (s,),
            p + "mlp_ln.weight": (s,), p + "mlp_ln.bias": (s,),
        })
    return shapes


def tiny_whisper_state_dict(gen: torch.Generator, dims: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """OpenAI-layout whisper encoder weights (float16, like the official ``tiny.pt``)."""
    import torch

    dims = dims or WHISPER_TINY_DIMS
    shapes = whisper_encoder_shapes(dims)
    state = randomize(((k, torch.empty(v, device="meta")) for k, v in shapes.items()), gen)
    state["encoder.positional_embedding"] = _sinusoids(dims["n_audio_ctx"], dims["n_audio_state"])
    return {k: v.to(torch.float16) for k, v in state.items()}


def save_tiny_vae(folder: Path, gen: torch.Generator) -> None:
    """A seeded diffusers ``AutoencoderKL`` saved with ``save_pretrained`` (config.json + safetensors)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    params = randomize(vae.named_parameters(), gen)
    vae.load_state_dict(params, strict=False)
    vae.save_pretrained(str(folder), safe_serialization=True)
