"""Which face to follow (``faces.select``), over the tracks of :mod:`lipsyncctl.faces.track`.

- :func:`select_speaker` returns one ``Face | None`` per frame, for the words of ``faces.select``: the
  largest face per frame (official), a given track id, the track at a point, or the track whose mouth
  moves with the audio (the speaker).
- :func:`active_speaker`: the track whose mouth motion correlates best with the audio's loudness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lipsyncctl.errors import ConfigError, FaceChoiceError
from lipsyncctl.faces.detect import Face

if TYPE_CHECKING:
    from lipsyncctl.config import FaceSelect


def _mouth_opening(face: Face) -> float:
    """Inner-lip gap over face size (68-point layout: points 62 and 66); NaN for other layouts."""
    if face.landmarks.shape[0] != 68:
        return float("nan")
    gap = np.linalg.norm(face.landmarks[66] - face.landmarks[62])
    return float(gap / np.sqrt(max(face.area, 1.0)))


def _track_ids(faces_per_frame: Sequence[list[Face]]) -> list[int]:
    return sorted({f.track_id for faces in faces_per_frame for f in faces if f.track_id is not None})


def active_speaker(
    faces_per_frame: Sequence[list[Face]], audio_energy: np.ndarray, min_frames: int = 10
) -> int | None:
    """Track id whose mouth motion correlates best with the audio energy (one value per frame).

    Mouth motion = frame-to-frame change of the inner-lip gap; audio = change of the energy
    envelope. ``None`` when no track has ``min_frames`` frames with 68-point landmarks."""
    energy = np.asarray(audio_energy, dtype=np.float64)
    best, best_r = None, -np.inf
    for tid in _track_ids(faces_per_frame):
        opening = np.full(len(faces_per_frame), np.nan)
        for i, faces in enumerate(faces_per_frame):
            for f in faces:
                if f.track_id == tid:
                    opening[i] = _mouth_opening(f)
        n = min(len(opening), len(energy))
        a = np.abs(np.diff(opening[:n]))
        b = np.abs(np.diff(energy[:n]))
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < min_frames or a[ok].std() == 0 or b[ok].std() == 0:
            continue
        r = float(np.corrcoef(a[ok], b[ok])[0, 1])
        if r > best_r:
            best, best_r = tid, r
    return best


def select_speaker(
    faces_per_frame: Sequence[list[Face]],
    select: FaceSelect = "largest",
    track_id: int | None = None,
    point: tuple[float, float] | None = None,
    audio_energy: np.ndarray | None = None,
) -> list[Face | None]:
    """One face (or ``None`` = pass the frame through) per frame.

    ``select`` takes the words of ``faces.select``: ``largest`` (largest box per frame, the official
    rule), ``id`` (the track ``track_id``), ``point`` (the track whose boxes contain ``point = (x, y)``
    most often, nearest centre on ties), ``speaker`` (:func:`active_speaker` with ``audio_energy``,
    falling back to the track present in the most frames). Raises :class:`FaceChoiceError` when the
    requested track or point matches nothing.
    """
    if select == "largest":
        return [max(faces, key=lambda f: f.area) if faces else None for faces in faces_per_frame]
    if select == "id":
        if track_id is None:
            raise ConfigError("select 'id' needs a track id (faces.track_id, --face ID)")
        chosen = track_id
    elif select == "point":
        if point is None:
            raise ConfigError("select 'point' needs a point (faces.point, --face-at X,Y)")
        chosen = _track_at(faces_per_frame, point)
    elif select == "speaker":
        if audio_energy is None:
            raise ConfigError("select 'speaker' needs the audio energy per frame")
        chosen = active_speaker(faces_per_frame, audio_energy)
        if chosen is None:
            counts = {
                tid: sum(any(f.track_id == tid for f in fs) for fs in faces_per_frame)
                for tid in _track_ids(faces_per_frame)
            }
            chosen = max(counts, key=counts.get) if counts else None
        if chosen is None:
            return [None] * len(faces_per_frame)
    else:
        raise ConfigError(f"unknown face selection {select!r}", hint="use largest, id, point or speaker")
    out = [next((f for f in faces if f.track_id == chosen), None) for faces in faces_per_frame]
    if all(f is None for f in out):
        raise FaceChoiceError(f"no face with track id {chosen} in this clip ({_tracks_found(faces_per_frame)})")
    return out


class TrackCensus:
    """The tracks seen over a clip, a frame at a time (flat in the clip's length): each track's box in its first
    frame and its frame count, and how many frames show more than one face (:attr:`crowded`)."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[Face, int]] = {}
        self.crowded = 0
        self.frames = 0

    @classmethod
    def of(cls, faces_per_frame: Sequence[Sequence[Face]]) -> TrackCensus:
        """The census of a whole clip's faces."""
        census = cls()
        for faces in faces_per_frame:
            census.add(faces)
        return census

    def add(self, faces: Sequence[Face]) -> None:
        for f in faces:
            if f.track_id is not None:
                face, n = self.first.get(f.track_id, (f, 0))
                self.first[f.track_id] = (face, n + 1)
        self.crowded += len(faces) > 1
        self.frames += 1

    def __str__(self) -> str:
        """``tracks found: 0 at (120,80)-(260,240) in 90 frames, 3 ...``, or ``no face found``."""
        if not self.first:
            return "no face found"
        return "tracks found: " + ", ".join(
            f"{tid} at ({f.box[0]:.0f},{f.box[1]:.0f})-({f.box[2]:.0f},{f.box[3]:.0f}) in {n} frame{'s' * (n != 1)}"
            for tid, (f, n) in sorted(self.first.items()))

    def several_warning(self, fps: float) -> str | None:
        """Said when ``select: largest`` re-renders one face among others: more than one face in half a second of
        frames or more, or in half the frames of a shorter clip (a stray detection in a frame or two is not worth a
        word)."""
        if self.crowded < max(1, min(round(fps / 2), math.ceil(self.frames / 2))):
            return None
        return (f"more than one face in {self.crowded} frames ({self}): the largest face in each frame is "
                "re-rendered (the official rule); --face ID or --face-at X,Y follows one face")


def _tracks_found(faces_per_frame: Sequence[list[Face]]) -> str:
    """``tracks found: 0 at (120,80)-(260,240) in 90 frames, 3 ...`` (each track's box in its first frame), or
    ``no face found``."""
    return str(TrackCensus.of(faces_per_frame))


def _track_at(faces_per_frame: Sequence[list[Face]], point: tuple[float, float]) -> int:
    x, y = point
    hits: dict[int, list[float]] = {}
    for faces in faces_per_frame:
        for f in faces:
            if f.track_id is not None and f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]:
                hits.setdefault(f.track_id, []).append(float(np.hypot(*(f.center - (x, y)))))
    if not hits:
        raise FaceChoiceError(f"no face covers the point ({x:g}, {y:g}) in any frame ({_tracks_found(faces_per_frame)})")
    return max(hits, key=lambda t: (len(hits[t]), -float(np.mean(hits[t]))))
