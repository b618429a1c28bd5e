"""Clip stage ``features`` of the curation job: the training-time audio features of a clip, cached by content.

LatentSync's training reads two audio features per clip, both computed over the clip's **whole** audio and
then windowed per item (LATENTSYNC.md §1.8, §3.2-3.3):

- whisper features ``(L, 5, 384)`` float32 (:func:`lipsyncctl.audio.features.audio_features`, the official
  ``audio2feat``), 50 per second: feature ``2 f`` is frame ``f`` of the span (``feature_chunks`` with
  ``start=f`` gives the UNet's ``(n, 50, 384)`` conditioning, frames ``f - 2 .. f + 2``); for a span of
  ``F`` frames (``640 F`` samples) ``L = 2 F`` exactly (up to 30 s; past that each 30 s window adds its
  own ``int(frames / 2)``);
- the Wav2Lip-style mel ``(80, 1 + 640 F // 200)`` float64 (:func:`lipsyncctl.audio.wav2lip_mel.wav2lip_mel`),
  80 columns per second: frame ``f``'s 16-frame window is columns ``(80 f) // 25 .. +52``
  (:func:`~lipsyncctl.audio.wav2lip_mel.mel_window`).

The audio is samples ``[first * 640, stop * 640)`` of the source's 16 kHz mono WAV (zero-padded past its
end; moved by ``audio_shift_samples`` when the sync stage corrected the clip's offset), read as PCM16
exactly. The official caches are keyed by the clip's basename
(``{basename}_embeds.pt``, ``{basename}_mel.pt``), so VoxCeleb2-style names (``00001.mp4`` in every
speaker's folder) collide; here the file is keyed by **audio content**: the sha256 of the span's int16
samples, the feature settings and the whisper file's fingerprint. Two clips with the same sound share one
file ``DATA/features/<key[:2]>/<key>.safetensors`` (tensors ``whisper`` and ``mel``; the metadata holds the
settings and the alignment), written atomically; a present file is reused without loading a network.

The whisper encoder runs in float32 on the worker's device (the official preprocessing runs it in fp16 on
a GPU; the difference is fp16 rounding). It is loaded once per worker (:attr:`ClipContext.cache`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.config import CurateOptions, ModelOptions
from lipsyncctl.curation.records import Decision
from lipsyncctl.curation.stages import span_pcm

if TYPE_CHECKING:
    from lipsyncctl.curation.clipstages import ClipContext
    from lipsyncctl.nets.whisper import WhisperFeatureEncoder

NAME = "features"
VERSION = 1

#: what the cached tensors depend on besides the samples and the whisper file (part of the content key)
FEATURE_SETTINGS: dict[str, Any] = {
    "whisper": {"layout": "audio2feat (L, 5, 384), 50/s, 30 s windows zero-padded", "dtype": "float32"},
    "mel": {"kind": "wav2lip", "n_fft": 800, "hop": 200, "win": 800, "n_mels": 80, "fmin": 55, "fmax": 7600,
            "preemphasis": 0.97, "min_level_db": -100, "ref_level_db": 20, "max_abs_value": 4.0},
}


def settings(options: CurateOptions) -> dict[str, Any]:
    return {"fps": options.fps, "rate": options.audio_rate, **FEATURE_SETTINGS}


def models(model: ModelOptions) -> dict[str, Path]:
    """The run's whisper file (``model.whisper``: registry name, path or ``tiny``); never downloads.

    Raises:
        MissingModelError: not installed (the hint names ``lipsyncctl models fetch``).
    """
    from lipsyncctl.pipeline.networks import resolve_model_file

    return {"whisper": resolve_model_file(model.whisper, "whisper")}


def run(ctx: ClipContext) -> dict[str, Any]:
    """The span's features, from the cache when its audio was seen before (see the module docstring)."""
    from lipsyncctl.runner.store import content_key, file_fingerprint

    whisper_file = Path(ctx.models["whisper"])
    # the sync stage's offset correction moves the span's audio window (its corrected clip's audio)
    shift = int(ctx.previous.get("sync", {}).get("audio_shift_samples") or 0)
    pcm = span_pcm(ctx.audio, ctx.first, ctx.stop, shift=shift)
    key = content_key({"pcm": hashlib.sha256(pcm.tobytes()).hexdigest(), "rate": ctx.options.audio_rate,
                       "settings": FEATURE_SETTINGS, "whisper": file_fingerprint(whisper_file)})
    path = ctx.data / NAME / key[:2] / f"{key}.safetensors"
    shapes = _cached_shapes(path)
    computed = shapes is None
    if shapes is None:
        shapes = _compute(ctx, pcm, whisper_file, path)
    return {"features": str(path), "key": key, "samples": int(pcm.size), "audio_shift_samples": shift,
            "computed": computed, **shapes}


def decide(data: Mapping[str, Any], options: CurateOptions) -> Decision | None:
    return None  # measurements only: features never reject a clip


def outputs(data: Mapping[str, Any]) -> list[str]:
    return [data["features"]]


def summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's fields: the feature file and its tensors' shapes."""
    return {"features": data["features"], "whisper_shape": data["whisper_shape"], "mel_shape": data["mel_shape"]}


def _compute(ctx: ClipContext, pcm: np.ndarray, whisper_file: Path, path: Path) -> dict[str, Any]:
    import torch

    from lipsyncctl.audio.features import audio_features
    from lipsyncctl.audio.wav2lip_mel import wav2lip_mel

    whisper = audio_features(_encoder(ctx, whisper_file), pcm)  # (L, 5, 384) float32, CPU
    mel = torch.from_numpy(wav2lip_mel(pcm))                     # (80, T) float64
    meta = {"whisper_per_frame": "2", "mel_columns_per_frame": "3.2", "samples": str(pcm.size),
            "sample_rate": str(ctx.options.audio_rate), "settings": json.dumps(FEATURE_SETTINGS, sort_keys=True),
            "whisper_file": whisper_file.name}
    _save_atomic({"whisper": whisper.contiguous(), "mel": mel.contiguous()}, meta, path)
    return {"whisper_shape": list(whisper.shape), "mel_shape": list(mel.shape)}


def _cached_shapes(path: Path) -> dict[str, Any] | None:
    """The tensors' shapes of a complete cache file, or None when there is none (or it is unreadable)."""
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {"whisper_shape": list(f.get_slice("whisper").get_shape()),
                    "mel_shape": list(f.get_slice("mel").get_shape())}
    except (SafetensorError, OSError, KeyError):
        return None  # a damaged file is recomputed and replaced


def _save_atomic(tensors: dict[str, Any], meta: dict[str, str], path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename it into place (a kill leaves no partial file;
    two workers writing the same key write the same bytes)."""
    import os
    import tempfile

    from safetensors.torch import save_file

    from lipsyncctl.media.atomic import output_mode, temp_prefix

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        output_mode(tmp)  # (mkstemp and safetensors make 0600 files)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encoder(ctx: ClipContext, whisper_file: Path) -> WhisperFeatureEncoder:
    """The worker's whisper encoder (:meth:`ClipContext.network`), float32."""
    import torch

    from lipsyncctl.checkpoints.loaders import load_whisper_encoder

    return ctx.network(f"{NAME}.whisper", [whisper_file],
                       lambda device: load_whisper_encoder(whisper_file, device=device, dtype=torch.float32).eval())
