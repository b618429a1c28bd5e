"""Clip stage ``align`` of the curation job: faces + the official alignment (LATENTSYNC.md §1.5-1.6, §4 step 6).

What the official ``affine_transform`` step does to every segment, without its defects:

1. One decode of the span on the 25 fps grid (:class:`~lipsyncctl.media.reader.IndexedReader`; the source
   is never re-encoded before this, so the aligned clip is the only new lossy encode). In a job the clips of
   a source share one decoder in span order (:class:`~lipsyncctl.curation.clipstages.SourceFrames`): one
   decode of the source for all its clips.
2. Faces with the sync pipeline's detectors (``curate.detector``, ``auto`` = the first usable backend; the
   backend is recorded, and only ``insightface`` is the official one). Official behaviour: the detector
   runs on every frame (``curate.detect_every: 1``; larger values track between detections with the
   sync pipeline's tracker), no landmark smoothing, the largest face of each frame is aligned.
3. The official affine with a **fresh** :class:`~lipsyncctl.faces.align.FaceAligner` per clip (the
   official ``VideoProcessor`` restarts its bias smoothing per video) to ``curate.resolution``.
4. The first frame without a face ends the stage: the clip is rejected (``no-face``, value = the frame
   index inside the span) and no video is left behind (the official step skips the video too).
5. Otherwise the aligned frames (``(res, res, 3)`` RGB, 25 fps; ``curate.align_codec``/``align_crf``,
   official libx264 CRF 13, or lossless FFV1 RGB in ``.mkv``) with the span's 16 kHz mono audio
   (samples ``[first * 640, stop * 640)``) go to ``DATA/aligned/<source id>/<clip id>.mp4``, and the
   per-frame frame->crop matrices ``(frames, 2, 3)`` float32 to the ``.npy`` beside it; both written
   atomically.

The measurements (frames with a face, the first frame without one, most faces in a frame, the smallest
face) are stored, so the official filters ``single_face`` (``multiple-faces``) and ``min_face_size``
(``small-face``: box width or height below the resolution; the official filter measured MediaPipe boxes,
ours are the detector's) re-decide without running again.

Steps 1-5 run concurrently on consecutive frames (:func:`~lipsyncctl.runner.pipelined.run_stages`: decode |
faces | affine | encode, one frame queued between two of them, so memory stays flat in the span's length);
each step keeps its own state and sees the frames in order, so the clip and its matrices are the serial
ones bit for bit. After a frame without a face nothing more is decoded or detected.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.config import CurateOptions
from lipsyncctl.curation.records import Decision
from lipsyncctl.curation.stages import span_pcm
from lipsyncctl.faces.detect import OFFICIAL_BACKEND

if TYPE_CHECKING:
    from lipsyncctl.curation.clipstages import ClipContext
    from lipsyncctl.faces.detect import Face, FaceDetector

NAME = "align"
#: bump when the stage computes something different from the same inputs and settings
VERSION = 1


def settings(options: CurateOptions) -> dict[str, Any]:
    """What the stored result depends on (the filters ``single_face``/``min_face_size`` only decide).
    ``auto`` is resolved to the backend it picks now, so installing the official detector recomputes."""
    from lipsyncctl.faces.track import tracker_key

    encode = "ffv1-rgb" if options.lossless else f"{options.align_codec}-crf{options.align_crf}"
    return {"resolution": options.resolution, "detector": resolved_backend(options.detector),
            "detect_every": options.detect_every, "fps": options.fps, "encode": encode} | tracker_key(
                options.detect_every)


def resolved_backend(name: str) -> str:
    """The backend ``name`` means here (``auto``: the first usable one, or ``none``)."""
    if name != "auto":
        return name
    from lipsyncctl.faces.detect import available_backends

    return next((k for k, reason in available_backends().items() if reason is None), "none")


def run(ctx: ClipContext) -> dict[str, Any]:
    """Detect, align and write one clip (module doc). Returns the measurements; ``aligned`` and
    ``matrices`` are the written files, None when a frame has no face.

    Raises:
        MissingModelError: no usable face detector. MediaError: the source cannot be decoded or the
        clip cannot be written.
    """
    from lipsyncctl.faces.align import FaceAligner
    from lipsyncctl.faces.detect import shown
    from lipsyncctl.faces.track import FaceTracker, TrackOptions
    from lipsyncctl.media.atomic import temp_prefix
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.runner.pipelined import run_stages

    options = ctx.options
    fps = Fraction(options.fps)
    detector = _detector(ctx)
    data = new_data(ctx.frames, options, detector.name)
    # Official: detection on every frame, raw landmarks (max_missed=0: a frame the detector misses has
    # no face, it is not bridged by a refit); with detect_every > 1 the tracker refits in between.
    track = TrackOptions(detect_every=options.detect_every, smooth=False,
                         max_missed=0 if options.detect_every == 1 else 1)
    # the tracker and the aligner (fresh per clip, like VideoProcessor) once the source's pixel aspect is known
    tracker: FaceTracker | None = None
    aligner: FaceAligner | None = None
    aspect = 1.0
    out, matrices_path = aligned_paths(ctx.data, ctx.source_id, ctx.clip_id, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.stem}.align.*"):  # left by a killed run of this clip
        shutil.rmtree(stale, ignore_errors=True)
    matrices: list[np.ndarray] = []
    halt = threading.Event()  # set at the first frame without a face: nothing after it is decoded or detected

    def faces_of(frame: np.ndarray) -> tuple[np.ndarray, list[Face]] | None:  # stage 1 (its own thread)
        if halt.is_set():
            return None
        faces = tracker.update(frame)
        if not faces:
            halt.set()
        return frame, faces

    def aligned(item: tuple[np.ndarray, list[Face]] | None) -> tuple[np.ndarray, np.ndarray] | None:  # stage 2
        if item is None:  # after the frame without a face
            return None
        frame, faces = item
        face = largest_face(faces)
        if not count_frame(data, len(faces), face_side(face, aspect)):
            return None
        return aligner.align(frame, face.points3)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=temp_prefix(out, "align")) as tmpdir:
        video_only = Path(tmpdir) / f"video{out.suffix}"
        writer = clip_writer(video_only, options)
        try:
            shared = ctx.source_frames
            own = None if shared is not None else IndexedReader(ctx.source, fps,
                                                                 deinterlace=options.deinterlace == "auto")
            with (contextlib.nullcontext(shared) if own is None else own) as reader, \
                    progress.Task(f"align ({detector.name})", total=ctx.frames) as task:
                # anamorphic footage (stored pixels not square; normalize keeps a 25 fps source as it is): the
                # face is aligned as shown, as sync does
                aspect = float(reader.video.sample_aspect)
                tracker = FaceTracker(shown(detector, aspect), fps=float(fps), options=track)
                aligner = FaceAligner(resolution=options.resolution, smooth=True, pixel_aspect=aspect)

                def decoded() -> Iterator[np.ndarray]:  # stage 0 (the producer thread)
                    for _, rgb in reader.range(ctx.first, ctx.stop):
                        if halt.is_set():
                            return
                        yield rgb

                def written(result: tuple[np.ndarray, np.ndarray] | None) -> None:  # stage 3 (its own thread)
                    if result is not None:
                        writer.write(result[0])
                        matrices.append(result[1])
                    task.advance()

                # torch's own threads would only fight the four stages for the cores (the warp is elementwise:
                # the same pixels with any thread count)
                run_stages(decoded(), [faces_of, aligned, written], main=1, name="align", torch_threads=1)
        except BaseException as exc:
            writer.abort(exc)
            raise
        if data["no_face_frame"] is not None:
            writer.abort()  # rejected: no aligned clip is written (official: the video is skipped)
            return data
        writer.close()
        return {**data, **finish_clip(video_only, out, matrices_path, matrices, ctx.audio, ctx.first, ctx.stop,
                                      options, ctx.source)}


def aligned_paths(data: Path, source_id: str, clip_id: str, options: CurateOptions) -> tuple[Path, Path]:
    """``(clip, matrices)``: where a clip's aligned video and its per-frame matrices go
    (``DATA/aligned/<source id>/<clip id>.mp4|.mkv`` and ``.npy``)."""
    folder = data / "aligned" / source_id
    return folder / f"{clip_id}{aligned_suffix(options)}", folder / f"{clip_id}.npy"


def aligned_suffix(options: CurateOptions) -> str:
    """The aligned clips' container: ``.mkv`` for lossless FFV1 + PCM, else ``.mp4``."""
    return ".mkv" if options.lossless else ".mp4"


def clip_writer(path: Path, options: CurateOptions) -> Any:
    """The aligned clip's video writer (the only lossy encode: ``align_codec`` at ``align_crf``, or FFV1)."""
    from lipsyncctl.media.writer import OUTPUT_CODECS, VideoWriter

    fps = Fraction(options.fps)
    if options.lossless:
        return VideoWriter(path, fps, codec="ffv1", pix_fmt=OUTPUT_CODECS["ffv1"].pix_fmt)
    return VideoWriter(path, fps, codec=options.align_codec, crf=options.align_crf, preset="medium")


def finish_clip(video_only: Path, out: Path, matrices_path: Path, matrices: list[np.ndarray], audio: Path,
                first: int, stop: int, options: CurateOptions, source: Path) -> dict[str, Any]:
    """The closed ``video_only`` with the span's audio into ``out`` and the matrices beside it (both
    atomic); the result's file fields."""
    from lipsyncctl.media.mux import mux_audio

    samples = span_audio(audio, first, stop)
    _save_matrices(matrices_path, np.stack(matrices).astype(np.float32))
    try:
        mux_audio(video_only, samples, out, rate=options.audio_rate, codec="pcm" if options.lossless else "aac",
                  duration=(stop - first) / options.fps, pad=True, inputs=(source,))
    except BaseException:  # (a full disk): no matrices left without their clip
        matrices_path.unlink(missing_ok=True)
        raise
    return {"aligned": str(out), "matrices": str(matrices_path), "audio_samples": int(len(samples))}


def largest_face(faces: list[Face]) -> Face | None:
    """The face a clip is aligned to (official: the largest of the frame), None without one."""
    return max(faces, key=lambda f: f.area) if faces else None


def face_side(face: Face | None, pixel_aspect: float = 1.0) -> float | None:
    """The shorter side of a face's box in pixels as shown (``min_face_size``; the width of a box in stored pixels
    times ``pixel_aspect``); None for no face."""
    if face is None:
        return None
    return float(min((face.box[2] - face.box[0]) * pixel_aspect, face.box[3] - face.box[1]))


def count_frame(data: dict[str, Any], faces: int, side: float | None) -> bool:
    """One frame into a clip's measurements (:func:`new_data`): how many faces it has and the chosen one's
    :func:`face_side` (None: no face). False at a frame without a face: the clip ends there (``no_face_frame``
    is its index in the span). ``min_face_size`` is kept rounded to 0.1 px (rounding is monotonic: the
    minimum of the rounded sides is the rounded minimum)."""
    data["max_faces"] = max(data["max_faces"], faces)
    if side is None:
        data["no_face_frame"] = data["frames_with_face"]
        return False
    size = round(side, 1)
    data["min_face_size"] = size if data["min_face_size"] is None else min(data["min_face_size"], size)
    data["frames_with_face"] += 1
    return True


def new_data(frames: int, options: CurateOptions, detector: str) -> dict[str, Any]:
    """A clip's measurements before its first frame."""
    return {"frames": frames, "resolution": options.resolution, "detector": detector,
            "detector_official": detector == OFFICIAL_BACKEND, "frames_with_face": 0, "no_face_frame": None,
            "max_faces": 0, "min_face_size": None, "aligned": None, "matrices": None}


def decide(data: Mapping[str, Any], options: CurateOptions) -> Decision | None:
    """The official filters when switched on, ``multiple-faces`` first (value: most faces in a frame: a two-shot
    whose second face a frame misses is said as what it is), then ``no-face`` (value: the first frame of the span
    without a face) and ``small-face`` (value: the smallest face box side in px, below ``resolution``)."""
    if options.single_face and data["max_faces"] > 1:
        return Decision.rejected(NAME, "multiple-faces", data["max_faces"])
    if data["no_face_frame"] is not None:
        return Decision.rejected(NAME, "no-face", data["no_face_frame"])
    if options.min_face_size and data["min_face_size"] < options.resolution:
        return Decision.rejected(NAME, "small-face", data["min_face_size"])
    return None


def outputs(data: Mapping[str, Any]) -> list[str]:
    """The files a stored result needs (none for a rejected clip)."""
    return [p for p in (data.get("aligned"), data.get("matrices")) if p]


def summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's fields: the aligned clip, its size (px), its matrices and how the faces were found."""
    out = {"aligned": data.get("aligned"), "resolution": data.get("resolution"), "matrices": data.get("matrices"),
           "detector": data["detector"],
           "detector_official": data["detector_official"], "max_faces": data["max_faces"],
           "min_face_size": data["min_face_size"]}
    if data["no_face_frame"] is not None:
        out["no_face_frame"] = data["no_face_frame"]
    return out


def span_audio(path: Path, first: int, stop: int) -> np.ndarray:
    """The span's samples of the source's 16 kHz WAV as float32 ``(n,)`` (:func:`~lipsyncctl.curation.stages.
    span_pcm` / 32768, the official scaling), zero-padded past its end."""
    return span_pcm(path, first, stop).astype(np.float32) / 32768.0


def _detector(ctx: ClipContext) -> FaceDetector:
    return worker_detector(ctx.options, ctx.cache, ctx.device)


def worker_detector(options: CurateOptions, cache: dict[str, Any], device: str | None) -> FaceDetector:
    """The worker's detector for ``curate.detector`` (:func:`~lipsyncctl.curation.clipstages.worker_network`)."""
    from lipsyncctl.curation.clipstages import worker_network
    from lipsyncctl.faces.detect import create_detector

    def load(device: str) -> FaceDetector:
        detector = create_detector(options.detector, device=device)
        progress.message(f"face detector: {detector.name}")
        return detector

    return worker_network(cache, device, f"{NAME}.detector.{options.detector}", [], load)


def _save_matrices(path: Path, matrices: np.ndarray) -> None:
    from lipsyncctl.media.atomic import atomic_output

    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, matrices)
