"""The dubbing job: an edit + dub audio per language -> lip-synced shots, relinked timelines, QC reports.

1. Read the edit and plan its segments (:mod:`~lipsyncctl.timeline.segments`).
2. Load each language's dub and find its speech (:mod:`~lipsyncctl.timeline.dub`).
3. Per language and segment: cut the audio (sample accurate, with the handles), resolve the shot's
   configuration and compute its content key; finished keys are reused (:mod:`~lipsyncctl.runner.store`).
4. Keep this shard's part, render it (:mod:`lipsyncctl.runner.workers`), record each finished key.
5. When every shot of a language is settled: the relinked timeline(s), the conformed video if asked,
   and the QC report (JSON + HTML) (:mod:`~lipsyncctl.timeline.outputs`, :mod:`~lipsyncctl.timeline.report`).

Output layout under ``OUT``::

    OUT/<lang>/vNNN/                         one delivery: the files of one run, as a set (:mod:`~.delivery`)
    OUT/<lang>/vNNN/shots/<id>.<ext>         rendered shots (with handles), hard links of the render cache
    OUT/<lang>/vNNN/<edit>.otio (+ .edl ...) relinked timeline(s); for a bundle input also the bundle,
                                             self-contained (renders + original media, :mod:`~.bundle`)
    OUT/<lang>/vNNN/report.json, report.html QC; report.json lists every file of the version
    OUT/<lang>/vNNN/<edit>.conform.<ext>     full-length picture with the dub (timeline.conform)
    OUT/<lang>/current -> vNNN               the newest complete version (``LATEST`` without symlinks)
    OUT/.lipsyncctl/renders/<key>.<ext>      the render cache: every finished render, by content key
    OUT/.lipsyncctl/jobs/<key>.json          the resumable job store
    OUT/.lipsyncctl/faces/<key>.npz          face tracks per shot, shared by its languages (:func:`_face_cache`)
    OUT/.lipsyncctl/run.lock                 held while a run writes to OUT (:mod:`lipsyncctl.runner.lock`)
    OUT/.lipsyncctl/work/<lang>/*.wav        dub cuts of shots being rendered (deleted as each settles)
    OUT/.lipsyncctl/work/.<edit>.otioz.*/    an .otioz input's extracted media (removed when the job ends;
                                             a dry run extracts into the system temp folder instead)

Before anything is written, every output path is checked against the inputs (the timeline, its media,
the dubs): :mod:`~lipsyncctl.timeline.guard`.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from lipsyncctl import paths, progress
from lipsyncctl.config import Config
from lipsyncctl.errors import ConfigError, LipsyncError, UsageError
from lipsyncctl.media import timecode as tb
from lipsyncctl.runner.shards import take_shard
from lipsyncctl.runner.store import JobStore, config_for_key, content_key, file_fingerprint
from lipsyncctl.timeline import dub as dubs
from lipsyncctl.timeline import gates
from lipsyncctl.timeline.delivery import other_edit
from lipsyncctl.timeline.guard import check_output_folder, check_outputs, input_files
from lipsyncctl.timeline.outputs import is_render, render_reel, shot_extension, use_original_media
from lipsyncctl.timeline.ranges import apply_ranges
from lipsyncctl.timeline.scenes import scene_job
from lipsyncctl.timeline.segments import Segment, TimelinePlan, plan_timeline
from lipsyncctl.timeline.shot_task import ShotTask
from lipsyncctl.timeline.source import ADAPTERS_BY_SUFFIX, MediaResolver, opened_timeline
from lipsyncctl.timeline.types import (
    LanguageResult,
    ShotOutcome,
    ShotState,
    ShotStatus,
    TimelineJob,
    TimelineResult,
)

KEY_VERSION = "timeline-4"  # 2: the face choice is part of the config; 3: renders carry timecode + reel;
# 4: frames start from the source's own samples (media.splice; older renders moved every pixel a little)


def run_timeline(job: TimelineJob, config: Config) -> TimelineResult:
    """Run (or with ``job.dry_run`` only plan) the dubbing job. See the module docstring.

    Raises:
        UsageError: no dub audio given; MediaError: unreadable timeline or dub; MissingToolError: no
        adapter for the timeline's format. Failed shots do not raise: see :attr:`TimelineResult.failed`.
    """
    # 0. -o is a folder that can be written: checked before anything is read (a run failing after
    #    minutes of work, on a hidden temporary name, is what this prevents).
    early_warnings = check_output_folder(job.output, dry_run=job.dry_run)
    _no_audio_stream(config, "the run's settings")
    if job.conform_me is not None:
        _check_me(job.conform_me)
    config = edl_renders_in_mov(job, config)
    shot_extension(config)  # the renders' container holds the codec (each shot's options are checked too)
    if not job.dry_run and job.backend != "ray":  # Ray's workers have devices of their own
        _check_devices(job, config)
    # 1. Read (an .otioz is extracted into a private folder, removed when the job ends) and plan.
    work = job.output / ".lipsyncctl" / "work"
    scratch = None if job.dry_run else work
    from lipsyncctl.runner.lock import folder_lock

    # One run per OUT (shards of one job share it), taken before the first write: OUT/scenes.otio or
    # OUT/segments.otio, the extracted .otioz, the renders. A dry run writes nothing and takes no lock.
    lock = contextlib.nullcontext() if job.dry_run else folder_lock(job.output, shard=job.shard, wait=job.wait)
    with lock:
        return _read_and_run(job, config, work, scratch, early_warnings)


def _check_me(me: Path) -> None:
    """The conform's M&E is media with a sound stream (it was first read at the conform, after every shot's render).

    Raises:
        MediaError: it is not readable media, or holds no sound (exit 5).
    """
    from lipsyncctl.errors import MediaError
    from lipsyncctl.media.probe import probe

    try:
        info = probe(me)
    except MediaError as exc:
        raise MediaError(f"--conform-me {exc.message}", hint="give the M&E (music and effects) as a sound file") \
            from None
    if not info.audio:
        raise MediaError(f"--conform-me {me}: no sound stream", hint="give the M&E (music and effects) as a sound "
                         "file")


def _no_audio_stream(config: Config, where: str) -> None:
    """A dub is a file per language or a track of the edit: ``sync.audio_stream`` (the dub among the streams of one
    clip's ``--audio``) has nothing to pick here, and a shot's render would look for it in its own cut of the dub."""
    if config.sync.audio_stream:
        raise ConfigError(f"{where}: sync.audio_stream picks the dub among the streams of one clip's --audio; a "
                          "timeline's dub is a file per language or one of its tracks",
                          hint="give the dub as its own file, or the edit's track with --audio-track NAME")


def edl_renders_in_mov(job: TimelineJob, config: Config) -> Config:
    """An EDL is relinked by reel and timecode: with ``timeline.shot_container: auto`` its renders go in MOV, which
    holds their reel name (MP4 holds the timecode only: an NLE found no reel on them), where MOV holds the codec
    (not FFV1)."""
    from lipsyncctl.pipeline.output import check_output

    if config.timeline.shot_container != "auto" or Path(job.timeline).suffix.lower() != ".edl":
        return config
    try:
        check_output(Path("shot.mov"), config.output)
    except LipsyncError:
        return config
    return config.model_copy(update={"timeline": config.timeline.model_copy(update={"shot_container": "mov"})})


def _check_devices(job: TimelineJob, config: Config) -> None:
    """``--device``/``--dtype``/GPU options and every ``--gpus`` index exist here, before any shot (a wrong one
    failed every shot and published a version that needed attention)."""
    from lipsyncctl.pipeline.networks import check_inference
    from lipsyncctl.runner.devices import check_gpus

    check_inference(config.inference)
    check_gpus(job.gpus)


def _read_and_run(job: TimelineJob, config: Config, work: Path, scratch: Path | None,
                  early_warnings: list[str]) -> TimelineResult:
    try:
        # a flat master (--split-scenes) is cut into shots first: its edit, OUT/scenes.otio, is the timeline
        with scene_job(job, config) as job, opened_timeline(
                job.timeline, rate=job.edl_rate, scratch=scratch, media_root=job.media_root,
                relink=job.relink) as (timeline, base):
            resolver = MediaResolver(base, job.media_root, job.relink)
            if job.edl_rate is not None and ADAPTERS_BY_SUFFIX.get(Path(job.timeline).suffix.lower()) != "cmx_3600":
                early_warnings.append(f"--edl-rate {job.edl_rate:g} ignored: {Path(job.timeline).name} is not an "
                                      "EDL (its own rates are used)")
            early_warnings += use_original_media(timeline)
            if job.segments is not None:  # --segments: each range's options as a marker on the shots it covers
                early_warnings += apply_ranges(timeline, resolver, job.segments, handles=config.timeline.handles)
            result = _run(job, config, timeline, resolver)
            result.warnings[:0] = early_warnings
            return result
    finally:
        if scratch is not None:
            _prune_empty(work)


def _run(job: TimelineJob, config: Config, timeline: Any, resolver: MediaResolver) -> TimelineResult:
    """Steps 1-5 of :func:`run_timeline` once the timeline is read (its media resolve through ``resolver``)."""
    plan = plan_timeline(timeline, resolver, handles=config.timeline.handles)
    warnings = list(plan.warnings)
    if over := [seg.id for seg in plan.segments if is_render(seg.media)]:
        warnings.append(f"{len(over)} shot(s) of the edit have lipsyncctl renders as their media ({', '.join(over[:3])}"
                        f"{' ...' if len(over) > 3 else ''}): the dub is lip-synced over the earlier lip-sync "
                        "(give the edit with the original media, or the relinked .otio, which keeps them)")
    edl_rate = timeline.metadata.get("lipsyncctl", {}).get("edl_rate")  # an EDL read without --edl-rate
    if edl_rate and edl_rate["assumed"]:
        warnings.append(edl_rate["note"])
    # Gates fail closed (before any render): nothing to render is bad input (exit 5); --min-sync without
    # the evaluation SyncNet a missing model (exit 4), unless timeline.unchecked_gates is warn.
    gates.require_shots(plan)
    gate_missing, gate_warnings = gates.check_sync_gate(config, plan_only=job.dry_run)
    warnings += gate_warnings
    # 2. Dubs and speech.
    dub_tracks = _load_dubs(job, timeline, resolver, plan)
    warnings += [w for d in dub_tracks if (w := other_edit(job.output / d.language, Path(job.timeline)))]
    warnings += [w for d in dub_tracks if (w := gates.dub_coverage_warning(d, plan))]
    with progress.Task("find speech in the dubs", total=len(dub_tracks)) as bar:
        for d in dub_tracks:
            dubs.detect_speech(d, threshold=config.timeline.vad_threshold,
                               min_silence_ms=config.timeline.vad_min_silence_ms)
            bar.advance()
    # 3. Shots, keys, reuse.
    store = JobStore(job.output / ".lipsyncctl" / "jobs")
    models_fp, missing_models = _model_fingerprints(config, plan_only=job.dry_run)
    missing_models += gate_missing
    warnings += [f"{m['model']} ({m['role']}) is not installed: a run needs it ({m['fetch']})" for m in missing_models]
    shots: list[ShotState] = []
    with progress.Task("content keys (hash media, dub cuts, settings)",
                       total=len(dub_tracks) * len(plan.segments)) as bar:
        for d in dub_tracks:
            for seg in plan.segments:
                shots.append(_shot(seg, d, plan.fps, config, job, models_fp, store))
                bar.advance()
    inputs = input_files(job, timeline, resolver)
    check_outputs(job, inputs, [d.language for d in dub_tracks], shots)  # before anything is written
    if job.dry_run:
        return _settle(job, config, timeline, resolver, plan, dub_tracks, shots, store, warnings, missing_models,
                       inputs)
    # Under OUT's lock (run_timeline), shared by the shards of one job: what the others finished since the
    # keys were looked up is reused.
    _reuse_finished(shots, store, inputs)
    return _settle(job, config, timeline, resolver, plan, dub_tracks, shots, store, warnings, missing_models,
                   inputs)


def _settle(job: TimelineJob, config: Config, timeline: Any, resolver: MediaResolver, plan: TimelinePlan,
            dub_tracks: list[dubs.DubTrack], shots: list[ShotState], store: JobStore, warnings: list[str],
            missing_models: list[dict[str, str]], inputs: list[Path]) -> TimelineResult:
    """Steps 4-5 of :func:`run_timeline`: this shard's renders, then each language's outputs."""
    # 4. This shard's part; render it.
    mine = shard_shots(shots, job.shard)
    for d in dub_tracks:
        _report_reuse(d.language, [s for s in shots if s.language == d.language], mine, job.dry_run)
    renders = list({s.key: s for s in mine}.values())  # (one key: one render)
    work = {"shots": len(renders), "frames": sum(s.task.frames for s in renders if s.task is not None),
            "frame_steps": sum(s.task.frames * s.task.config.inference.steps for s in renders if s.task is not None),
            "languages": len(dub_tracks)}
    if not job.dry_run and mine:
        _render(job, store, mine, dub_tracks)
    # 5. Outputs per language. The shards of one job take this step one at a time, each after a last look at
    # what the others finished while it rendered: the one finishing last sees every shot settled and delivers.
    from lipsyncctl.runner.lock import one_at_a_time
    from lipsyncctl.timeline.delivery import delivering
    from lipsyncctl.timeline.finish import finish_language

    sharded = not job.dry_run and job.shard[1] > 1
    with one_at_a_time(job.output, "deliver") if sharded else contextlib.nullcontext():
        if sharded:
            ours = {id(s) for s in mine}
            _reuse_finished([s for s in shots if id(s) not in ours], store, inputs)
        languages: dict[str, LanguageResult] = {}
        with delivering() as together:  # every language's version delivered at the end, or none (an interrupt)
            for d in dub_tracks:
                lang_shots = [s for s in shots if s.language == d.language]
                languages[d.language] = finish_language(job, config, timeline, resolver, plan, d, lang_shots, mine,
                                                        warnings, together)
    return TimelineResult(plan, languages, job.shard, job.dry_run, warnings, work, missing_models)


def shard_shots(shots: list[ShotState], shard: tuple[int, int]) -> list[ShotState]:
    """The shots ``shard`` renders: its part of the content keys of those rendered or reused (the reused ones count, so
    that the shards' parts stay the same as a job goes on). The shots of one key (languages given one dub) are one
    render, in one shard: split over two shards running at once, both wrote the one cache file."""
    renderable = [s for s in shots if s.task is not None or s.reused]
    keys = set(take_shard(list(dict.fromkeys(s.key for s in renderable)), shard))
    return [s for s in renderable if s.key in keys and s.task is not None]


def _report_reuse(language: str, shots: list[ShotState], mine: list[ShotState], dry_run: bool) -> None:
    """One line per language: what was reused, what is left alone, what this run renders."""
    reused = sum(1 for s in shots if s.reused)
    todo = sum(1 for s in mine if s.language == language)
    settled = sum(1 for s in shots if s.outcome is not None and not s.reused)
    verb = "would render" if dry_run else "rendering"
    parts = [f"reused {reused} of {len(shots)} shots ({language})"]
    if settled:
        parts.append(f"{settled} left alone")
    parts.append(f"{verb} {todo}" if todo else "nothing to render")
    progress.message(", ".join(parts))


def _render(job: TimelineJob, store: JobStore, mine: list[ShotState], dub_tracks: list[dubs.DubTrack]) -> None:
    """Step 4: write the dub cuts of ``mine``, render them on the job's workers and record each finished
    key as it completes (a shot's line is reported then: name, status, seconds)."""
    from lipsyncctl.runner.workers import run_tasks
    from lipsyncctl.timeline.shot_task import execute_shot

    by_task = {id(s.task): s for s in mine}
    tasks = [s.task for s in mine if s.task is not None]
    # Shots of one content key (two languages' byte-identical dubs, a placeholder dub) are one render: rendered once,
    # the others given its outcome (two workers wrote the one cache file at once, and one of them failed as busy).
    first: dict[str, ShotTask] = {}
    twins: dict[str, list[ShotTask]] = {}
    for t in tasks:
        if t.key in first:
            twins.setdefault(t.key, []).append(t)
        else:
            first[t.key] = t

    def on_done(task: ShotTask, outcome: ShotOutcome) -> None:
        if outcome.status in (ShotStatus.DONE, ShotStatus.NO_FACE):
            store.put(task.key, outcome.to_dict())
        for each in (task, *twins.get(task.key, ())):
            shot = by_task[id(each)]
            own = outcome if each is task else replace(outcome, language=each.language, segment=each.segment_id)
            shot.outcome, shot.rendered = own, True
            _remove_work_files(each)  # a rerun writes them again if it renders the shot again
            took = f" in {outcome.seconds:.1f} s" if outcome.seconds and each is task else ""
            same = f" (the render of {task.language}/{task.segment_id})" if each is not task else ""
            why = f": {outcome.error}" if outcome.error and outcome.status != ShotStatus.DONE else ""
            progress.message(f"{each.language}/{shot.segment.id}: {outcome.status.value}{took}{same}{why}")

    try:
        with progress.Task("write dub cuts", total=len(mine)) as bar:
            for shot in mine:
                _write_task_audio(shot, dub_tracks)
                bar.advance()
        run_tasks(list(first.values()), execute_shot, on_done, jobs=job.jobs, gpus=job.gpus, backend=job.backend,
                  label="shots", name=lambda t: f"{t.language}/{t.segment_id}")
    finally:  # interrupted or not: no dub cuts left behind (the job store is what resume needs)
        for t in tasks:
            _remove_work_files(t)
        _prune_empty(job.output / ".lipsyncctl" / "work")


def _load_dubs(job: TimelineJob, timeline: Any, resolver: MediaResolver, plan: TimelinePlan) -> list[dubs.DubTrack]:
    if not job.audio and not job.audio_tracks:
        raise UsageError("--timeline needs dub audio: --audio FILE, --audio LANG=FILE or --audio-track NAME")
    dubs.check_languages([lang for lang, _ in (*job.audio, *job.audio_tracks)])  # (a job made by hand: before decoding)
    start = dubs.parse_offset(job.audio_offset, plan.fps, plan.global_start)
    spool = job.output / ".lipsyncctl" / "work" if not job.dry_run else None  # decoded dubs: unnamed files there
    out = [dubs.load_dub_file(lang, path, start, folder=spool) for lang, path in job.audio]
    out += [dubs.load_dub_track(lang, timeline, name, resolver, plan.fps, folder=spool)
            for lang, name in job.audio_tracks]
    return out


def _model_fingerprints(config: Config, *, plan_only: bool = False) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Fingerprints of the model files (part of every content key) and the models that are not installed.

    A real run needs every file (raises :class:`MissingModelError`, exit 4). A dry run (``plan_only``) never
    does: a missing file's fingerprint is a placeholder naming the model. Such a key matches no finished
    shot (nothing was ever rendered without the weights), which is right for a plan that renders nothing;
    installed files are fingerprinted as usual, so the plan's reuse counts stay exact.

    Returns:
        ``({"unet", "unet_config", "whisper", "vae"}, [{"model", "role", "error", "fetch"}, ...])``.
    """
    from lipsyncctl.errors import MissingModelError
    from lipsyncctl.pipeline.networks import resolve_model_file

    fingerprints = {"unet_config": config.model.unet_config}
    missing: list[dict[str, str]] = []
    names = {"unet": config.model.checkpoint, "whisper": config.model.whisper, "vae": config.model.vae}
    for role, name in names.items():
        try:
            fingerprints[role] = file_fingerprint(resolve_model_file(name, role))
        except MissingModelError as exc:
            if not plan_only:
                raise
            fingerprints[role] = f"missing:{name}"
            missing.append({"model": name, "role": role, "error": exc.message,
                            "fetch": f"lipsyncctl models fetch {name}" if "models fetch" in exc.hint else exc.hint})
    if config.model.mask != paths.OFFICIAL_MASK:  # a mask of one's own by its content (the official one: keys of before)
        from lipsyncctl.faces.mask import mask_path

        try:
            fingerprints["mask"] = file_fingerprint(mask_path(config.model.mask))
        except MissingModelError:
            if not plan_only:
                raise
            fingerprints["mask"] = f"missing:{config.model.mask}"
    return fingerprints, missing


def _shot(seg: Segment, d: dubs.DubTrack, fps: Fraction, config: Config, job: TimelineJob,
          models_fp: dict[str, str], store: JobStore) -> ShotState:
    from lipsyncctl.media.container import is_image_sequence
    from lipsyncctl.pipeline.output import carries_hdr10

    tl = config.timeline
    overrides = seg.options.overrides()
    if seg.options.length_policy is None:
        overrides["sync.length_policy"] = "silence"  # the cut is exactly as long as the picture
    if is_image_sequence(seg.media):  # its files state no rate: the timeline's reference does (neutral in keys)
        overrides["sync.sequence_fps"] = tb.fraction_str(seg.media_fps)
    seg_config = config.with_overrides(overrides, source=f"shot {seg.id} options")
    _no_audio_stream(seg_config, f"shot {seg.id} options")
    speech, coverage = dubs.speech_frames(d, seg, fps, tl.speech_pad_frames)
    mode = tl.non_dialogue
    cut = dubs.render_cut(d, seg, fps)
    ext = shot_extension(seg_config)
    keep = dubs.frame_complement(speech, seg.render_frames) if mode == "passthrough" else []
    key = content_key({
        "v": KEY_VERSION, "media": file_fingerprint(seg.media), "first": seg.render_start,
        "frames": seg.render_frames, "fps": tb.fraction_str(seg.media_fps),
        "audio": dubs.audio_digest(cut, d.rate), "config": config_for_key(seg_config.to_dict()),
        "mode": mode,
        "speech": speech if mode != "render" else None, "models": models_fp, "ext": ext,
        "timecode": seg.render_timecode,
        # an interlaced source's render keeps its field order (since timeline-4; progressive keys are unchanged),
        # its faces rendered from deinterlaced pictures unless sync.deinterlace=off (the renders of before)
        **({"fields": seg.media_fields} if seg.media_fields else {}),
        **({"deinterlaced": True} if seg.media_fields and seg_config.sync.deinterlace == "auto" else {}),
        # an HDR10 source's render carries its mastering display and light level where the codec can (a render
        # made before that did not: made again once; other keys are unchanged)
        **({"hdr10": True} if seg.media_hdr10 and carries_hdr10(seg_config.output) else {}),
    })
    output = job.output / ".lipsyncctl" / "renders" / f"{key}.{ext}"  # the cache; deliveries link to it
    shot = ShotState(seg, d.language, fps, key, output, speech, coverage)
    if mode == "passthrough" and not speech:
        shot.outcome = ShotOutcome(ShotStatus.NO_DIALOGUE, key, language=d.language, segment=seg.id,
                                   frames=seg.render_frames)
        return shot
    record = store.get(key)
    if record is not None:  # finished before; a render made for another shot is copied by _place_reused
        shot.outcome, shot.reused = ShotOutcome.from_dict(record), True
        return shot
    shot.task = ShotTask(
        key=key, language=d.language, segment_id=seg.id, video=str(seg.media), fps=tb.fraction_str(seg.media_fps),
        first=seg.render_start, frames=seg.render_frames,
        audio=str(job.output / ".lipsyncctl" / "work" / d.language / f"{seg.id}.{key}.wav"),
        output=str(output), config=seg_config,
        model_audio=(str(job.output / ".lipsyncctl" / "work" / d.language / f"{seg.id}.{key}.model.wav")
                     if mode == "close" else None),
        keep_source=keep, timecode=seg.render_timecode, reel=render_reel(key),
        face_cache=str(_face_cache(job, seg, seg_config, d, cut, mode, speech)),
    )
    return shot


def _face_cache(job: TimelineJob, seg: Segment, seg_config: Config, d: dubs.DubTrack, cut: Any, mode: str,
                speech: list[tuple[int, int]]) -> Path:
    """The shot's face-track file, ``OUT/.lipsyncctl/faces/<key>.npz``, named by what the face pass depends
    on: the media (fingerprint), the rendered frames and rate, the ``faces`` section and the crop resolution.
    Not the dub, so every language of the shot (and every rerun) shares one tracking; except for
    ``faces.select: speaker``, which listens to what the model hears (the cut, silenced outside speech in
    ``close`` mode): one file per dub then. :func:`lipsyncctl.pipeline.clip.sync_clip` checks the file's
    own key before it uses it."""
    from lipsyncctl.pipeline.faces import FACE_CACHE_VERSION

    heard = None
    if seg_config.faces.select == "speaker":
        heard = [dubs.audio_digest(cut, d.rate), mode, speech if mode == "close" else None]
    key = content_key({
        "v": FACE_CACHE_VERSION, "media": file_fingerprint(seg.media), "first": seg.render_start,
        "frames": seg.render_frames, "fps": tb.fraction_str(seg.media_fps),
        "faces": seg_config.faces.model_dump(mode="json"), "resolution": seg_config.model.resolution,
        "heard": heard,
    })
    return job.output / ".lipsyncctl" / "faces" / f"{key}.npz"


def _refresh_reuse(shots: list[ShotState], store: JobStore) -> None:
    """Shots still to render whose key another run has finished since they were looked up: reused."""
    for shot in shots:
        record = store.get(shot.key) if shot.task is not None else None
        if record is not None:
            shot.outcome, shot.reused, shot.task = ShotOutcome.from_dict(record), True, None


def _reuse_finished(shots: list[ShotState], store: JobStore, inputs: list[Path]) -> None:
    """Shots still to render that another run (a shard) has finished since they were looked up: reused, their
    renders placed in the render cache."""
    _refresh_reuse(shots, store)
    for s in shots:
        _place_reused(s, inputs)


def _place_reused(shot: ShotState, inputs: list[Path]) -> None:
    """Copy a reused render recorded under another path (by an earlier version, as
    ``OUT/<lang>/shots/<id>.<ext>``) into the render cache, atomically; the copy's outcome then points at it."""
    from lipsyncctl.media.atomic import atomic_output, same_file

    record = shot.outcome
    if not shot.reused or record is None or not record.output or same_file(record.output, shot.output):
        return
    with atomic_output(shot.output, inputs=inputs) as tmp:
        shutil.copy2(record.output, tmp)
    shot.outcome = replace(record, output=str(shot.output))


def _write_task_audio(shot: ShotState, dub_tracks: list[dubs.DubTrack]) -> None:
    """Write the WAV(s) of ``shot``'s task: the dub cut, and for ``close`` mode the cut silenced outside
    speech (:func:`lipsyncctl.media.audio.write_wav`, whose arrays are ``(n, channels)``: the cuts are
    ``(channels, n)``, hence the transposes)."""
    from lipsyncctl.media.audio import write_wav

    task = shot.task
    assert task is not None
    d = next(x for x in dub_tracks if x.language == task.language)
    cut = dubs.render_cut(d, shot.segment, shot.fps)
    write_wav(task.audio, cut.T, d.rate)
    if task.model_audio:
        write_wav(task.model_audio, dubs.silence_outside(cut, shot.speech, shot.segment.media_fps, d.rate).T, d.rate)


def _remove_work_files(task: ShotTask) -> None:
    """Delete the dub cut(s) written for ``task`` under ``OUT/.lipsyncctl/work/``."""
    for name in (task.audio, task.model_audio):
        if name:
            Path(name).unlink(missing_ok=True)


def _prune_empty(work: Path) -> None:
    """Remove ``work/<lang>/`` folders and ``work/`` itself once empty (another shard may still use them)."""
    for folder in [*sorted(work.glob("*/")), work]:
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()
