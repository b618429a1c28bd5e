"""The shots and align stages of a source in one decode (issue 10: one decode per source for stages 3-5).

Run separately, the shots stage decodes the whole source for PySceneDetect and ``align`` decodes it again,
because a clip's span is known only once its shot is: the segments are greedy pieces of ``seg`` frames from
the shot's start with the remainder merged into the last piece (:func:`~lipsyncctl.curation.spans.
exact_segments`), and the official alignment is not a function of the frame alone: a **fresh**
:class:`~lipsyncctl.faces.align.FaceAligner` per clip carries its bias smoothing from frame to frame.

Here every decoded frame goes once through the shot detector (:class:`~lipsyncctl.curation.stages.ShotCuts`,
which reports a cut ``lag`` = 2 frames late, so frames are assigned to their shot 2 frames behind the
decoder) and the face detector, and is aligned for the clip(s) it may belong to:

- from a shot's start, the current clip is certain;
- at every ``seg`` frames after the shot's start, a next clip *may* start: it does if the shot lasts ``seg``
  more frames (the piece is full), else those frames are the merged remainder of the current clip. Until
  that is known (at most ``seg`` frames) both are followed: each has its own aligner, and the frames are
  kept as aligned faces (``res x res``, not full frames). The two aligners' smoothing states become equal
  within a few frames (the bias is 0.2 x previous + 0.8 x new), from then on one warp serves both;
- a clip whose span is certain is encoded as it goes; the decision between the two is applied when known
  (the other's faces dropped).

So the clips, their matrices and their measurements are those of the separate stages bit for bit (tested:
the same manifest, aligned files and matrices), for ``detect_every`` 1 (the official detection on every frame:
a frame's faces do not depend on the clip, while a tracker's between detections would) and exact segments.
Memory: the decoder's few frames, at most ``seg`` aligned faces per open clip, two numbers per frame of the
open clips.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.config import CurateOptions

#: ``finished(first, stop, data)``: the align stage's result for the span (files written when kept)
Finished = Callable[[int, int, dict[str, Any]], None]


class Inconsistent(RuntimeError):
    """The pass saw something its bookkeeping rules out (a cut reported for a frame already assigned, a clip
    short of frames): the caller falls back to the two passes."""


def applies(options: CurateOptions) -> bool:
    """Whether shots and align can share one decode for these settings (module doc)."""
    return options.one_pass and options.detect_every == 1 and options.segments == "exact"


@dataclass
class _Clip:
    """A clip being aligned: certain (its start is known to start a clip) or a candidate."""

    token: int
    first: int
    aligner: Any
    certain: bool
    matrices: list[np.ndarray] = field(default_factory=list)       # of the frames sent to its writer
    pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (face, matrix) kept back
    dead: bool = False  # a frame without a face: nothing more is aligned for it


class _Assign:
    """The main stage: frames (with their faces and the cuts reported so far) to clips; returns the writer's
    operations: ``("write", token, face)``, ``("drop", token)``, ``("done", token, first, stop, matrices, data)``."""

    def __init__(self, options: CurateOptions, frames: int, lag: int, detector: str,
                 wanted: Callable[[int, int, int], bool], pixel_aspect: float = 1.0) -> None:
        self.options, self.frames, self.lag, self.detector, self.wanted = options, frames, lag, detector, wanted
        self.pixel_aspect = pixel_aspect  # the source's (anamorphic: faces are aligned and measured as shown)
        self.seg = round(options.segment_seconds * options.fps)
        self.cuts: set[int] = set()
        #: per frame of the open clips: faces found, the chosen one's shorter side (align.count_frame's inputs)
        self.stats: dict[int, tuple[int, float | None]] = {}
        self.buffer: deque[tuple[int, np.ndarray, list[Any]]] = deque()
        self.shot_start = 0
        self.cur: _Clip | None = None
        self.nxt: _Clip | None = None
        self.tokens = 0
        self.done = -1  # the last frame assigned

    def __call__(self, item: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        ops: list[tuple[Any, ...]] = []
        if item[0] == "end":
            self._cuts(item[1])
            while self.buffer:
                self._assign(*self.buffer.popleft(), ops)
            self._end_shot(self.frames, ops)
            return ops
        index, rgb, faces, cuts = item
        self._cuts(cuts)
        self.buffer.append((index, rgb, faces))
        while self.buffer and self.buffer[0][0] <= index - self.lag:
            self._assign(*self.buffer.popleft(), ops)
        return ops

    def _cuts(self, cuts: list[int]) -> None:
        for c in cuts:
            if c <= self.done:
                raise Inconsistent(f"a cut at frame {c} was reported after that frame was assigned")
            self.cuts.add(c)

    def _new(self, first: int, certain: bool) -> _Clip:
        from lipsyncctl.faces.align import FaceAligner

        self.tokens += 1
        return _Clip(self.tokens, first, FaceAligner(resolution=self.options.resolution, smooth=True,
                                                     pixel_aspect=self.pixel_aspect), certain)

    def _assign(self, g: int, rgb: np.ndarray, faces: list[Any], ops: list[tuple[Any, ...]]) -> None:
        from lipsyncctl.curation.align import face_side, largest_face

        self.done = g
        if g in self.cuts and 0 < g < self.frames:
            self._end_shot(g, ops)
            self.shot_start = g
        if self.cur is None:
            self.cur = self._new(g, certain=True)
        offset = g - self.shot_start
        if offset > 0 and offset % self.seg == 0:
            self.nxt = self._new(g, certain=False)  # the previous candidate was decided a frame ago
        face = largest_face(faces)
        self.stats[g] = (len(faces), face_side(face, self.pixel_aspect))
        last: tuple[np.ndarray, np.ndarray] | None = None  # (matrix, face) of this frame: one warp for equal matrices
        for clip in (self.cur, self.nxt):
            if clip is None or clip.dead:
                continue
            if face is None:
                clip.dead = True
                continue
            matrix = clip.aligner.matrix(face.points3)
            if last is None or not np.array_equal(last[0], matrix):
                last = (matrix, clip.aligner.face(rgb, matrix))
            if clip.certain and not (clip is self.cur and self.nxt is not None):
                ops.append(("write", clip.token, last[1]))
                clip.matrices.append(matrix)
            else:
                clip.pending.append((last[1], matrix))
        if self.nxt is not None and g - self.nxt.first + 1 == self.seg:  # the next piece is full: a clip
            self._close(self.cur, self.nxt.first, ops)  # its frames past the boundary are dropped
            self.cur, self.nxt = self.nxt, None
            self.cur.certain = True
            self._flush(self.cur, ops)

    def _flush(self, clip: _Clip, ops: list[tuple[Any, ...]]) -> None:
        for face, matrix in clip.pending:
            ops.append(("write", clip.token, face))
            clip.matrices.append(matrix)
        clip.pending = []

    def _end_shot(self, stop: int, ops: list[tuple[Any, ...]]) -> None:
        if self.cur is None:
            return
        if self.nxt is not None:  # the last piece was short: merged into the current clip
            self._flush(self.cur, ops)
            ops.append(("drop", self.nxt.token))
            self.nxt = None
        self._close(self.cur, stop, ops)
        self.cur = None

    def _close(self, clip: _Clip, stop: int, ops: list[tuple[Any, ...]]) -> None:
        from lipsyncctl.curation.align import count_frame, new_data

        data = new_data(stop - clip.first, self.options, self.detector)
        for g in range(clip.first, stop):  # as align.run counts them, frame by frame
            if not count_frame(data, *self.stats[g]):
                break
        for g in range(min(self.stats, default=stop), stop):  # no open clip starts before ``stop`` now
            del self.stats[g]
        # the shot lasts at least to ``stop`` (a seg more when the next clip is certain)
        shot_frames = stop - self.shot_start + (self.seg if self.nxt is not None and self.nxt.first == stop else 0)
        if not self.wanted(clip.first, stop, shot_frames):
            ops.append(("drop", clip.token))
            return
        if data["no_face_frame"] is None and len(clip.matrices) != stop - clip.first:
            raise Inconsistent(f"clip {clip.first}-{stop}: {len(clip.matrices)} aligned frames")
        ops.append(("done", clip.token, clip.first, stop, clip.matrices, data))


class _Writers:
    """The last stage: one encoder per clip, each in a hidden temporary folder beside the clips until done."""

    def __init__(self, data: Path, source_id: str, source: Path, audio: Path, options: CurateOptions,
                 finished: Finished) -> None:
        self.data, self.folder = data, data / "aligned" / source_id
        self.source_id, self.source, self.audio = source_id, source, audio
        self.options, self.finished = options, finished
        self.open: dict[int, tuple[tempfile.TemporaryDirectory[str], Any, Path]] = {}

    def __call__(self, ops: list[tuple[Any, ...]]) -> None:
        from lipsyncctl.curation.align import aligned_paths, aligned_suffix, clip_writer, finish_clip
        from lipsyncctl.curation.decide import clip_id
        from lipsyncctl.media.atomic import temp_prefix

        for op in ops:
            kind, token = op[0], op[1]
            if kind == "write":
                if token not in self.open:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    tmp = tempfile.TemporaryDirectory(
                        dir=self.folder, prefix=temp_prefix(self.folder / f"{self.source_id}_{token}", "align"))
                    video = Path(tmp.name) / f"video{aligned_suffix(self.options)}"
                    self.open[token] = (tmp, clip_writer(video, self.options), video)
                self.open[token][1].write(op[2])
            elif kind == "drop":
                self._discard(token)
            else:
                _, _, first, stop, matrices, data = op
                if data["no_face_frame"] is not None:  # rejected: no aligned clip (official: skipped)
                    self._discard(token)
                    self.finished(first, stop, data)
                    continue
                tmp, writer, video = self.open.pop(token)
                try:
                    writer.close()
                    out, matrices_path = aligned_paths(self.data, self.source_id, clip_id(self.source_id, first, stop),
                                                       self.options)
                    files = finish_clip(video, out, matrices_path, matrices, self.audio, first, stop,
                                        self.options, self.source)
                finally:
                    tmp.cleanup()
                self.finished(first, stop, {**data, **files})

    def _discard(self, token: int) -> None:
        if token in self.open:
            tmp, writer, _ = self.open.pop(token)
            writer.abort()
            tmp.cleanup()

    def close(self) -> None:
        """Every clip still open is dropped (after an error or an interrupt)."""
        for token in list(self.open):
            self._discard(token)


def shots_and_align(path: Path, frames: int, options: CurateOptions, *, source_id: str, data: Path, audio: Path,
                    detector: Any, wanted: Callable[[int, int, int], bool], finished: Finished) -> dict[str, Any]:
    """Shots (the result :func:`~lipsyncctl.curation.stages.detect_shots` returns, its decode check included)
    and the align stage of every span ``wanted(first, stop, shot_frames)`` accepts (``shot_frames``: the
    length of its shot, or as much of it as is known), handed to ``finished`` as each span is known, in one
    decode of ``path`` (module doc). A span not wanted is not recorded: the clip stages compute it later.

    Decode | faces and shot cuts | assignment and alignment | encode run concurrently, one item queued between
    two of them."""
    from lipsyncctl.curation import stages
    from lipsyncctl.errors import DecodeError
    from lipsyncctl.faces.detect import shown
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.runner.pipelined import run_stages

    with IndexedReader(path, Fraction(options.fps), deinterlace=options.deinterlace == "auto") as reader, \
            progress.Task(f"shots + align ({detector.name})", total=frames) as task:
        shots = stages.ShotCuts(reader.size, options)
        aspect = float(reader.video.sample_aspect)  # anamorphic: faces found, aligned and measured as shown
        finder = shown(detector, aspect)
        assign = _Assign(options, frames, shots.lag, detector.name, wanted, aspect)
        writers = _Writers(data, source_id, path, audio, options, finished)

        def decoded() -> Iterator[tuple[Any, ...]]:  # the producer thread
            yield from reader.range(0, frames)
            yield ("end",)

        def detected(item: tuple[Any, ...]) -> tuple[Any, ...]:  # faces and cuts (their own thread)
            if item[0] == "end":
                return ("end", shots.finish(frames))
            index, rgb = item
            found = shots.feed(index, rgb)
            task.advance()
            return index, rgb, finder.detect(rgb), found

        try:
            # torch's own threads would only fight the stages for the cores (see align.run)
            run_stages(decoded(), [detected, assign, writers], main=2, name="shots-align", torch_threads=1)
        except DecodeError as exc:
            return stages.unreadable(exc, reader, options)
        finally:
            with contextlib.suppress(Exception):
                writers.close()
        if (problem := stages.short_stream(reader, frames)) is not None:
            return problem
    return stages.shots_data(sorted(assign.cuts), frames)
