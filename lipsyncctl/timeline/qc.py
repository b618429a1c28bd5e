"""Quality checks of rendered shots: thumbnails and SyncNet scores (LSE-C / LSE-D) before/after.

Sync confidence (LSE-C, higher = better in sync) and distance (LSE-D, lower = better) need the
evaluation SyncNet (``syncnet-v2`` in the model registry; ``lipsyncctl models fetch syncnet-v2``).
Without it the scores are ``None`` and the report says so. The weights' sha256 is compared with what
is known about them (the registry's published hash, else the hash recorded on this machine when they
were fetched), and the report says plainly when the scores come from weights that are not verified
official ones. Face crops for scoring: the detector's box around the chosen (largest) face, squared
and enlarged by 1.3, resized to 224x224 BGR like syncnet_python's crops.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.errors import LipsyncError, MediaError

CROP_SCALE = 1.3
EVAL_MODEL = "syncnet-v2"


@dataclass
class EvalSyncNet:
    """The evaluation SyncNet loaded for QC and the provenance of its weights.

    ``verification``: ``official`` (sha256 = the registry's published hash), ``recorded`` (= the hash
    recorded on this machine when the file was fetched or verified; no published hash to compare with),
    ``unknown`` (no hash known at all) or ``mismatch`` (differs from the known hash).
    """

    model: Any
    path: Path
    sha256: str
    verification: str
    expected_sha256: str | None = None
    recorded_source: str | None = None

    @property
    def verified(self) -> bool:
        """True only when the file is byte-identical to the published official weights."""
        return self.verification == "official"

    def note(self) -> str:
        """One plain sentence about where the scores come from (for the report)."""
        if self.verification == "official":
            return f"{EVAL_MODEL} weights verified: sha256 matches the registry's official hash."
        if self.verification == "recorded":
            return (f"{EVAL_MODEL} weights NOT verified as the official ones: no official hash is published; "
                    f"the file matches the hash recorded when it was installed from {self.recorded_source}.")
        if self.verification == "mismatch":
            return (f"{EVAL_MODEL} weights are NOT the official ones (sha256 {self.sha256[:12]}... differs from "
                    f"{(self.expected_sha256 or '')[:12]}...): the scores are not comparable to published "
                    "LSE-C/LSE-D values.")
        return (f"{EVAL_MODEL} weights NOT verified as the official ones: neither the registry nor a "
                f"`lipsyncctl models fetch` record knows the sha256 of {self.path}; treat the scores with caution.")

    def to_dict(self) -> dict[str, Any]:
        return {"model": EVAL_MODEL, "path": str(self.path), "sha256": self.sha256, "verified": self.verified,
                "verification": self.verification, "expected_sha256": self.expected_sha256, "note": self.note()}


def load_eval_syncnet(device: Any = "cpu", models_dir: Path | None = None) -> EvalSyncNet | None:
    """The evaluation SyncNet through the real loader if its weights are installed, else None (never
    downloads). Hashes the file (about 50 MB) to tell official weights from others."""
    from lipsyncctl.checkpoints.fetch import sha256_file
    from lipsyncctl.checkpoints.loaders import load_syncnet_eval
    from lipsyncctl.checkpoints.registry import LocalState, expected_sha256, load_registry

    registry = load_registry()
    try:
        path = registry.resolve(EVAL_MODEL, models_dir=models_dir)
    except LipsyncError:
        return None
    model = load_syncnet_eval(path, device=device)
    entry = registry.get(EVAL_MODEL)
    f = entry.files[0]
    state = LocalState.load(models_dir)
    known, origin = expected_sha256(entry, f, state)
    digest = sha256_file(path, f"hash {EVAL_MODEL}")
    rec = state.get(entry.name, f.path)
    if known is None:
        verification = "unknown"
    elif digest != known:
        verification = "mismatch"
    else:
        verification = "official" if origin == "registry" else "recorded"
    return EvalSyncNet(model, path, digest, verification, known, rec.source if rec else None)


def read_frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    """RGB frames ``first .. first + count - 1`` of ``path``."""
    from lipsyncctl.timeline.mediaio import read_frames

    return list(read_frames(path, first, count))


def face_crops(frames: list[np.ndarray], detector: Any, min_found: float = 0.5) -> list[np.ndarray]:
    """224x224 BGR crops of the largest face, one per frame (frames without a detection use the nearest
    earlier box, or the first box before any detection, so crop ``i`` stays aligned with frame ``i``);
    empty when fewer than ``min_found`` of the frames have a face."""
    import cv2

    boxes: list[Any] = []
    found = 0
    for rgb in frames:
        faces = detector.detect(rgb)
        found += bool(faces)
        boxes.append(max(faces, key=lambda f: f.area).box if faces else (boxes[-1] if boxes else None))
    first = next((b for b in boxes if b is not None), None)
    if first is None or found < len(frames) * min_found:
        return []
    crops = []
    for rgb, box in zip(frames, boxes, strict=True):
        box = first if box is None else box
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1]) * CROP_SCALE / 2
        h, w = rgb.shape[:2]
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
        crop = cv2.resize(rgb[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_LINEAR)
        crops.append(crop[..., ::-1].copy())
    return crops


def sync_scores(model: Any, frames: list[np.ndarray], audio_16k: np.ndarray, fps: Fraction,
                detector: Any) -> Any | None:
    """:class:`~lipsyncctl.scoring.LseScores` (LSE-D, LSE-C, offset) of ``frames`` (RGB) against mono
    16 kHz ``audio_16k`` aligned with frame 0; None when too short or without a face in half the frames."""
    from lipsyncctl.scoring import lse_scores

    crops = face_crops(frames, detector)
    if not crops:
        return None
    try:
        return lse_scores(model, crops, audio_16k, fps)
    except MediaError:
        return None


def thumbnail_uri(rgb: np.ndarray, height: int = 120) -> str:
    """A JPEG data URI of ``rgb`` scaled to ``height`` pixels."""
    import cv2

    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
