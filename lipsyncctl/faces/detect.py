"""One face-detector interface, several backends.

Backends (each in its own module, imported lazily):

- ``insightface`` (:mod:`lipsyncctl.faces.detect_insightface`): SCRFD + 2d106, the official choice;
  only when the package is importable and the ``buffalo_l`` files are in the models directory.
- ``face-alignment`` (:mod:`lipsyncctl.faces.detect_fan`): S3FD + 2DFAN-4 (68 points); only when the
  package is installed and its weights were fetched with ``lipsyncctl models fetch face-alignment``.
- ``dlib`` (:mod:`lipsyncctl.faces.detect_dlib`): HOG + the 68-point shape predictor shipped in the
  pip package ``face-recognition-models``; works offline (its iBUG 300-W training data excludes
  commercial use, see the README).

``create_detector("auto")`` returns the first available in that order; ``detector.name`` says which.
No backend ever downloads anything.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lipsyncctl.errors import ConfigError, MissingModelError
from lipsyncctl.faces.align import points3_from_landmarks


@dataclass(frozen=True)
class Face:
    """One face in one frame, in full-frame pixel coordinates.

    Attributes:
        box: ``(4,)`` float ``[x0, y0, x1, y1]``.
        score: detector confidence (backend-specific scale; 1.0 for refitted boxes).
        landmarks: ``(68, 2)`` or ``(106, 2)`` float ``(x, y)``.
        track_id: set by :class:`lipsyncctl.faces.track.FaceTracker`, else ``None``.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    track_id: int | None = None

    @property
    def points3(self) -> np.ndarray:
        """``(3, 2)`` alignment points ``[image-left brow, image-right brow, nose]``."""
        return points3_from_landmarks(self.landmarks)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    def with_track(self, track_id: int) -> Face:
        return replace(self, track_id=track_id)


class FaceDetector(ABC):
    """Finds faces with landmarks in RGB uint8 frames ``(H, W, 3)``."""

    name: str = "?"
    #: number of landmarks this backend returns (68 or 106)
    layout: int = 68
    #: whether :meth:`detect_batch` is faster than one :meth:`detect` per frame (GPU backends); a tracker
    #: buffers frames for a batch only then (buffering costs latency: the frames wait for the batch's last)
    batches: bool = False

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Face]:
        """All faces in one frame, unsorted. An empty list when there is none."""

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces for several frames; GPU backends override this to batch."""
        return [self.detect(f) for f in frames]

    @abstractmethod
    def refit(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        """Landmarks for known boxes (tracking between detections); one :class:`Face` per box."""


class ShownDetector(FaceDetector):
    """A detector that sees anamorphic frames as shown.

    A frame of anamorphic footage (DV, HDV: a stored pixel is ``pixel_aspect`` times as wide as it is high) is
    resampled to square pixels before ``inner`` sees it, since face detectors and landmark models are trained on
    square-pixel faces (dlib's HOG missed one frame in three of a face squeezed to 3/4 of its width), and what
    it finds is mapped back to stored pixels (x divided by the exact width ratio). Built by :func:`shown`."""

    def __init__(self, inner: FaceDetector, pixel_aspect: float) -> None:
        self.inner, self.pixel_aspect = inner, float(pixel_aspect)
        self.name, self.layout, self.batches = inner.name, inner.layout, inner.batches

    def _shown(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The frame in square pixels and the factor from its x to the stored frame's."""
        import cv2

        h, w = frame.shape[:2]
        width = max(1, round(w * self.pixel_aspect))
        wider = width > w
        image = cv2.resize(frame, (width, h), interpolation=cv2.INTER_LINEAR if wider else cv2.INTER_AREA)
        return image, w / width

    @staticmethod
    def _scaled(face: Face, sx: float) -> Face:
        box = np.asarray(face.box, dtype=np.float64) * np.array([sx, 1.0, sx, 1.0])
        landmarks = np.asarray(face.landmarks, dtype=np.float64) * np.array([sx, 1.0])
        return Face(box, face.score, landmarks, face.track_id)

    def detect(self, frame: np.ndarray) -> list[Face]:
        image, sx = self._shown(frame)
        return [self._scaled(f, sx) for f in self.inner.detect(image)]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        shown = [self._shown(f) for f in frames]
        found = self.inner.detect_batch([image for image, _ in shown])
        return [[self._scaled(f, sx) for f in faces] for (_, sx), faces in zip(shown, found, strict=True)]

    def refit(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        if not boxes:
            return []
        image, sx = self._shown(frame)
        inward = [np.asarray(b, dtype=np.float64) / np.array([sx, 1.0, sx, 1.0]) for b in boxes]
        return [self._scaled(f, sx) for f in self.inner.refit(image, inward)]


def shown(detector: FaceDetector, pixel_aspect: float) -> FaceDetector:
    """``detector`` for frames of ``pixel_aspect`` (:class:`ShownDetector`); itself for square pixels."""
    return detector if float(pixel_aspect) == 1.0 else ShownDetector(detector, pixel_aspect)


def filter_faces(
    faces: list[Face],
    min_size: float = 0.0,
    min_score: float | None = None,
    max_aspect: float = 1.5,
    min_aspect: float = 0.2,
) -> list[Face]:
    """Drop implausible faces: smaller than ``min_size`` px on the short side, below ``min_score``,
    or with a box aspect (w/h) outside ``[min_aspect, max_aspect]`` (the official filter uses 0.2..1.5)."""
    kept = []
    for face in faces:
        w = face.box[2] - face.box[0]
        h = face.box[3] - face.box[1]
        if w <= 0 or h <= 0 or min(w, h) < min_size:
            continue
        if not (min_aspect <= w / h <= max_aspect):
            continue
        if min_score is not None and face.score < min_score:
            continue
        kept.append(face)
    return kept


# name -> (module, availability check). Order = preference of "auto".
BACKENDS: tuple[str, ...] = ("insightface", "face-alignment", "dlib")
#: the official LatentSync detector (InsightFace SCRFD + 2d106, LATENTSYNC.md §1.5)
OFFICIAL_BACKEND = "insightface"


def _backend_module(name: str):
    import importlib

    module = {"insightface": "detect_insightface", "face-alignment": "detect_fan", "dlib": "detect_dlib"}.get(
        name
    )
    if module is None:
        raise ConfigError(
            f"unknown face detector {name!r}", hint=f"choose one of: auto, {', '.join(BACKENDS)}"
        )
    return importlib.import_module(f"lipsyncctl.faces.{module}")


def backend_status(name: str, models_dir: Path | None = None) -> str | None:
    """``None`` if backend ``name`` can run here, else the reason it cannot (one line)."""
    return _backend_module(name).unavailable_reason(models_dir)


def available_backends(models_dir: Path | None = None) -> dict[str, str | None]:
    """Every backend with ``None`` (usable) or the reason it is not."""
    return {name: backend_status(name, models_dir) for name in BACKENDS}


def usable_backend(name: str = "auto", models_dir: Path | None = None) -> str:
    """The backend ``name`` stands for (``auto``: the first usable of :data:`BACKENDS`), checked without
    building it (a job calls this before any work).

    Raises :class:`MissingModelError` when the named backend (or, for ``auto``, every backend) is
    unusable, with the reason and what to install or fetch.
    """
    if name == "auto":
        reasons = available_backends(models_dir)
        for candidate, reason in reasons.items():
            if reason is None:
                return candidate
        raise MissingModelError(
            "no face detector is usable: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()),
            hint="pip install 'lipsyncctl[faces]' (dlib works offline), or pip install face-alignment and "
                 "`lipsyncctl models fetch face-alignment` (its weights)",
        )
    module = _backend_module(name)
    reason = module.unavailable_reason(models_dir)
    if reason is not None:
        raise MissingModelError(f"face detector {name!r} is not usable: {reason}", hint=module.HINT)
    return name


def create_detector(
    name: str = "auto", device: str = "cpu", models_dir: Path | None = None, **options: object
) -> FaceDetector:
    """Build a detector. ``auto`` picks the first usable of :data:`BACKENDS`; ``detector.name`` says which.

    Raises :class:`MissingModelError` as :func:`usable_backend`.
    """
    backend = usable_backend(name, models_dir)
    return _backend_module(backend).create(device=device, models_dir=models_dir, **options)


# One spare detector per (backend, device): a batch of syncs in one process (a timeline worker's shots, the Python
# API's calls) loads the models once (dlib's 68-point model alone takes ~0.9 s) instead of once per clip.
_SPARE: dict[tuple[str, str], FaceDetector] = {}
_SPARE_LOCK = threading.Lock()


def take_detector(name: str = "auto", device: str = "cpu") -> FaceDetector:
    """A detector for ``name`` on ``device``, for one pass at a time: the spare one a finished pass gave back
    (:func:`give_back_detector`), else a new one (:func:`create_detector`). Two passes at once (threads) get two
    detectors, so none is used by two threads."""
    with _SPARE_LOCK:
        spare = _SPARE.pop((name, device), None)
    return spare if spare is not None else create_detector(name, device=device)


def give_back_detector(name: str, device: str, detector: FaceDetector) -> None:
    """Keep ``detector`` as the spare of ``(name, device)`` for the next :func:`take_detector` (one is kept)."""
    with _SPARE_LOCK:
        _SPARE[(name, device)] = detector


def release_detectors() -> None:
    """Forget the spare detectors (their memory is freed with the last reference)."""
    with _SPARE_LOCK:
        _SPARE.clear()


def downscale_for_detection(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``frame`` so its longer side is at most ``max_side``; returns ``(image, scale)`` with
    ``full = small * scale``. Detectors run on the small image and scale boxes back."""
    import cv2

    h, w = frame.shape[:2]
    longer = max(h, w)
    if max_side <= 0 or longer <= max_side:
        return frame, 1.0
    factor = max_side / longer
    small = cv2.resize(frame, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]
