"""Step 2 of the sync pipeline: the face pass over the selected source frames (before any network loads).

Detect + track + smooth (:mod:`lipsyncctl.faces.track`), choose whose mouth to re-render
(``faces.select``, :mod:`lipsyncctl.faces.speaker`), and compute the official alignment matrix per
frame. Frames without the chosen face get no matrix and pass through; the cross-fade weights ramp the
generated face in and out around them. What is kept for the whole clip is one small record per source frame.

Speaker choice (``faces.select``):

- ``largest``: the largest face in each frame (official LatentSync).
- ``id``: the track ``faces.track_id`` (``--face ID``; ids are in the order faces first appear).
- ``point``: the track whose box contains ``faces.point`` (``--face-at X,Y``) in the most frames.
- ``speaker``: the track whose mouth opening moves with the new audio's loudness
  (:func:`lipsyncctl.faces.speaker.active_speaker`). With a single track that track is used; when no
  track can be judged (too few frames, no 68-point landmarks) the largest face is used and a warning
  says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress

if TYPE_CHECKING:
    from lipsyncctl.config import FaceOptions, FaceSelect
    from lipsyncctl.media.reader import IndexedReader


@dataclass
class FacePlan:
    """Per selected source frame: the frame->crop matrix (None = no face) and the blend weight.

    Attributes:
        matrices: ``(2, 3)`` float arrays (frame -> aligned crop), one per source frame, or None.
        weights: ``(V,)`` float32 weight of the generated face per source frame (0 = source frame).
        detector: the detector backend's name.
        selection: the ``faces.select`` word that chose the face: ``largest``, ``id``, ``point`` or
            ``speaker`` (``largest`` when ``speaker`` could not tell who speaks; a warning says so).
        track_id: the followed track, or None for ``largest``.
        warnings: things the caller should report.
    """

    matrices: list[np.ndarray | None]
    weights: np.ndarray
    detector: str
    selection: FaceSelect = "largest"
    track_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        return sum(m is not None for m in self.matrices)


def frame_energy(samples: np.ndarray, rate: int, fps: Fraction, frames: int) -> np.ndarray:
    """RMS loudness of mono ``samples`` in each frame period ``[i / fps, (i + 1) / fps)``, ``(frames,)``.

    Frames past the end of the audio get 0."""
    out = np.zeros(frames, dtype=np.float64)
    for i in range(frames):
        lo = int(Fraction(i * rate) / fps)
        hi = int(Fraction((i + 1) * rate) / fps)
        part = samples[lo:hi]
        if len(part):
            out[i] = float(np.sqrt(np.mean(np.square(part, dtype=np.float64))))
    return out


def track_clip_faces(reader: IndexedReader, first: int, count: int, fps: Fraction, options: FaceOptions,
                     resolution: int, device: str = "cpu", audio_16k: np.ndarray | None = None) -> FacePlan:
    """Track faces over source frames ``first .. first + count - 1`` and choose whose mouth to render.

    Args:
        reader: the source video on its frame grid.
        fps: the grid rate (for smoothing and the audio energy).
        options: the ``faces`` section.
        resolution: the aligned crop size (256 or 512).
        device: where GPU detector backends run (``cpu`` or ``cuda:N``).
        audio_16k: the new audio, mono 16 kHz, aligned with ``first`` (needed for ``select: speaker``).
    """
    from lipsyncctl.faces.align import FaceAligner
    from lipsyncctl.faces.detect import create_detector
    from lipsyncctl.faces.track import TrackOptions, crossfade_weights, track_faces
    from lipsyncctl.pipeline.memory import trimmed

    detector = create_detector(options.backend, device=device)
    progress.message(f"face detector: {detector.name}")
    track_opts = TrackOptions(detect_every=options.detect_every, smooth=options.smoothing)
    frames = trimmed(rgb for _, rgb in reader.range(first, first + count))  # flat RSS (see pipeline.memory)
    per_frame = track_faces(detector, frames, fps=float(fps), options=track_opts, total=count)
    result = FacePlan([], np.zeros(0, np.float32), detector.name)
    chosen = choose_faces(per_frame, options, fps, audio_16k, result)
    aligner = FaceAligner(resolution=resolution, smooth=options.smoothing)
    for face in chosen:
        if face is None:
            aligner.reset()  # a new shot or the face came back: restart the official bias smoothing
            result.matrices.append(None)
        else:
            result.matrices.append(aligner.matrix(face.points3))
    fade = options.crossfade_frames
    result.weights = np.asarray(crossfade_weights(chosen, fade_in=fade, fade_out=fade), dtype=np.float32)
    return result


def choose_faces(per_frame: list[list[Any]], options: FaceOptions, fps: Fraction, audio_16k: np.ndarray | None,
                 result: FacePlan) -> list[Any]:
    """One :class:`~lipsyncctl.faces.detect.Face` or None per frame, following ``options.select`` (module
    doc); sets ``result.selection`` and ``result.track_id`` and appends to ``result.warnings``.

    Args:
        per_frame: the tracked faces of each frame (``track_id`` set).
        audio_16k: mono 16 kHz audio starting at the first frame (``select: speaker``).

    Raises:
        NoFaceError: the requested track id or point matches no face.
    """
    from lipsyncctl.faces.speaker import active_speaker, select_speaker

    if options.select == "id":
        result.selection, result.track_id = "id", options.track_id
        return select_speaker(per_frame, select="id", track_id=options.track_id)
    if options.select == "point":
        assert options.point is not None
        chosen = select_speaker(per_frame, select="point", point=tuple(options.point))
        result.selection = "point"
        result.track_id = next((f.track_id for f in chosen if f is not None), None)
        return chosen
    if options.select == "speaker":
        tracks = sorted({f.track_id for faces in per_frame for f in faces if f.track_id is not None})
        if len(tracks) == 1:
            tid: int | None = tracks[0]
        elif tracks and audio_16k is not None:
            energy = frame_energy(audio_16k, 16000, fps, len(per_frame))
            tid = active_speaker(per_frame, energy)
        else:
            tid = None
        if tid is not None:
            result.selection, result.track_id = "speaker", tid
            progress.message(f"active speaker: face track {tid} (of {len(tracks)})")
            return select_speaker(per_frame, select="id", track_id=tid)
        if tracks:
            result.warnings.append(
                f"faces.select speaker: could not tell which of {len(tracks)} faces speaks (too few frames "
                "with mouth landmarks); used the largest face")
    result.selection = "largest"
    return select_speaker(per_frame, select="largest")
