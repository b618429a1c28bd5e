"""The training clips: one clip (:class:`TrainClip`) and the clips of a split held as columns (:class:`ClipTable`).

A dataset of VoxCeleb2's size has about a million clips. Held as a tuple of Python objects (about 1.3 KB
each), they would cost every data-loader worker its own copy: a forked worker shares its parent's pages only
until it touches them, and reading a Python object writes its reference count, so an epoch of random samples
copies the whole list page by page into each worker. :class:`ClipTable` holds the same facts in a handful of
numpy arrays (the ids and paths as UTF-8 bytes in one buffer with offsets, the counts as integers: about 250
bytes per clip), whose pages a worker reads without writing, so they stay shared; a spawned worker gets them in
one pickle of a few arrays. ``table[i]`` makes the :class:`TrainClip` of row ``i`` when it is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import overload

import numpy as np

from lipsyncctl.audio import MODEL_FPS
from lipsyncctl.audio.wav2lip_mel import window_start


def mel_columns(num_frames: int) -> int:
    """Mel columns of a ``num_frames`` window: ``ceil(3.2 F)`` (official 52 for 16 frames, 16 for 5)."""
    return -(-16 * num_frames // 5)


def _centre(frame: int, fps: int) -> int:
    """The whisper feature at the time of ``frame`` (:func:`lipsyncctl.audio.features.chunk_indices`)."""
    return int(frame * Fraction(50, fps) + Fraction(1, 2))


@dataclass(frozen=True)
class TrainClip:
    """One aligned 25 fps face clip and its audio features. ``whisper_len``: ``L`` of the whisper features
    (50/s), ``mel_len``: columns ``T`` of the mel (80/s)."""

    id: str
    video: Path
    features: Path
    frames: int
    whisper_len: int
    mel_len: int
    fps: int = MODEL_FPS
    #: the aligned frames' side in px (the manifest's ``resolution``; None in a manifest written before it was)
    size: int | None = None

    def last_start(self, num_frames: int) -> int:
        """The last audio-valid window start (:mod:`lipsyncctl.training.data`), -1 when there is none."""
        return last_start(self.frames, self.whisper_len, self.mel_len, self.fps, num_frames)


def last_start(frames: int, whisper_len: int, mel_len: int, fps: int, num_frames: int) -> int:
    """The last audio-valid start of a ``num_frames`` window in a clip of these counts, -1 when there is none."""
    columns = mel_columns(num_frames)
    s = frames - num_frames
    while s >= 0 and (_centre(s + num_frames - 1, fps) > whisper_len - 1 or window_start(s, fps) + columns > mel_len):
        s -= 1
    return s


#: the strings' encoding: UTF-8, with lone surrogates kept (a path the OS gave as undecodable bytes, ids made of it)
_ERRORS = "surrogatepass"


class _Strings:
    """Strings as one UTF-8 buffer and the offsets of each (``uint8`` and ``int64`` arrays)."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray) -> None:
        self.buffer, self.offsets = buffer, offsets

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8", _ERRORS)

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes + self.offsets.nbytes)


#: a size the manifest does not say (a clip curated before it did)
_NO_SIZE = -1


class ClipTableBuilder:
    """Rows appended one at a time into growing buffers (no Python object kept per clip), then :meth:`build`."""

    def __init__(self) -> None:
        self._numbers = array("q")
        self._text = [bytearray(), bytearray(), bytearray()]  # ids, videos, features
        self._ends: list[array[int]] = [array("q"), array("q"), array("q")]

    def append(self, clip: TrainClip) -> None:
        self._numbers.extend((clip.frames, clip.whisper_len, clip.mel_len, clip.fps,
                              _NO_SIZE if clip.size is None else clip.size))
        for text, ends, value in zip(self._text, self._ends, (clip.id, str(clip.video), str(clip.features)),
                                     strict=True):
            text += value.encode("utf-8", _ERRORS)
            ends.append(len(text))

    def build(self) -> ClipTable:
        """The table of the rows appended, in their order (the builder is emptied). The columns are the builder's
        buffers, not copies (a copy made the peak twice the table)."""
        numbers = np.frombuffer(self._numbers, dtype=np.int64).reshape(-1, 5)
        strings = [_Strings(np.frombuffer(text, dtype=np.uint8),
                            np.concatenate([[0], np.frombuffer(ends, dtype=np.int64)]).astype(np.int64))
                   for text, ends in zip(self._text, self._ends, strict=True)]
        self.__init__()  # type: ignore[misc]  # the buffers go now, not with the builder
        return ClipTable._from_columns(numbers, *strings)


class ClipTable(Sequence[TrainClip]):
    """The clips of a split as columns, in the order given (:func:`~lipsyncctl.training.data.read_clips`: by id).
    A read-only :class:`~collections.abc.Sequence` of :class:`TrainClip`; equal to another table of the same clips.
    ``counts`` and ``sizes`` are columns a whole-split check reads without making a clip per row."""

    def __init__(self, clips: Iterable[TrainClip] = ()) -> None:
        builder = ClipTableBuilder()
        for clip in clips:
            builder.append(clip)
        built = builder.build()
        self._numbers, self._ids, self._videos, self._features = \
            built._numbers, built._ids, built._videos, built._features

    @classmethod
    def of(cls, clips: Iterable[TrainClip]) -> ClipTable:
        """``clips`` as a table: itself when it is one."""
        return clips if isinstance(clips, ClipTable) else cls(clips)

    @classmethod
    def _from_columns(cls, numbers: np.ndarray, ids: _Strings, videos: _Strings, features: _Strings) -> ClipTable:
        table = cls.__new__(cls)
        table._numbers, table._ids, table._videos, table._features = numbers, ids, videos, features
        return table

    def sorted_by_id(self) -> ClipTable:
        """This table with its rows in the order of their ids (itself when they are)."""
        if self.by_id():
            return self
        builder = ClipTableBuilder()
        for i in sorted(range(len(self)), key=self._ids.__getitem__):
            builder.append(self[i])
        return builder.build()

    def __len__(self) -> int:
        return len(self._numbers)

    @overload
    def __getitem__(self, i: int) -> TrainClip: ...

    @overload
    def __getitem__(self, i: slice) -> ClipTable: ...

    def __getitem__(self, i: int | slice) -> TrainClip | ClipTable:
        if isinstance(i, slice):
            return ClipTable(self[k] for k in range(*i.indices(len(self))))  # (a copy: rare)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip {i} of {n}")
        i = int(i) % n
        frames, whisper_len, mel_len, fps, size = (int(v) for v in self._numbers[i])
        return TrainClip(self._ids[i], Path(self._videos[i]), Path(self._features[i]), frames, whisper_len, mel_len,
                         fps=fps, size=None if size == _NO_SIZE else size)

    def __iter__(self) -> Iterator[TrainClip]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClipTable):
            return all(np.array_equal(a, b) for a, b in zip(self._columns(), other._columns(), strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ClipTable({len(self)} clips, {self.nbytes} bytes)"

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self._numbers, *(a for s in (self._ids, self._videos, self._features) for a in (s.buffer, s.offsets)))

    @property
    def counts(self) -> np.ndarray:
        """``(frames, whisper_len, mel_len, fps, size)`` of each clip (``int64 (N, 5)``, read-only view; size -1: not
        said)."""
        view = self._numbers.view()
        view.flags.writeable = False
        return view

    @property
    def sizes(self) -> list[int | None]:
        """The distinct sizes the manifest gives (None: a clip without one), sorted with None last."""
        values = {int(v) for v in np.unique(self._numbers[:, 4])}
        return sorted(v for v in values if v != _NO_SIZE) + ([None] if _NO_SIZE in values else [])

    def by_id(self) -> bool:
        """Whether the rows are in the order of their ids, each id once (as :func:`read_clips` makes them)."""
        return all(self._ids[i - 1] < self._ids[i] for i in range(1, len(self)))

    def content_hash(self) -> str:
        """sha256 (16 hex digits) of what each clip is made of beyond its id and length: its features file's name
        (curate names it by the sound's content) and its aligned video's size now (a re-alignment writes other
        bytes), in row order. A copy of DATA hashes the same; the same ids over re-curated footage do not. One stat
        a clip, no clip object made."""
        h = hashlib.sha256()
        for i in range(len(self)):
            try:
                size = os.stat(self._videos[i]).st_size
            except OSError:
                size = -1
            h.update(json.dumps([self._ids[i], int(self._numbers[i, 0]), Path(self._features[i]).name, size]).encode()
                     + b"\n")
        return h.hexdigest()[:16]

    @property
    def nbytes(self) -> int:
        """The bytes the table holds (its arrays)."""
        return int(self._numbers.nbytes + self._ids.nbytes + self._videos.nbytes + self._features.nbytes)

    def ids_frames_hash(self) -> str:
        """sha256 (16 hex digits) of the clips' ids and frame counts, sorted, as JSON (``[["id", frames], ...]``):
        what a sample stream draws from (a resume checks it). Streamed: no list of the pairs is made."""
        order: Iterable[int] = range(len(self)) if self.by_id() else \
            sorted(range(len(self)), key=lambda i: (self._ids[i], int(self._numbers[i, 0])))
        h = hashlib.sha256(b"[")
        for k, i in enumerate(order):
            h.update((", " if k else "").encode() + json.dumps([self._ids[i], int(self._numbers[i, 0])]).encode())
        h.update(b"]")
        return h.hexdigest()[:16]
