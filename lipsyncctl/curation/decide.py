"""Decisions derived from stored measurements and the thresholds of ``config.curate``.

Nothing here runs a model or reads media: a changed threshold re-decides every source and clip from
their records. Rejection reasons are stable words (``unreadable``, ``no-video``, ``no-audio``,
``too-short``, ``too-short-for-sync``) that the report counts and a script can match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lipsyncctl.config import CurateOptions
from lipsyncctl.curation.records import ClipRecord, Decision, SourceRecord, Stage, StageResult

if TYPE_CHECKING:
    from lipsyncctl.curation.clipstages import ClipStage


def clip_id(source: str, first: int, stop: int) -> str:
    """A span's id: ``<source id>_<first>-<stop>`` (frames, zero-padded), its records' and files' name."""
    return f"{source}_{first:06d}-{stop:06d}"


@dataclass(frozen=True, slots=True)
class ClipSpan:
    """One span of a source on the 25 fps grid and its decision so far."""

    source: str
    first: int
    stop: int
    decision: Decision
    summary: dict[str, Any] = field(default_factory=dict)   # what the clip stages show in the manifest

    @property
    def id(self) -> str:
        return clip_id(self.source, self.first, self.stop)

    @property
    def frames(self) -> int:
        return self.stop - self.first

    def to_dict(self, fps: int) -> dict[str, Any]:
        """Its manifest line (:data:`PLACE` and the clip stages' ``summary``; the views add its ``split``)."""
        return {"id": self.id, "source": self.source, "first": self.first, "stop": self.stop,
                "frames": self.frames, "start_seconds": self.first / fps, "end_seconds": self.stop / fps,
                "decision": self.decision.to_dict(), **self.summary}

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> ClipSpan:
        """The span a manifest line (:meth:`to_dict`) was written from."""
        return cls(line["source"], line["first"], line["stop"], Decision.from_dict(line["decision"]),
                   {k: v for k, v in line.items() if k not in PLACE})


#: the fingerprint of a source whose file was not there when the run reached it
MISSING = "missing"

#: a manifest line's fields that are the span's place and decision, not a clip stage's output
PLACE = frozenset({"id", "source", "first", "stop", "frames", "start_seconds", "end_seconds", "decision", "split"})


def decide_source(record: SourceRecord, options: CurateOptions) -> Decision:
    """The source's own decision (its clips are decided by :func:`decide_clips`). A file gone when its turn came (a
    network mount's hiccup, moved by a colleague: the run had listed it) failed, to be retried, and is no property of
    the media to reject it for."""
    if record.fingerprint == MISSING:
        return Decision.failed(Stage.PROBE, f"{record.path}: the file was gone when its turn came (listed at the start)")
    for stage in (Stage.PROBE, Stage.NORMALIZE, Stage.SHOTS, Stage.SEGMENTS):
        res = record.result(stage)
        if res is None:
            return Decision.kept()  # not measured yet (``--until``): nothing against it so far
        if res.error is not None:
            if stage is Stage.PROBE:
                return Decision.rejected(stage, "unreadable", res.error)
            return Decision.failed(stage, res.error)
        if stage is Stage.PROBE:
            if res.data.get("problem"):
                return Decision.rejected(stage, res.data["problem"], res.data.get("value"))
            if res.data["duration"] < options.min_seconds:
                return Decision.rejected(stage, "too-short", round(res.data["duration"], 3))
        if stage is Stage.SHOTS and res.data.get("problem"):
            return Decision.rejected(stage, res.data["problem"], res.data.get("value"))
        if stage is Stage.NORMALIZE and res.data["audio_frames"] < round(options.min_seconds * options.fps):
            return Decision.rejected(stage, "too-short", round(res.data["audio_samples"] / options.audio_rate, 3))
    return Decision.kept()


def source_stages_left(record: SourceRecord) -> list[str]:
    """The source stages its record does not hold yet (an interrupted run's, or one with ``--until``): a kept source
    with some left has no spans yet to give."""
    return [str(stage) for stage in (Stage.PROBE, Stage.NORMALIZE, Stage.SHOTS, Stage.SEGMENTS)
            if record.result(stage) is None]


def decide_clips(record: SourceRecord, options: CurateOptions,
                 clips: Mapping[str, ClipRecord] | None = None) -> list[ClipSpan]:
    """Every span of a kept source: pieces of shots shorter than ``min_seconds`` rejected at ``shots``
    (``too-short``), pieces too short to be sync-scored rejected at ``segments`` up front
    (``too-short-for-sync``), the others decided by the clip stages measured on them (``clips``: clip
    records by id; a stage not measured yet leaves the clip kept so far)."""
    res = record.result(Stage.SEGMENTS)
    if res is None or res.error is not None or decide_source(record, options).verdict != "kept":
        return []
    shortest = round(options.min_seconds * options.fps)
    out = []
    for a, b, shot_first, shot_stop in res.data["pieces"]:
        if shot_stop - shot_first < shortest:
            decision = Decision.rejected(Stage.SHOTS, "too-short", round((shot_stop - shot_first) / options.fps, 3))
        elif b - a < options.min_sync_frames:
            decision = Decision.rejected(Stage.SEGMENTS, "too-short-for-sync", b - a)
        else:
            decision = Decision.kept()
        span = ClipSpan(record.id, a, b, decision)
        if decision.verdict == "kept":
            span = _decide_clip_stages(span, (clips or {}).get(span.id) or ClipRecord(span.id, record.id, a, b),
                                       options)
        out.append(span)
    return sorted(out, key=lambda c: c.first)


def decide_clip(rec: ClipRecord, options: CurateOptions) -> tuple[Decision, dict[str, Any]]:
    """A kept span's decision from its clip stages, in order, and the manifest fields they show (with
    ``pending``: the stages not measured yet, when it is kept so far)."""
    from lipsyncctl.curation.clipstages import CLIP_STAGES

    summary: dict[str, Any] = {}
    for i, stage in enumerate(CLIP_STAGES):
        res = rec.stages.get(stage.name)
        if res is None:
            # kept so far: the stages from here on have not measured it (a run with --until, or a threshold
            # loosened after they were skipped for a rejection): the manifest says which
            summary["pending"] = [s.name for s in CLIP_STAGES[i:]]
            break
        ended = stage_end(stage, res, options)
        if ended is not None and ended.verdict == "failed":
            return ended, summary
        summary.update(stage.summary(res.data))
        if ended is not None:
            return ended, summary
    return Decision.kept(), summary


def stage_end(stage: ClipStage, res: StageResult, options: CurateOptions) -> Decision | None:
    """The decision that ends a span's clip stages at ``stage``, from its result alone: its failure or its
    rejection; None: kept so far (the later stages go on)."""
    if res.error is not None:
        return Decision.failed(stage.name, res.error)
    return stage.decide(res.data, options)


def _decide_clip_stages(span: ClipSpan, rec: ClipRecord, options: CurateOptions) -> ClipSpan:
    decision, summary = decide_clip(rec, options)
    return ClipSpan(span.source, span.first, span.stop, decision, summary)
