"""InsightFace backend (the official choice): SCRFD ``det_10g`` + ``2d106det`` from ``buffalo_l``.

Optional: used only when ``insightface`` is importable and both ONNX files are already in
``<models dir>/insightface/models/buffalo_l/`` (insightface would otherwise download them; we check
first so it never does). The models are licensed for non-commercial research only.

Parity with upstream (LATENTSYNC.md section 1.5): ``det_size=(512, 512)``, frames passed as **RGB**
although InsightFace expects BGR (``official_rgb=True``; set it to false to pass BGR), landmarks
rounded to integers, and the official candidate filter (``w >= 50``, ``h >= 80``, ``0.2 <= w/h <= 1.5``,
``det_score >= 0.5``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lipsyncctl import paths
from lipsyncctl.faces.detect import Face, FaceDetector

HINT = ("pip install 'lipsyncctl[insightface]' and run `lipsyncctl models fetch insightface` (online; or copy "
        "det_10g.onnx and 2d106det.onnx of buffalo_l into <models dir>/insightface/models/buffalo_l/)")
PACK = "buffalo_l"
FILES = ("det_10g.onnx", "2d106det.onnx")


def pack_dir(models_dir: Path | None = None) -> Path:
    """Where the two files are: the registry's ``insightface`` model folder, as InsightFace lays out a pack."""
    return Path(models_dir or paths.models_dir()) / "insightface" / "models" / PACK


def unavailable_reason(models_dir: Path | None = None) -> str | None:
    if importlib.util.find_spec("insightface") is None:
        return "the insightface package is not installed"
    missing = [f for f in FILES if not (pack_dir(models_dir) / f).is_file()]
    if missing:
        return f"{', '.join(missing)} not in {pack_dir(models_dir)}"
    return None


def _providers(device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class InsightFaceDetector(FaceDetector):
    name = "insightface"
    layout = 106

    def __init__(
        self,
        device: str = "cpu",
        models_dir: Path | None = None,
        official_rgb: bool = True,
        det_size: int = 512,
        min_score: float = 0.5,
    ) -> None:
        from insightface.app import FaceAnalysis

        # The pack's absolute path as its name: InsightFace takes a folder given so as it is (0.7 joins it onto
        # its root, 2.x checks it first: a relative "buffalo_l" would find a folder of that name in the cwd).
        pack = pack_dir(models_dir).resolve()
        ctx = (
            int(device.split(":")[1])
            if device.startswith("cuda:")
            else (0 if device.startswith("cuda") else -1)
        )
        self._app = FaceAnalysis(
            name=str(pack),
            root=str(pack.parent.parent),
            allowed_modules=["detection", "landmark_2d_106"],
            providers=_providers(device),
        )
        self._app.prepare(ctx_id=ctx, det_size=(det_size, det_size))
        self.official_rgb = official_rgb
        self.min_score = min_score

    def _input(self, frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame if self.official_rgb else frame[..., ::-1])

    def detect(self, frame: np.ndarray) -> list[Face]:
        faces = []
        for f in self._app.get(self._input(frame)):
            x0, y0, x1, y1 = (int(v) for v in f.bbox)
            w, h = x1 - x0, y1 - y0
            if w < 50 or h < 80 or not (0.2 <= w / h <= 1.5) or f.det_score < self.min_score:
                continue
            lmk = np.round(f.landmark_2d_106).astype(np.float64)
            faces.append(Face(np.asarray(f.bbox, dtype=np.float64), float(f.det_score), lmk))
        return faces

    def refit(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        from insightface.app.common import Face as _IFace

        image = self._input(frame)
        model = self._app.models["landmark_2d_106"]
        out = []
        for box in boxes:
            face = _IFace(bbox=np.asarray(box, dtype=np.float32), det_score=1.0)
            model.get(image, face)
            out.append(
                Face(
                    np.asarray(box, dtype=np.float64), 1.0, np.round(face.landmark_2d_106).astype(np.float64)
                )
            )
        return out


def create(device: str = "cpu", models_dir: Path | None = None, **options) -> InsightFaceDetector:
    return InsightFaceDetector(device=device, models_dir=models_dir, **options)
