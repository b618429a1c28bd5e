"""The per-clip stages of the curation job (faces + alignment, sync, quality, features...), as plug-ins.

A clip is one span of a source that the per-source stages kept (:mod:`.decide`). Each clip stage is a
:class:`ClipStage`: ``run(ctx) -> dict`` measures (and may write files under ``DATA``), ``decide(data,
options)`` turns those measurements and the thresholds into a rejection (or None), ``settings(options)``
names the settings the measurements depend on (part of the content key), ``outputs(data)`` lists the files
that must still exist for a stored result to be reused, and ``summary(data)`` is what the manifest shows.
The job runs the registered stages in order for every kept clip, stores each result in the clip's record
(``DATA/.lipsyncctl/records/clips/<clip id>.json``) and skips a stage whose key is unchanged.

Stages register in :data:`CLIP_STAGES` (in order); ``--until`` offers the source stages and these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lipsyncctl.config import CurateOptions, ModelOptions
from lipsyncctl.curation.records import Decision

T = TypeVar("T")


class SourceFrames:
    """A source's frames on the curation grid, shared by the clip stages of its clips in span order.

    The job's clips of one source are consecutive spans, so one decoder continues from one clip into the next
    (:class:`~lipsyncctl.media.reader.IndexedReader` seeks only when a request jumps back or far ahead)
    instead of every clip seeking back to the key frame before its start and decoding up to a whole GOP again
    (x264's default is 10 s at 25 fps; the fixture has one key frame, so its second clip decoded the first
    one again). Opened at the first use; :meth:`close` at the end of the source.
    """

    def __init__(self, path: Path, fps: int, deinterlace: bool = False) -> None:
        self.path, self.fps, self.deinterlace = path, fps, deinterlace
        self._reader: Any = None

    @property
    def video(self) -> Any:
        """The source's :class:`~lipsyncctl.media.probe.VideoInfo` (its pixel aspect: ``sample_aspect``)."""
        return self._open().video

    def range(self, first: int, stop: int) -> Any:
        """``(index, RGB)`` for grid frames ``first .. stop - 1`` (:meth:`IndexedReader.range`)."""
        return self._open().range(first, stop)

    def _open(self) -> Any:
        if self._reader is None:
            from fractions import Fraction

            from lipsyncctl.media.reader import IndexedReader

            self._reader = IndexedReader(self.path, Fraction(self.fps), deinterlace=self.deinterlace)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def worker_network(cache: dict[str, Any], device: str | None, name: str, files: Sequence[Path],
                   load: Callable[[str], T]) -> T:
    """The worker's ``name`` network, built by ``load(device)`` once per worker, device and version of
    ``files`` (their fingerprints: a file replaced on disk is loaded again) and kept in ``cache``."""
    from lipsyncctl.runner.store import file_fingerprint

    device = device or "cpu"
    key = json.dumps([name, device, [(str(f), file_fingerprint(Path(f))) for f in files]])
    if key not in cache:
        cache[key] = load(device)
    return cache[key]


@dataclass(frozen=True)
class ClipContext:
    """What a clip stage gets: the span on the source's 25 fps grid, the source's 16 kHz mono audio (sample
    ``first * 640`` is frame ``first``), earlier stages' results of this clip, and the worker's cache (a
    dict that lives as long as the worker: load networks once) and device."""

    clip_id: str
    source_id: str
    source: Path
    first: int
    stop: int
    audio: Path
    data: Path
    options: CurateOptions
    previous: Mapping[str, dict[str, Any]]
    cache: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    models: Mapping[str, Path] = field(default_factory=dict)  # this stage's ClipStage.models, resolved
    #: the source's frames shared by its clips (the job's); None: a stage reading them opens its own reader
    source_frames: SourceFrames | None = None

    @property
    def frames(self) -> int:
        return self.stop - self.first

    def network(self, name: str, files: Sequence[Path], load: Callable[[str], T]) -> T:
        """The worker's ``name`` network (:func:`worker_network`)."""
        return worker_network(self.cache, self.device, name, files, load)

    def output(self, stage: str, suffix: str) -> Path:
        """Where this clip's file of ``stage`` goes: ``DATA/<stage>/<source id>/<clip id><suffix>``."""
        return self.data / stage / self.source_id / f"{self.clip_id}{suffix}"


@dataclass(frozen=True)
class ClipStage:
    name: str
    version: int
    run: Callable[[ClipContext], dict[str, Any]]
    decide: Callable[[Mapping[str, Any], CurateOptions], Decision | None]
    settings: Callable[[CurateOptions], dict[str, Any]] = lambda options: {}
    outputs: Callable[[Mapping[str, Any]], list[str]] = lambda data: []
    summary: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda data: {}
    #: the network files the stage needs (role -> path) from the run's ``model:`` section; the job resolves
    #: them before any work (a missing one stops the run: MissingModelError, exit 4), puts their
    #: fingerprints in the stage's key and hands them over as ``ClipContext.models``
    models: Callable[[ModelOptions], dict[str, Path]] = lambda model: {}
    #: the user switched the stage off (e.g. ``curate.skip_quality``): its models are not resolved (no exit
    #: 4 for them); ``run`` still runs and records that it skipped
    skipped: Callable[[CurateOptions], bool] = lambda options: False


def _registered() -> tuple[ClipStage, ...]:
    """The clip stages built so far, in order (each module imports its heavy parts inside ``run``)."""
    from lipsyncctl.curation import align, features, quality, sync

    return (
        ClipStage(align.NAME, align.VERSION, align.run, align.decide, align.settings, align.outputs, align.summary),
        ClipStage(sync.NAME, sync.VERSION, sync.run, sync.decide, sync.settings, sync.outputs, sync.summary,
                  sync.models, sync.skipped),  # official order: affine_transform, sync_av, visual quality
        ClipStage(quality.NAME, quality.VERSION, quality.run, quality.decide, quality.settings, quality.outputs,
                  quality.summary, quality.models, quality.skipped),  # after align (and sync)
        ClipStage(features.NAME, features.VERSION, features.run, features.decide, features.settings,
                  features.outputs, features.summary, features.models),  # last: training reads these
    )


CLIP_STAGES: tuple[ClipStage, ...] = _registered()


def clip_stage(name: str) -> ClipStage:
    for stage in CLIP_STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)


def outputs_exist(stage: ClipStage, data: Mapping[str, Any]) -> bool:
    return all(Path(p).is_file() for p in stage.outputs(data))
