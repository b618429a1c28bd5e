"""face-alignment backend: S3FD detector + 2DFAN-4 (68 points), batched on the GPU.

The ``face_alignment`` package downloads its weights on first use; we never let it. Its two files
must already be in ``<models dir>/face-alignment/`` (put there by
``lipsyncctl models fetch face-alignment``): ``s3fd-*.pth`` (detector state dict) and
``2DFAN4-*.zip`` (TorchScript landmark network). We build the detector with an explicit
``path_to_detector`` and load the FAN ourselves, so no URL is ever opened.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lipsyncctl import paths
from lipsyncctl.faces.detect import Face, FaceDetector, filter_faces

HINT = "run `lipsyncctl models fetch face-alignment` (online), and `pip install face-alignment`"
SUBDIR = "face-alignment"


def weight_files(models_dir: Path | None = None) -> tuple[Path | None, Path | None]:
    """``(s3fd, fan)`` paths inside the models directory, ``None`` where missing."""
    root = Path(models_dir or paths.models_dir()) / SUBDIR
    s3fd = sorted(root.glob("s3fd*.pth"))
    fan = sorted(root.glob("2DFAN4*.zip"))
    return (s3fd[0] if s3fd else None), (fan[0] if fan else None)


def unavailable_reason(models_dir: Path | None = None) -> str | None:
    if importlib.util.find_spec("face_alignment") is None:
        return "the face_alignment package is not installed (pip install face-alignment)"
    s3fd, fan = weight_files(models_dir)
    root = Path(models_dir or paths.models_dir()) / SUBDIR
    if s3fd is None or fan is None:
        return f"weights missing in {root} (need s3fd-*.pth and 2DFAN4-*.zip; run `lipsyncctl models fetch face-alignment`)"
    return None


class FanDetector(FaceDetector):
    """S3FD boxes (threshold ``min_score``) and 2DFAN-4 landmarks; all faces of a batch go through
    the FAN in one forward pass."""

    name = "face-alignment"
    batches = True  # S3FD runs a batch of frames in one call
    layout = 68

    def __init__(
        self,
        device: str = "cpu",
        models_dir: Path | None = None,
        min_score: float = 0.5,
        min_size: float = 40.0,
    ) -> None:
        import torch
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        s3fd, fan = weight_files(models_dir)
        self.device = device
        self.min_score = min_score
        self.min_size = min_size
        self._sfd = SFDDetector(device=device, path_to_detector=str(s3fd))
        self._fan = torch.jit.load(str(fan), map_location=device).eval()

    def detect(self, frame: np.ndarray) -> list[Face]:
        boxes = self._sfd.detect_from_image(np.ascontiguousarray(frame))
        return self._finish(frame, boxes)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        import torch

        if not frames:
            return []
        if len({f.shape for f in frames}) != 1:
            return [self.detect(f) for f in frames]
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().to(self.device)
        boxes = self._sfd.detect_from_batch(batch)
        return [self._finish(f, b) for f, b in zip(frames, boxes, strict=True)]

    def _finish(self, frame: np.ndarray, boxes) -> list[Face]:
        boxes = [np.asarray(b, dtype=np.float64) for b in boxes if len(b) and b[-1] >= self.min_score]
        faces = self.refit(frame, [b[:4] for b in boxes])
        faces = [Face(f.box, float(b[4]), f.landmarks) for f, b in zip(faces, boxes, strict=True)]
        return filter_faces(faces, min_size=self.min_size)

    def refit(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        """2DFAN-4 on the library's 256x256 crops around each box (same centre/scale rule as
        ``FaceAlignment.get_landmarks_from_image``), one batched forward pass."""
        import torch
        from face_alignment.utils import crop, get_preds_fromhm

        if not boxes:
            return []
        centers, scales, crops = [], [], []
        for d in boxes:
            center = np.array([(d[0] + d[2]) / 2.0, (d[1] + d[3]) / 2.0])
            center[1] -= (d[3] - d[1]) * 0.12
            scale = (d[2] - d[0] + d[3] - d[1]) / self._sfd.reference_scale
            centers.append(center)
            scales.append(scale)
            crops.append(crop(frame, center, scale).transpose(2, 0, 1))
        inp = torch.from_numpy(np.stack(crops)).float().div_(255.0).to(self.device)
        with torch.no_grad():
            heatmaps = self._fan(inp).detach().to("cpu", torch.float32).numpy()
        faces = []
        for i, box in enumerate(boxes):
            _, pts_img, _ = get_preds_fromhm(heatmaps[i : i + 1], centers[i], scales[i])
            faces.append(Face(np.asarray(box, dtype=np.float64)[:4], 1.0, np.asarray(pts_img).reshape(68, 2)))
        return faces


def create(device: str = "cpu", models_dir: Path | None = None, **options) -> FanDetector:
    return FanDetector(device=device, models_dir=models_dir, **options)
