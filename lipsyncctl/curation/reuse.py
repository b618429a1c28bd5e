"""Which stored results of a curation stand: the stages' content keys (the file's fingerprint, chained through each
stage's settings and the facts of the record it depends on) and the rules that reuse a stored result, stop a source's
stages or run a stage again. A run (:func:`lipsyncctl.curation.job.execute_source`) and a dry run walk the stages with
these, so the plan and the run decide alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.config import CurateOptions
from lipsyncctl.curation.clipstages import ClipStage, outputs_exist
from lipsyncctl.curation.records import SourceRecord, Stage, StageResult, stage_key

if TYPE_CHECKING:
    from lipsyncctl.curation.decide import ClipSpan
    from lipsyncctl.curation.job import CurateTask

#: bump when a stage computes something different from the same inputs
STAGE_VERSION = {Stage.PROBE: 1, Stage.NORMALIZE: 1, Stage.SHOTS: 1, Stage.SEGMENTS: 1}


def clip_walk(span: ClipSpan, stages: tuple[ClipStage, ...], key: str, forced: bool,
               task: CurateTask) -> Iterator[tuple[int, ClipStage, str, bool]]:
    """Each clip stage of ``span`` with its key and whether ``--force`` reaches it, chained as a run chains them
    (on the segments' ``key``); a run and a dry run walk the clip stages through this."""
    key = span_key(key, span.first, span.stop)
    for i, stage in enumerate(stages):
        key = clip_stage_key(key, stage, task)
        forced = forced or stage.name in task.force
        yield i, stage, key, forced


def source_key_after(key: str, stage: Stage, rec: SourceRecord, options: CurateOptions) -> str:
    """``stage``'s key after the previous stage's ``key``, with the facts of ``rec`` it depends on."""
    return source_stage_key(key, stage, options, picture_origin(rec) if stage is Stage.NORMALIZE else 0.0,
                             deinterlaced=stage is Stage.SHOTS and sees_deinterlaced(rec, options))


def source_stage_key(key: str, stage: Stage, options: CurateOptions, origin: float = 0.0,
                      deinterlaced: bool = False) -> str:
    """A source stage's content key: the previous stage's (or the file's fingerprint), the stage, its settings
    (normalize: and the picture's start time when it is not 0, the time of the audio's first sample; shots:
    and whether the pictures are deinterlaced, only when they are, so a progressive source's keys stay)."""
    settings = stage_settings(stage, options) | ({"origin": origin} if origin else {}) | (
        {"deinterlaced": True} if deinterlaced else {})
    return stage_key(key, str(stage), STAGE_VERSION[stage], settings)


def sees_deinterlaced(rec: SourceRecord, options: CurateOptions) -> bool:
    """The stages from shots on see deinterlaced pictures: the probe found the source interlaced and
    ``curate.deinterlace`` is auto (the readers decide the same from the file: IndexedReader's ``deinterlace``)."""
    from lipsyncctl.media.probe import is_interlaced

    probe = rec.result(Stage.PROBE)
    fields = probe.data.get("field_order") if probe is not None and probe.error is None else None
    return options.deinterlace == "auto" and is_interlaced(fields)


def picture_origin(rec: SourceRecord) -> float:
    """Seconds on the source's timeline where its picture starts: grid frame 0, and audio sample 0."""
    probe = rec.result(Stage.PROBE)
    return float(probe.data.get("start_time") or 0.0) if probe is not None and probe.error is None else 0.0


def span_key(segments_key: str, first: int, stop: int) -> str:
    """A span's key, on which its clip stages' keys chain."""
    return stage_key(segments_key, first, stop)


def clip_stage_stale(old: StageResult | None, key: str, forced: bool, stage: ClipStage) -> bool:
    """A clip stage must run: no stored result, another key, ``--force``, a stored error (a failure is
    retried: a full disk, a missing detector or a GPU error may be gone), or its files are gone."""
    return old is None or old.key != key or forced or old.error is not None or not outputs_exist(stage, old.data)


def clip_stage_key(key: str, stage: ClipStage, task: CurateTask) -> str:
    """A clip stage's content key: the span's key (or the previous stage's), the stage, its settings and the
    fingerprints of its network files."""
    from lipsyncctl.runner.store import file_fingerprint

    files = {role: Path(p) for role, p in task.models.get(stage.name, {}).items()}
    return stage_key(key, stage.name, stage.version, stage.settings(task.options),
                     *([{role: file_fingerprint(p) for role, p in sorted(files.items())}] if files else []))


def stage_settings(stage: Stage, options: CurateOptions) -> dict[str, Any]:
    """The settings a stage's result depends on (part of its key; thresholds that only decide are not)."""
    if stage is Stage.SHOTS:
        return {"threshold": options.shot_threshold, "min_scene": options.min_scene_seconds, "fps": options.fps}
    if stage is Stage.SEGMENTS:
        return {"seconds": options.segment_seconds, "mode": options.segments}
    # curate.audio_stream only when it is not the first (the keys of sources curated before it stand)
    return {"fps": options.fps, "rate": options.audio_rate} | (
        {"audio_stream": options.audio_stream} if options.audio_stream else {})


def stops_here(stage: Stage, res: StageResult, options: CurateOptions) -> bool:
    """A probe that found the source unusable, or too short for the current threshold, ends its stages
    (the decision says why; a lower threshold on a later run continues from here); so does a shots pass
    that could not decode the picture, and any stage's failure."""
    if res.error is not None:
        return True
    if stage is Stage.SHOTS:
        return bool(res.data.get("problem"))
    return stage is Stage.PROBE and (bool(res.data.get("problem")) or res.data["duration"] < options.min_seconds)


def reusable(stage: Stage, res: StageResult) -> bool:
    """A stored result with a current key is reused unless it is a failure (retried: a full disk, a missing
    detector or a GPU error may be gone; a probe's error is the file's own, a rejection, and its key is the
    file's fingerprint), its audio file is gone, or it is a probe that lacks a fact later stages read
    (:func:`probe_lacks_facts`; :func:`_refresh_probe` adds it where it can)."""
    if res.error is not None:
        return stage is Stage.PROBE
    if stage is Stage.PROBE and probe_lacks_facts(res):
        return False
    audio = res.data.get("audio")
    return not audio or Path(audio).is_file()


#: facts of a usable source that probes record since a version that did not (the picture's start time, its field order)
LATER_FACTS = ("start_time", "field_order")


def probe_lacks_facts(res: StageResult) -> bool:
    """A stored probe of a usable source written before probes recorded every one of :data:`LATER_FACTS`."""
    return res.error is None and not res.data.get("problem") and not set(LATER_FACTS) <= res.data.keys()


def stands(stage: Stage, old: StageResult | None, key: str, forced: bool) -> bool:
    """A source stage's stored result stands: its key is current, it is not forced, and it is reusable."""
    return old is not None and old.key == key and not forced and reusable(stage, old)
