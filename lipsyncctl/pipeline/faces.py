"""Step 3 of the sync pipeline (DESIGN §3): the face pass over the selected source frames (before any network loads).

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

The face pass does not depend on the dub (except ``speaker``), so its result can be kept and reused by
every language of a shot and by reruns: :func:`save_face_plan` / :func:`load_face_plan`, keyed by
:func:`face_cache_key` (``sync_clip(..., face_cache=PATH)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.audio import MODEL_AUDIO_RATE

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

    def at(self, k: int) -> tuple[np.ndarray | None, float]:
        """The matrix and blend weight of the ``k``-th selected frame (what the renderer asks)."""
        return self.matrices[k], float(self.weights[k])


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

    detector = _detector(options, device)
    try:
        per_frame = list(_tracked(_tracker(detector, fps, options, reader.video.sample_aspect), reader, first, count))
    finally:
        _release(options, device, detector)
    result = FacePlan([], np.zeros(0, np.float32), detector.name)
    chosen = choose_faces(per_frame, options, fps, audio_16k, result)
    aligner = FaceAligner(resolution=resolution, smooth=options.smoothing,
                          pixel_aspect=float(reader.video.sample_aspect))
    result.matrices.extend(_matrix(aligner, face) for face in chosen)
    result.weights = _weights(result.matrices, options)
    return result


def _weights(matrices: list[np.ndarray | None], options: FaceOptions) -> np.ndarray:
    """The blend weight of the generated face per frame (``faces.crossfade_frames``), as a plan holds them."""
    from lipsyncctl.faces.track import crossfade_weights

    fade = options.crossfade_frames
    return np.asarray(crossfade_weights(matrices, fade_in=fade, fade_out=fade), dtype=np.float32)


def _detector(options: FaceOptions, device: str) -> Any:
    """The detector of ``faces.backend`` for one pass (the process's spare one when there is one; give it back
    with :func:`_release`)."""
    from lipsyncctl.faces.detect import take_detector

    detector = take_detector(options.backend, device)
    if _said.get("detector") != detector.name:  # a batch's or a worker's next clip: said once (its result has it)
        progress.message(f"face detector: {detector.name}")
        _said["detector"] = detector.name
    return detector


#: what this process has said already (the last face detector's name)
_said: dict[str, str] = {}


def _release(options: FaceOptions, device: str, detector: Any) -> None:
    """A finished pass's detector becomes the spare for the next clip (models loaded once per process)."""
    from lipsyncctl.faces.detect import give_back_detector

    give_back_detector(options.backend, device, detector)


def _tracker(detector: Any, fps: Fraction, options: FaceOptions, pixel_aspect: Fraction) -> Any:
    """The face pass's :class:`~lipsyncctl.faces.track.FaceTracker` (``faces.detect_every``, ``faces.smoothing``),
    its detector seeing frames of ``pixel_aspect`` as shown (:func:`~lipsyncctl.faces.detect.shown`)."""
    from lipsyncctl.faces.detect import shown
    from lipsyncctl.faces.track import FaceTracker, TrackOptions

    return FaceTracker(shown(detector, float(pixel_aspect)), fps=float(fps),
                       options=TrackOptions(detect_every=options.detect_every, smooth=options.smoothing))


def _tracked(tracker: Any, reader: IndexedReader, first: int, count: int,
             keep: Callable[[int, np.ndarray, Any], bool] | None = None) -> Iterator[list[Any]]:
    """The tracked faces of each source frame ``first .. first + count - 1``, in order (a generator: closing it
    stops the decode thread). ``keep(index, image, frame)`` sees each frame as it is decoded (in the decode thread;
    ``frame`` the decoded :class:`~lipsyncctl.media.reader.Frame`);
    when it returns False the decoding stops there."""
    from lipsyncctl.pipeline.memory import trimmed
    from lipsyncctl.runner.pipelined import prefetched

    def decoded() -> Iterator[np.ndarray]:
        for index, rgb, frame in reader.pictures(first, first + count):
            if keep is not None and not keep(index, rgb, frame):
                return
            yield rgb

    # decoded in a thread of its own while the tracker works (two frames ahead); flat RSS (see pipeline.memory)
    frames = prefetched(trimmed(decoded()), name="faces")
    try:
        yield from progress.track(tracker.track(frames), f"faces ({tracker.detector.name})", total=count)
    finally:
        frames.close()


def _matrix(aligner: Any, face: Any) -> np.ndarray | None:
    """The official alignment matrix of the chosen ``face`` (None: no face; the aligner's smoothing restarts, as
    at a new shot or where the face comes back)."""
    if face is None:
        aligner.reset()
        return None
    return aligner.matrix(face.points3)


def streams(options: FaceOptions) -> bool:
    """Whether the face pass can run beside the render (:class:`FaceStream`): when each frame's choice depends
    on that frame alone (``select: largest``); ``id``, ``point`` and ``speaker`` need the whole clip's tracks."""
    return options.select == "largest"


class FaceStream:
    """The face pass for ``select: largest`` in a thread of its own, beside the networks and the render: one
    record per source frame as the tracker reaches it, the same records as :func:`track_clip_faces` (same
    tracker, choice and aligner, in order; the blend weights by :func:`~lipsyncctl.faces.track.crossfade_weight_at`,
    which needs ``crossfade_frames + 1`` frames of look-ahead).

    :meth:`first_face` waits for the first face (or the end: no face anywhere), :meth:`at` for one frame's
    record, :meth:`result` for the whole :class:`FacePlan`. An error of the pass is raised by whichever of them is
    waiting. :meth:`close` (always, in a ``finally``) stops the pass and joins its threads. ``seconds`` is its own
    wall time (the detector's loading included).

    With ``keep`` > 0 the render reads the frames this pass decodes (:meth:`reader`) instead of decoding the clip a
    second time: each decoded frame is kept until the render has read past it. Until the render's first read the
    pass runs freely and keeps its first ``keep`` frames (a pass that outruns the network load does not wait for
    it; the render decodes the frames it did not keep); from then on it decodes at most ``keep`` frames past the
    render's last read (or past the frame or record the render waits for), plus the tracker's own buffer
    (:attr:`~lipsyncctl.faces.track.FaceTracker.span`), so memory stays flat."""

    def __init__(self, video: Path, info: Any, first: int, count: int, fps: Fraction, options: FaceOptions,
                 resolution: int, device: str = "cpu", cache: tuple[Path, dict[str, Any]] | None = None,
                 keep: int = 0, deinterlaced: bool = False) -> None:
        import threading
        import time

        from lipsyncctl.faces.speaker import TrackCensus

        self._t0 = time.perf_counter()
        self._detector = _detector(options, device)  # a missing backend fails here, in the caller's thread
        self.detector_name: str = self._detector.name
        self.video, self.info, self.first, self.count, self.fps = Path(video), info, first, count, fps
        self.options, self.resolution, self.device = options, resolution, device
        self.deinterlaced = deinterlaced  # the pass reads progressive pictures of an interlaced source
        #: ``(path, key)``: the finished pass is written there once (:func:`save_face_plan`)
        self.cache = cache
        self._matrices: list[np.ndarray | None] = []
        self._census = TrackCensus()  # the tracks seen: said when the largest of several faces is re-rendered
        self._found = 0  # frames with a face so far (first_face polls it under the lock)
        #: frames the pass may keep ahead of the render's reads (0: none, the render decodes on its own)
        self.keep = keep
        #: source index -> (image, decoded Frame), until the render reads past it
        self._frames: dict[int, tuple[np.ndarray, Any]] = {}
        self._next = first  # the next source index the pass decodes
        self._low = first  # kept frames below it are dropped: the render has read past them
        self._want = first - 1  # the highest source index the render waits for (a frame, or a record's look-ahead)
        self._reading = False  # the render has begun to read kept frames
        self._lag = 1  # frames the tracker takes in before a frame's faces come out (FaceTracker.span)
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seconds = 0.0

    def start(self) -> FaceStream:
        import contextvars
        import threading

        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,), name="faces-stream")
        self._thread.start()
        return self

    def _run(self) -> None:
        import time

        from lipsyncctl.faces.align import FaceAligner
        from lipsyncctl.faces.speaker import select_speaker
        from lipsyncctl.media.reader import IndexedReader

        try:
            with IndexedReader(self.video, self.fps, info=self.info, deinterlace=self.deinterlaced) as reader:
                aligner = FaceAligner(resolution=self.resolution, smooth=self.options.smoothing,
                                      pixel_aspect=float(reader.video.sample_aspect))
                tracker = _tracker(self._detector, self.fps, self.options, reader.video.sample_aspect)
                self._lag = tracker.span
                tracked = _tracked(tracker, reader, self.first, self.count, keep=self._keep)
                try:
                    for faces in tracked:
                        if self._stop.is_set():
                            break
                        self._census.add(faces)
                        matrix = _matrix(aligner, select_speaker([faces], select="largest")[0])
                        with self._cond:
                            self._matrices.append(matrix)
                            self._found += matrix is not None
                            self._cond.notify_all()
                finally:
                    tracked.close()
        except BaseException as exc:  # raised in the thread that waits for a record
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - self._t0
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _keep(self, index: int, image: np.ndarray, frame: Any) -> bool:
        """The decode thread's hook for each decoded frame: kept for the render (:attr:`keep`), waiting while the
        render is too far behind. False: the pass was stopped, decode no further."""
        with self._cond:
            if self.keep > 0:
                while (self._reading and not self._stop.is_set()
                       and index > max(self._low + self.keep, self._want) + self._lag):
                    self._cond.wait(0.05)
                if self._stop.is_set():
                    return False
                if self._reading or index < self.first + self.keep:
                    image.flags.writeable = False  # one array for both passes: neither may change it
                    self._frames[index] = (image, frame)
            self._next = index + 1
            self._cond.notify_all()
        return True

    def _read(self, indices: Iterable[int], fallback: IndexedReader) -> dict[int, tuple[np.ndarray, Any]]:
        """Frames ``indices`` (:meth:`IndexedReader.read_sources`): the kept ones (waiting for those still to come) and the
        others (before the selected range, past it, frames the pass did not keep or the render went back to: a
        loop, a ping-pong) from ``fallback``."""
        need = set(indices)
        end = self.first + self.count
        with self._cond:
            self._reading = True
            mine = {i for i in need if i in self._frames or self._next <= i < end}
            self._want = max([self._want, *mine])
            self._cond.notify_all()
        if mine:
            self._wait(lambda: mine.issubset(self._frames))
        with self._cond:
            out = {i: self._frames[i] for i in mine}
            self._low = max([self._low, *(i for i in need if i < end)])
            for i in [i for i in self._frames if i < self._low]:  # the last frame read stays: it may repeat
                del self._frames[i]
            self._cond.notify_all()
        rest = need - mine
        if rest:
            out.update(fallback.read_sources(rest))
        return out

    def reader(self, fallback: IndexedReader) -> StreamFrames:
        """What the render reads its source frames from (``read(indices)``): this pass's kept frames, others from
        ``fallback`` (a reader of the same video on the same grid)."""
        return StreamFrames(self, fallback)

    def _wait(self, ready: Any) -> None:
        """Until ``ready()`` (checked under the lock) or the pass ended; raises the pass's error. Short waits, so
        that Ctrl-C reaches a waiting main thread."""
        with self._cond:
            while not ready() and not self._done:
                self._cond.wait(0.05)
            if self._error is not None:
                raise self._error
            if not ready():  # the reader ended early, or close() stopped the pass
                from lipsyncctl.errors import MediaError

                raise MediaError(f"{self.video}: the face pass {'was stopped' if self._stop.is_set() else 'ended'}"
                                 f" after {len(self._matrices)} of {self.count} frames")

    def first_face(self) -> bool:
        """True as soon as a frame has a face; False when the pass ended without one."""
        self._wait(lambda: self._found > 0 or len(self._matrices) == self.count)
        return self._found > 0

    def at(self, k: int) -> tuple[np.ndarray | None, float]:
        """The matrix and blend weight of selected frame ``k`` (waits for its look-ahead)."""
        from lipsyncctl.faces.track import crossfade_weight_at

        fade = self.options.crossfade_frames
        lo, hi = max(0, k - fade - 1), min(self.count, k + fade + 2)
        with self._cond:
            self._want = max(self._want, self.first + hi - 1)
            self._cond.notify_all()
        self._wait(lambda: len(self._matrices) >= hi)
        with self._cond:
            window, matrix = self._matrices[lo:hi], self._matrices[k]
        weight = crossfade_weight_at(window, k - lo, fade_in=fade, fade_out=fade)
        return matrix, float(np.float32(weight))  # as FacePlan.weights holds it

    def result(self) -> FacePlan:
        """The whole pass as a :class:`FacePlan` (waits for its end). Called once the render has read its last
        frame: the pass is no longer held back by the render's reads, and keeps no more frames."""
        with self._cond:
            self._reading, self.keep = False, 0  # a pass past the render's last read would wait for it forever
            self._frames.clear()
            self._cond.notify_all()
        self._wait(lambda: len(self._matrices) == self.count)
        self.close()
        return self._plan()

    def _plan(self) -> FacePlan:
        """The whole pass (once it has every frame) as a :class:`FacePlan`, written to :attr:`cache` once."""
        plan = FacePlan(list(self._matrices), _weights(self._matrices, self.options), self.detector_name)
        if several := self._census.several_warning(float(self.fps)):
            plan.warnings.append(several)
        if self.cache is not None:
            _store(self.cache[0], plan, self.cache[1])
            self.cache = None
        return plan

    def close(self) -> None:
        """Stop the pass (if it still runs) and join its threads. A pass that had reached its last frame is
        written to :attr:`cache` even so (a render that failed after it: its rerun reuses the faces)."""
        from lipsyncctl.runner.pipelined import join_all

        self._stop.set()
        if self._thread is not None:
            join_all([self._thread])
            self._thread = None
        self._frames.clear()
        if self._detector is not None:
            _release(self.options, self.device, self._detector)
            self._detector = None
        if self.cache is not None and self._error is None and len(self._matrices) == self.count:
            self._plan()


@dataclass
class StreamFrames:
    """The render's source frames from a :class:`FaceStream` that keeps them (:meth:`FaceStream.reader`)."""

    stream: FaceStream
    fallback: IndexedReader

    def read(self, indices: Iterable[int]) -> dict[int, np.ndarray]:
        """The frames at ``indices`` (any order, repeats allowed), as :meth:`IndexedReader.read`."""
        return {i: rgb for i, (rgb, _) in self.read_sources(indices).items()}

    def read_sources(self, indices: Iterable[int]) -> dict[int, tuple[np.ndarray, Any]]:
        """As :meth:`read`, each image with its decoded frame (:meth:`IndexedReader.read_sources`)."""
        return self.stream._read(indices, self.fallback)


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
    from lipsyncctl.faces.speaker import TrackCensus, active_speaker, select_speaker

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
            energy = frame_energy(audio_16k, MODEL_AUDIO_RATE, fps, len(per_frame))
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
    if several := TrackCensus.of(per_frame).several_warning(float(fps)):
        result.warnings.append(several)
    return select_speaker(per_frame, select="largest")


# --- The face-track cache: one file per shot, shared by its languages and reruns (sync_clip(face_cache=)) ---

#: bumped when what the face pass computes changes (an old cache file then no longer matches)
FACE_CACHE_VERSION = 2  # 2: anamorphic frames are searched as shown (faces.detect.shown)
_CACHE_FILES = {"meta", "present", "matrices", "weights"}
_SELECTIONS = ("largest", "id", "point", "speaker")


def face_cache_key(video: Path, first: int, count: int, fps: Fraction, options: FaceOptions, resolution: int,
                   audio_16k: np.ndarray | None = None, deinterlaced: bool = False) -> dict[str, Any]:
    """What a :class:`FacePlan` depends on: the source file (fingerprint: size, mtime, first and last MiB;
    :func:`lipsyncctl.runner.store.file_fingerprint`), the frames ``first .. first + count - 1`` on the grid
    ``fps``, the ``faces`` section and the crop ``resolution``, and whether the frames were deinterlaced (only
    then: the keys of before stay). Not the dub, except for ``select: speaker``, which listens to it: then the
    sha256 of ``audio_16k`` (mono 16 kHz float32) too."""
    import hashlib

    from lipsyncctl.faces.track import tracker_key
    from lipsyncctl.runner.store import file_fingerprint

    audio = None
    if options.select == "speaker" and audio_16k is not None:
        digest = hashlib.sha256()
        for at in range(0, len(audio_16k), 1 << 20):  # a block at a time: a film's sound may be mapped from disk
            digest.update(np.ascontiguousarray(audio_16k[at : at + (1 << 20)], dtype=np.float32).tobytes())
        audio = digest.hexdigest()
    return {"v": FACE_CACHE_VERSION, "media": file_fingerprint(Path(video)), "first": int(first),
            "frames": int(count), "fps": f"{fps.numerator}/{fps.denominator}",
            "faces": options.model_dump(mode="json"), "resolution": int(resolution), "audio": audio,
            **({"deinterlaced": True} if deinterlaced else {}),
            **tracker_key(options.detect_every)}


def save_face_plan(path: Path, plan: FacePlan, key: dict[str, Any]) -> bool:
    """Write ``plan`` and its ``key`` to ``path`` (``.npz``: plain arrays and a JSON string, no pickle),
    atomically: a temporary file beside it renamed into place, so a reader sees a whole file or none. Two
    writers of one key (two languages of a shot on two workers) write the same arrays; the last rename wins.

    Returns False (and writes nothing) when the file cannot be written or the matrices do not share one
    dtype; the cache is an optimisation, the render goes on without it."""
    import json
    import os

    from lipsyncctl.media.atomic import sweep_temps, temp_path

    mats = [m for m in plan.matrices if m is not None]
    dtype = mats[0].dtype if mats else np.dtype(np.float32)
    if any(m.dtype != dtype or m.shape != (2, 3) for m in mats):
        return False
    matrices = np.zeros((len(plan.matrices), 2, 3), dtype=dtype)
    for i, m in enumerate(plan.matrices):
        if m is not None:
            matrices[i] = m
    meta = {"key": key, "detector": plan.detector, "selection": plan.selection, "track_id": plan.track_id,
            "warnings": list(plan.warnings)}
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temps(path.parent, stem=path.stem)  # those of killed runs
        with open(tmp, "wb") as f:  # a file object: np.savez adds no second suffix
            np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)),
                     present=np.array([m is not None for m in plan.matrices], dtype=bool),
                     matrices=matrices, weights=np.asarray(plan.weights))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    except BaseException:  # Ctrl-C while writing: no temporary left behind
        tmp.unlink(missing_ok=True)
        raise
    return True


def load_face_plan(path: Path, key: dict[str, Any]) -> FacePlan | None:
    """The :class:`FacePlan` saved at ``path`` for exactly ``key``, or None: no file, a corrupt or truncated
    one, another key (the source changed, other frames or options), or arrays that do not fit the key.
    Read strictly (no pickle); a None means: track again and overwrite it."""
    import json
    import zipfile

    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if set(data.files) != _CACHE_FILES:
                return None
            meta = json.loads(str(data["meta"][()]))
            present, matrices, weights = data["present"], data["matrices"], data["weights"]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None
    n = key.get("frames")
    if (not isinstance(meta, dict) or meta.get("key") != json.loads(json.dumps(key))
            or present.dtype != np.bool_ or present.shape != (n,)
            or matrices.dtype.kind != "f" or matrices.shape != (n, 2, 3) or not np.isfinite(matrices).all()
            or weights.dtype != np.float32 or weights.shape != (n,) or not np.isfinite(weights).all()
            or not isinstance(meta.get("detector"), str) or meta.get("selection") not in _SELECTIONS
            or not (meta.get("track_id") is None or type(meta.get("track_id")) is int)
            or not isinstance(meta.get("warnings"), list)
            or not all(isinstance(w, str) for w in meta["warnings"])):
        return None
    mats: list[np.ndarray | None] = [matrices[i].copy() if present[i] else None for i in range(n)]
    return FacePlan(mats, weights.copy(), meta["detector"], selection=meta["selection"], track_id=meta["track_id"],
                    warnings=list(meta["warnings"]))


def cached_clip_faces(face_cache: Path | None, video: Path, reader: IndexedReader, first: int, count: int,
                      fps: Fraction, options: FaceOptions, resolution: int, *, device: str = "cpu",
                      audio_16k: np.ndarray | None = None, concurrent: bool = False,
                      info: Any = None, keep: int = 0) -> tuple[FacePlan | FaceStream, bool]:
    """:func:`track_clip_faces` through the cache file ``face_cache`` (None: no cache): the stored plan when
    it is for these frames (:func:`face_cache_key`), else tracked and stored. Returns ``(plan, reused)``.

    With ``concurrent`` (the sync's ``inference.pipelined``) and a selection that :func:`streams`, a pass that has
    to run is started as a :class:`FaceStream` (on its own reader of ``video`` on the grid ``fps``, probed as
    ``info``) and returned at once; it writes the cache file once it has every frame, and keeps up to ``keep``
    decoded frames for the render (:meth:`FaceStream.reader`)."""
    key = None
    if face_cache is not None:
        face_cache = Path(face_cache)
        key = face_cache_key(video, first, count, fps, options, resolution, audio_16k, reader.deinterlaced)
        plan = load_face_plan(face_cache, key)
        if plan is not None:
            progress.message(f"faces: reused {face_cache.name}")
            return plan, True
        if face_cache.exists():
            progress.message(f"faces: {face_cache} is unreadable or not for these frames; tracking again")
    cache = (face_cache, key) if face_cache is not None and key is not None else None
    if concurrent and streams(options):
        stream = FaceStream(video, info, first, count, fps, options, resolution, device=device, cache=cache, keep=keep,
                            deinterlaced=reader.deinterlaced)
        return stream.start(), False
    plan = track_clip_faces(reader, first, count, fps, options, resolution, device=device, audio_16k=audio_16k)
    if cache is not None:
        _store(cache[0], plan, cache[1])
    return plan, False


def _store(face_cache: Path, plan: FacePlan, key: dict[str, Any]) -> None:
    if not save_face_plan(face_cache, plan, key):
        progress.message(f"faces: could not write {face_cache} (the next render tracks again)")
