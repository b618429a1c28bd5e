"""What the QC report shows of a rendered shot besides its scores: mouth strips, provenance, review flags.

Sync confidence (LSE-C, higher = better in sync) and distance (LSE-D, lower = better) come from
:mod:`lipsyncctl.scoring` (the evaluation SyncNet, ``lipsyncctl models fetch syncnet-v2``; on the official
scale when ``sfd-face`` is installed too, else on the labelled approximate one). Without the SyncNet the
scores are ``None`` and the report says so.

A **mouth strip** is a few evenly spaced frames of a shot's visible range (frames with speech when enough
have it), each cropped to a square around the mouth of the face that was re-rendered and scaled to
:data:`CROP` pixels: the source picture above, the render below, at the same frames and crops. The face is
found on the source frame with the configured detector (:mod:`lipsyncctl.faces`); with several faces, the
one whose mouth region changed most in the render is shown (whatever ``faces.select`` chose). Frames are
read a pair at a time (:class:`~lipsyncctl.media.reader.IndexedReader`), never the whole shot; the sync
scores read each side of a shot as a stream, twice (faces and shots, then the crops), holding only the crops
(:data:`~lipsyncctl.scoring.lse.FrameSource`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.faces.detect import Face, FaceDetector

#: frames per mouth strip, the side of each square crop (px) and the gutter between crops (px)
STRIP_FRAMES, CROP, GUTTER = 5, 112, 2
#: LSE-C under this (official scale) flags a shot for review: LatentSync's data filter keeps clips with
#: sync confidence >= 3 (``--min-sync`` replaces it when given)
REVIEW_LSE_C = 3.0
#: a shot whose face was found in fewer of its rendered frames than this share is flagged for review
REVIEW_FACE_COVERAGE = 0.9


def sample_frames(count: int, speech: Sequence[tuple[int, int]] = (), n: int = STRIP_FRAMES) -> list[int]:
    """``n`` evenly spaced indices in ``[0, count)`` (fewer when the shot is shorter), taken among the frames
    inside ``speech`` (``[lo, hi)`` ranges in the same indices) when at least ``n`` of them have speech."""
    talking = sorted({i for lo, hi in speech for i in range(max(lo, 0), min(hi, count))})
    pool = talking if len(talking) >= n else list(range(count))
    if len(pool) <= n:
        return pool
    return [pool[int((k + 0.5) * len(pool) / n)] for k in range(n)]


def mouth_square(face: Face) -> tuple[float, float, float]:
    """``(cx, cy, side)`` in pixels of a square around the mouth: from the 68-point mouth landmarks (48-67)
    where the detector gives them, else from the lower part of the face box."""
    x0, y0, x1, y1 = (float(v) for v in face.box[:4])
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    lm = np.asarray(face.landmarks) if face.landmarks is not None else np.zeros((0, 2))
    if lm.shape == (68, 2):
        mouth = lm[48:68]
        cx, cy = (float(v) for v in mouth.mean(axis=0))
        return cx, cy, max(2.2 * float(np.ptp(mouth[:, 0])), 0.6 * w)  # lips, chin and nose tip
    return (x0 + x1) / 2, y0 + 0.78 * h, 0.6 * w


def crop_square(rgb: np.ndarray, square: tuple[float, float, float], size: int = CROP) -> np.ndarray:
    """The ``square`` ``(cx, cy, side)`` of ``rgb`` ``(H, W, 3)`` as ``(size, size, 3)`` uint8 (black outside
    the frame)."""
    import cv2

    cx, cy, side = square
    s = max(2, round(side))
    x0, y0 = round(cx - s / 2), round(cy - s / 2)
    h, w = rgb.shape[:2]
    canvas = np.zeros((s, s, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_CUBIC)


def _changed(before: np.ndarray, after: np.ndarray, square: tuple[float, float, float]) -> float:
    """Mean absolute difference of the two frames inside ``square`` (how much the render changed there)."""
    a, b = crop_square(before, square, 32), crop_square(after, square, 32)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _choose(faces: list[Face], before: np.ndarray, after: np.ndarray | None) -> Face | None:
    """The face whose mouth the render changed most (the largest when nothing changed or no render)."""
    if not faces:
        return None
    largest = max(faces, key=lambda f: f.area)
    if after is None or len(faces) == 1:
        return largest
    changes = [_changed(before, after, mouth_square(f)) for f in faces]
    best = int(np.argmax(changes))
    return faces[best] if changes[best] > 0.5 else largest


def join_strip(crops: list[np.ndarray], gutter: int = GUTTER) -> np.ndarray:
    """Crops of one height side by side, ``gutter`` grey pixels apart: ``(H, sum(W) + gutter * (n - 1), 3)``."""
    parts: list[np.ndarray] = []
    for i, c in enumerate(crops):
        if i:
            parts.append(np.full((c.shape[0], gutter, 3), 128, dtype=np.uint8))
        parts.append(c)
    return np.concatenate(parts, axis=1)


@dataclass
class MouthStrips:
    """The source and render strips of one shot (``after`` None without a render).

    Attributes:
        frames: the sampled frames, indices into the shot's visible range.
        found: how many of them had a face (frames without one borrow the nearest found square).
        face_score: the lowest detector score of the chosen faces (the backend's own scale), None if none.
    """

    before: np.ndarray
    after: np.ndarray | None
    frames: list[int]
    found: int
    detector: str
    face_score: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        h, w = self.before.shape[:2]
        return {"frames": list(self.frames), "found": self.found, "size": [int(w), int(h)], "crop": CROP,
                "detector": self.detector, "face_score": None if self.face_score is None else round(self.face_score, 3),
                "rendered": self.after is not None, "note": self.note}


def mouth_strips(source: Path, source_first: int, render: Path | None, render_first: int, frames: list[int],
                 detector: FaceDetector | None, size: int = CROP, deinterlace: bool = False,
                 source_fps: Fraction | None = None) -> MouthStrips:
    """Strips of the visible frames ``frames`` (indices from ``source_first`` in ``source`` and from
    ``render_first`` in ``render``), cropped around the mouth found on the source frames (module doc).

    Frames are read a pair at a time and cropped at once; only a frame without a face is kept whole until
    the nearest found square crops it (all of them, shown whole and scaled, when no frame has a face or
    ``detector`` is None: no face detector is usable here). ``deinterlace``: an interlaced file's frames are
    read as progressive pictures (``sync.deinterlace``; a progressive file is read as it is). ``source_fps``: the
    source's rate where its files state none (an image sequence: the segment's ``media_fps``)."""
    import contextlib

    import cv2

    from lipsyncctl.faces.detect import shown
    from lipsyncctl.media.reader import IndexedReader

    squares: list[tuple[float, float, float] | None] = []
    crops: list[tuple[np.ndarray, np.ndarray | None]] = []
    whole: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    scores: list[float] = []
    with contextlib.ExitStack() as stack:
        # interlaced media (deinterlace): faces found and shown on progressive pictures, as the render found them
        src = stack.enter_context(IndexedReader(source, source_fps, deinterlace=deinterlace))
        out = stack.enter_context(IndexedReader(render, deinterlace=deinterlace)) if render is not None else None
        if detector is not None:  # anamorphic footage: faces are searched as shown (the crops stay stored pixels)
            detector = shown(detector, float(src.video.sample_aspect))
        for k, i in enumerate(frames):
            before = src.read([source_first + i])[source_first + i]
            after = out.read([render_first + i])[render_first + i] if out is not None else None
            face = _choose(detector.detect(before) if detector is not None else [], before, after)
            square = mouth_square(face) if face is not None else None
            squares.append(square)
            if face is not None and square is not None:
                scores.append(float(face.score))
                crops.append((crop_square(before, square, size),
                              crop_square(after, square, size) if after is not None else None))
            else:
                whole[k] = (before, after)
                crops.append((np.zeros((size, size, 3), np.uint8), None))
    found = [k for k, sq in enumerate(squares) if sq is not None]
    name = detector.name if detector is not None else "none"
    note = None
    for k, (before, after) in whole.items():
        if found:
            square = squares[min(found, key=lambda j: abs(j - k))]
            assert square is not None
            crops[k] = (crop_square(before, square, size), crop_square(after, square, size) if after is not None else None)
        else:  # no face anywhere: the whole frames, scaled to the strip's height
            width = max(1, round(before.shape[1] * size / before.shape[0]))
            crops[k] = (cv2.resize(before, (width, size), interpolation=cv2.INTER_AREA),
                        cv2.resize(after, (width, size), interpolation=cv2.INTER_AREA) if after is not None else None)
            note = "no face found in the sampled frames: whole frames shown"
    if not crops:
        return MouthStrips(np.zeros((size, size, 3), np.uint8), None, [], 0, name, None, "no frames")
    after_strip = join_strip([a for _, a in crops if a is not None]) if render is not None else None
    return MouthStrips(join_strip([b for b, _ in crops]), after_strip, list(frames), len(found), name,
                       min(scores) if scores else None, note)


def run_info(config: Config) -> dict[str, Any]:
    """What made the renders, for the report: the preset (``config.name``), the lipsyncctl version, each
    network's name and fingerprint (as in the content keys: size, mtime and sha256 of the first and last
    MiB, :func:`lipsyncctl.runner.store.file_fingerprint`; None when not installed), and whether the output
    is lip-synced at all: any tiny network means random weights (``ModelOptions.tiny_roles``), and
    ``not_lip_synced`` then says so in the CLI's words."""
    from lipsyncctl import __version__
    from lipsyncctl.checkpoints.tiny import NOT_LIP_SYNCED
    from lipsyncctl.errors import MissingModelError
    from lipsyncctl.pipeline.networks import resolve_model_file
    from lipsyncctl.runner.store import file_fingerprint

    m = config.model
    models = []
    for role, name in (("unet", m.checkpoint), ("whisper", m.whisper), ("vae", m.vae)):
        try:
            fingerprint: str | None = file_fingerprint(resolve_model_file(name, role))
        except MissingModelError:
            fingerprint = None
        models.append({"role": role, "name": name, "fingerprint": fingerprint,
                       **({"config": m.unet_config} if role == "unet" else {})})
    tiny = sorted(m.tiny_roles())
    return {"preset": config.name, "lipsyncctl": __version__, "models": models, "lip_synced": not tiny,
            "not_lip_synced": NOT_LIP_SYNCED if tiny else None}


def review_flags(shot: dict[str, Any], *, lip_synced: bool, scale: str | None,
                 min_sync: float | None) -> list[str]:
    """Why a shot of the report (``ShotResult.to_dict()`` plus ``sync_note`` and ``mouth_strip``) needs a
    look, in words; empty when it does not. LSE-C is checked against ``--min-sync`` when given, else against
    :data:`REVIEW_LSE_C` on the official scale only (the approximate scale is not comparable with it)."""
    status = shot["status"]
    if status == "failed":
        return [f"failed: {shot.get('error') or 'see the error'}"]
    if status == "no_face":
        return ["no usable face: not lip-synced (the source picture is kept)"]
    if status not in ("done", "under_min_sync"):
        return []
    flags = []
    if not lip_synced:
        flags.append("not lip-synced: the networks are random (tiny preset)")
    after, before = shot.get("sync_after"), shot.get("sync_before")
    limit = min_sync if min_sync is not None else REVIEW_LSE_C if scale == "official" else None
    if after is None:
        flags.append(f"sync not measured: {shot.get('sync_note') or 'no score'}")
    elif limit is not None and after < limit:
        flags.append(f"LSE-C {after:.2f} is under {limit:g}" + (" (--min-sync)" if min_sync is not None else
                                                                 " (the official data filter's threshold)"))
    if after is not None and before is not None and after <= before:
        flags.append(f"LSE-C {after:.2f} is no better than the source picture with the dub ({before:.2f})")
    coverage = shot.get("face_coverage")
    if coverage is not None and coverage < REVIEW_FACE_COVERAGE:
        flags.append(f"low face confidence: a face was found in {coverage:.0%} of the rendered frames")
    strip = shot.get("mouth_strip") or {}
    if strip.get("frames") and strip.get("found", 0) < len(strip["frames"]):
        flags.append(f"low face confidence: no face in {len(strip['frames']) - strip['found']} of "
                     f"{len(strip['frames'])} sampled frames ({strip.get('detector')})")
    return flags


#: reasons of a skipped clip whose picture the conform cannot show (black there): a hole in the delivery to review
MEDIA_HOLES = ("missing media", "unreadable media", "wrong media")


def media_holes(report: dict[str, Any]) -> list[str]:
    """The names of the edit's clips the conform shows black for want of their media (missing, unreadable, the wrong
    file): not shots, but holes in what is delivered."""
    return [k["name"] for k in report.get("skipped") or []
            if k.get("conform") == "black" and str(k.get("reason", "")).startswith(MEDIA_HOLES)]


def verdict(report: dict[str, Any]) -> str:
    """The whole language in one word: ``failed`` (a shot failed or is under ``--min-sync``), ``not
    lip-synced`` (random tiny networks), ``review`` (some shot is flagged, or a clip's media is missing: black in the
    conform) or ``ok``."""
    if not report["ok"]:
        return "failed"
    if not report.get("lip_synced", True):
        return "not lip-synced"
    if any(s.get("review") for s in report["shots"]) or media_holes(report):
        return "review"
    return "ok"
