"""A curated ``DATA`` folder for the training tests, written by the real curate job in a few seconds.

Sources (H.264 + AAC 16 kHz, 32 x 32 px, seeded noisy 'speech'): ``train/long`` 100 frames, ``train/mid`` 64,
``train/short`` 40 (too short for UNet samples, enough for SyncNet), ``train/stub`` 20 (too short for both),
``val/held`` 60. ``--set curate.split_by=parent`` with split seed 9 puts the ``train`` folder in the train
split and ``val`` in val.

The job runs its real source stages, decisions, views (manifest, ``train.txt``, ``val.txt``) and its real
``features`` stage (content keys, the Wav2Lip mel, the ``(L, 5, 384)`` layout), with two stand-ins:

- the ``align`` stage (face detection and alignment take a minute on a CPU) writes a lossless 256 x 256
  FFV1 clip whose frame ``t`` shows :func:`pattern` of source frame ``first + t``, so a test can read back
  which frame it got;
- the whisper encoder is :class:`StandInWhisper` (a fixed linear map of the mel).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.curate_media import flat_frames, write_lossless_rgb, write_talking_clip

SOURCES = {"train/long.mp4": 100, "train/mid.mp4": 64, "train/short.mp4": 40, "train/stub.mp4": 20,
           "val/held.mp4": 60}
SIZE = 256
SETS = ("curate.min_seconds=0.5", "curate.min_sync_frames=10", "curate.split_by=parent", "curate.split_seed=9",
        "curate.val_fraction=0.2", "curate.skip_sync=true", "curate.skip_quality=true")


def pattern(frame: int, size: int = SIZE) -> np.ndarray:
    """``(size, size, 3)`` uint8: red = ``frame`` (flat, so any resize keeps it), green a horizontal ramp,
    blue a vertical ramp."""
    ramp = np.linspace(0, 255, size).round().astype(np.uint8)
    img = np.empty((size, size, 3), np.uint8)
    img[..., 0] = frame % 256
    img[..., 1] = ramp[None, :]
    img[..., 2] = ramp[:, None]
    return img


def red_index(pixels: Any) -> list[int]:
    """The source frame of each ``(F, 3, H, W)`` frame in [-1, 1] (its red level)."""
    import torch

    red = torch.as_tensor(pixels)[:, 0].float()
    return [int(round(float(v))) for v in ((red.mean(dim=(-2, -1)) * 0.5 + 0.5) * 255)]


def _noise_speech(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = frames * 640
    envelope = np.repeat(rng.uniform(0.0, 1.0, n // 1600 + 1), 1600)[:n]
    return (0.3 * envelope * rng.standard_normal(n)).astype(np.float32)


def _stand_in_align(ctx: Any) -> dict[str, Any]:
    """The ``align`` stage's result for a frontal face in every frame, with the pattern clip as its video."""
    out = ctx.output("aligned", ".mkv")
    write_lossless_rgb(out, np.stack([pattern(ctx.first + t) for t in range(ctx.frames)]))
    return {"frames": ctx.frames, "resolution": SIZE, "detector": "stand-in", "detector_official": False,
            "frames_with_face": ctx.frames, "no_face_frame": None, "max_faces": 1, "min_face_size": float(SIZE),
            "aligned": str(out), "matrices": None}


class StandInWhisper:
    """The features stage's whisper encoder, replaced by a fixed linear map of the mel (the real tiny
    encoder costs a transformers import and seconds per clip): ``(B, 80, 3000)`` -> ``(B, 5, 1500, 384)``,
    each feature frame a function of its two mel frames, so the features still follow the audio."""

    n_ctx = 1500

    def __init__(self) -> None:
        import torch

        self.weight = torch.randn((5, 384, 160), generator=torch.Generator().manual_seed(5)) / 160**0.5

    def parameters(self) -> Iterator[Any]:
        yield self.weight

    def __call__(self, mel: Any) -> Any:
        import torch

        pairs = mel.reshape(mel.shape[0], 80, self.n_ctx, 2).permute(0, 2, 1, 3).flatten(2)  # (B, 1500, 160)
        return torch.einsum("lfm,btm->bltf", self.weight, pairs)


def tiny_whisper(path: Path) -> Path:
    """The tiny preset's random whisper file alone (the whole tiny set also builds a UNet and a VAE)."""
    import torch

    from lipsyncctl.checkpoints.tiny import TINY_SEED, WHISPER_TINY_DIMS, tiny_whisper_state_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    state = tiny_whisper_state_dict(torch.Generator().manual_seed(TINY_SEED))
    torch.save({"dims": dict(WHISPER_TINY_DIMS), "model_state_dict": state}, path)
    return path


@dataclasses.dataclass(frozen=True)
class Curated:
    data: Path
    manifest: list[dict[str, Any]]

    def entry(self, name: str) -> Mapping[str, Any]:
        """The manifest line of source ``name`` (``long``, ``held``, ...)."""
        return next(e for e in self.manifest if e["source"].startswith(f"{name}-"))


def curated_folder(root: Path) -> Curated:
    """Curate :data:`SOURCES` into ``root/data`` (see the module docstring)."""
    import json

    from lipsyncctl import api
    from lipsyncctl import config as cfg
    from lipsyncctl.curation import align, clipstages, features, job

    for i, (name, frames) in enumerate(SOURCES.items()):
        write_talking_clip(root / "raw" / name, flat_frames(frames, size=32), audio=_noise_speech(frames, i))
    whisper = tiny_whisper(root / "models" / "whisper-tiny.pt")
    stages = tuple(dataclasses.replace(s, run=_stand_in_align, models=lambda model: {})
                   if s.name == align.NAME else s
                   for s in clipstages.CLIP_STAGES if s.name in (align.NAME, "features"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        mp.setattr(clipstages, "CLIP_STAGES", stages)
        mp.setattr(job, "CLIP_STAGES", stages)
        mp.setattr(features, "_encoder", lambda ctx, path: StandInWhisper())
        api.curate([root / "raw"], root / "data", cfg.resolve("tiny", [*SETS, f"model.whisper={whisper}"]))
    manifest = [json.loads(line) for line in (root / "data" / "manifest.jsonl").read_text().splitlines()]
    return Curated(root / "data", manifest)
