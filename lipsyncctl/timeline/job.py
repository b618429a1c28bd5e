"""The dubbing job: an edit + dub audio per language -> lip-synced shots, relinked timelines, QC reports.

1. Read the edit and plan its segments (:mod:`~lipsyncctl.timeline.segments`).
2. Load each language's dub and find its speech (:mod:`~lipsyncctl.timeline.dub`).
3. Per language and segment: cut the audio (sample accurate, with the handles), resolve the shot's
   configuration and compute its content key; finished keys are reused (:mod:`~lipsyncctl.runner.store`).
4. Keep this shard's part, render it (:mod:`lipsyncctl.runner.workers`), record each finished key.
5. When every shot of a language is settled: the relinked timeline(s), the conformed video if asked,
   and the QC report (JSON + HTML) (:mod:`~lipsyncctl.timeline.outputs`, :mod:`~lipsyncctl.timeline.report`).

Output layout under ``OUT``::

    OUT/<lang>/shots/<NNN>_<clip>.<ext>     rendered shots (with handles)
    OUT/<lang>/<edit>.otio (+ <edit>.edl ...) relinked timeline(s); for a bundle input also the bundle,
                                             self-contained (renders + original media, :mod:`~.bundle`)
    OUT/<lang>/report.json, report.html      QC
    OUT/<lang>/<edit>.conform.<ext>          full-length picture with the dub (timeline.conform)
    OUT/.lipsyncctl/jobs/<key>.json          the resumable job store
    OUT/.lipsyncctl/work/<lang>/*.wav        dub cuts of shots being rendered (deleted as each settles)
    OUT/.lipsyncctl/work/.<edit>.otioz.*/    an .otioz input's extracted media (removed when the job ends;
                                             a dry run extracts into the system temp folder instead)

Before anything is written, every output path is checked against the inputs (the timeline, its media,
the dubs): :mod:`~lipsyncctl.timeline.guard`.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl.config import Config
from lipsyncctl.errors import UsageError
from lipsyncctl.pipeline.output import default_extension
from lipsyncctl.runner.shards import take_shard
from lipsyncctl.runner.store import JobStore, config_for_key, content_key, file_fingerprint
from lipsyncctl.timeline import dub as dubs
from lipsyncctl.timeline import timebase as tb
from lipsyncctl.timeline.guard import check_output_folder, check_outputs, input_files
from lipsyncctl.timeline.segments import Segment, TimelinePlan, plan_timeline
from lipsyncctl.timeline.shot_task import ShotTask
from lipsyncctl.timeline.source import MediaResolver, opened_timeline

KEY_VERSION = "timeline-2"  # 2: the face choice is part of the config
SETTLED = ("done", "no_face", "no_dialogue", "failed")


@dataclass
class TimelineJob:
    """What to do (the CLI fills it from its flags; see ``lipsyncctl sync --help``)."""

    timeline: Path
    output: Path
    audio: list[tuple[str, Path]] = field(default_factory=list)
    audio_tracks: list[tuple[str, str]] = field(default_factory=list)
    audio_offset: str | None = None
    media_root: Path | None = None
    relink: dict[str, str] = field(default_factory=dict)
    edl_rate: float | None = None
    jobs: int = 1
    gpus: list[str] = field(default_factory=list)
    shard: tuple[int, int] = (0, 1)
    backend: str = "local"
    dry_run: bool = False


@dataclass
class ShotState:
    """One (segment, language): its task (if it needs rendering) and outcome (once settled)."""

    segment: Segment
    language: str
    fps: Fraction                 # the timeline's rate
    key: str
    output: Path
    speech: list[tuple[int, int]]
    speech_coverage: float
    task: ShotTask | None = None
    outcome: dict[str, Any] | None = None
    reused: bool = False
    rendered: bool = False


@dataclass
class TimelineResult:
    """What the job did (``--json`` prints :meth:`to_dict`)."""

    plan: TimelinePlan
    languages: dict[str, dict[str, Any]]
    shard: tuple[int, int]
    dry_run: bool
    warnings: list[str]
    work: dict[str, int] = field(default_factory=dict)
    #: dry run only: models that are not installed (``model``, ``role``, ``error``, ``fetch``: the command)
    missing_models: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """``lang/shot`` of every failed shot (or under ``timeline.min_sync``)."""
        return [f"{lang}/{s['id']}" for lang, d in self.languages.items() for s in d["shots"]
                if s["status"] in ("failed", "under_min_sync")]

    def counts(self) -> dict[str, int]:
        keys = ("rendered", "reused", "failed", "no_face", "no_dialogue", "pending", "to_render")
        return {k: sum(d["counts"].get(k, 0) for d in self.languages.values()) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "dry_run": self.dry_run,
                "shard": f"{self.shard[0]}/{self.shard[1]}", "counts": self.counts(), "work": dict(self.work),
                "failed": self.failed, "languages": self.languages, "warnings": list(self.warnings),
                "missing_models": [dict(m) for m in self.missing_models]}


def run_timeline(job: TimelineJob, config: Config) -> TimelineResult:
    """Run (or with ``job.dry_run`` only plan) the dubbing job. See the module docstring.

    Raises:
        UsageError: no dub audio given; MediaError: unreadable timeline or dub; MissingToolError: no
        adapter for the timeline's format. Failed shots do not raise: see :attr:`TimelineResult.failed`.
    """
    # 0. -o is a folder that can be written: checked before anything is read (a run failing after
    #    minutes of work, on a hidden temporary name, is what this prevents).
    early_warnings = check_output_folder(job.output, dry_run=job.dry_run)
    # 1. Read (an .otioz is extracted into a private folder, removed when the job ends) and plan.
    work = job.output / ".lipsyncctl" / "work"
    scratch = None if job.dry_run else work
    try:
        with opened_timeline(job.timeline, rate=job.edl_rate, scratch=scratch) as (timeline, base):
            result = _run(job, config, timeline, MediaResolver(base, job.media_root, job.relink))
            result.warnings[:0] = early_warnings
            return result
    finally:
        if scratch is not None:
            _prune_empty(work)


def _run(job: TimelineJob, config: Config, timeline: Any, resolver: MediaResolver) -> TimelineResult:
    """Steps 1-5 of :func:`run_timeline` once the timeline is read (its media resolve through ``resolver``)."""
    plan = plan_timeline(timeline, resolver, handles=config.timeline.handles)
    warnings = list(plan.warnings)
    # 2. Dubs and speech.
    dub_tracks = _load_dubs(job, timeline, resolver, plan)
    for d in dub_tracks:
        dubs.detect_speech(d, threshold=config.timeline.vad_threshold,
                           min_silence_ms=config.timeline.vad_min_silence_ms)
    # 3. Shots, keys, reuse.
    store = JobStore(job.output / ".lipsyncctl" / "jobs")
    models_fp, missing_models = _model_fingerprints(config, plan_only=job.dry_run)
    warnings += [f"{m['model']} ({m['role']}) is not installed: a run needs it ({m['fetch']})" for m in missing_models]
    shots: list[ShotState] = []
    for d in dub_tracks:
        for seg in plan.segments:
            shots.append(_shot(seg, d, plan.fps, config, job, models_fp, store))
    inputs = input_files(job, timeline, resolver)
    check_outputs(job, inputs, [d.language for d in dub_tracks], shots)  # before anything is written
    if not job.dry_run:
        for s in shots:
            _place_reused(s, inputs)
    # 4. This shard's part; render it.
    renderable = [s for s in shots if s.task is not None or s.reused]
    mine = [s for s in take_shard(renderable, job.shard) if s.task is not None]
    work = {"shots": len(mine), "frames": sum(s.task.frames for s in mine if s.task is not None),
            "frame_steps": sum(s.task.frames * s.task.config["inference"]["steps"] for s in mine if s.task is not None),
            "languages": len(dub_tracks)}
    if not job.dry_run:
        by_key = {id(s.task): s for s in mine}

        def on_done(task: ShotTask, outcome: dict[str, Any]) -> None:
            shot = by_key[id(task)]
            shot.outcome, shot.rendered = outcome, True
            if outcome["status"] in ("done", "no_face"):
                store.put(task.key, outcome)
            _remove_work_files(task)  # a rerun writes them again if it renders the shot again

        tasks = [s.task for s in mine if s.task is not None]
        from lipsyncctl.runner.workers import run_tasks
        from lipsyncctl.timeline.shot_task import execute_shot

        try:
            for t in tasks:
                _write_task_audio(t, dub_tracks, shots)
            run_tasks(tasks, execute_shot, on_done, jobs=job.jobs, gpus=job.gpus, backend=job.backend, label="shots")
        finally:  # interrupted or not: no dub cuts left behind (the job store is what resume needs)
            for t in tasks:
                _remove_work_files(t)
            _prune_empty(job.output / ".lipsyncctl" / "work")
    # 5. Outputs per language.
    languages = {}
    for d in dub_tracks:
        lang_shots = [s for s in shots if s.language == d.language]
        languages[d.language] = _finish_language(job, config, timeline, resolver, plan, d, lang_shots, mine,
                                                 warnings)
    return TimelineResult(plan, languages, job.shard, job.dry_run, warnings, work, missing_models)


def _load_dubs(job: TimelineJob, timeline: Any, resolver: MediaResolver, plan: TimelinePlan) -> list[dubs.DubTrack]:
    if not job.audio and not job.audio_tracks:
        raise UsageError("--timeline needs dub audio: --audio FILE, --audio LANG=FILE or --audio-track NAME")
    start = dubs.parse_offset(job.audio_offset, plan.fps, plan.global_start)
    out = [dubs.load_dub_file(lang, path, start) for lang, path in job.audio]
    out += [dubs.load_dub_track(lang, timeline, name, resolver, plan.fps) for lang, name in job.audio_tracks]
    langs = [d.language for d in out]
    if len(set(langs)) != len(langs):
        raise UsageError(f"two dubs are labelled the same: {langs}", hint="label them: --audio de=... --audio fr=...")
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
    from lipsyncctl.pipeline.networks import resolve_files

    try:
        files = resolve_files(config.model)
    except MissingModelError:
        if not plan_only:
            raise
    else:
        return {"unet": file_fingerprint(files.unet), "unet_config": files.unet_config,
                "whisper": file_fingerprint(files.whisper), "vae": file_fingerprint(files.vae)}, []
    fingerprints = {"unet_config": config.model.unet_config}
    missing: list[dict[str, str]] = []
    names = {"unet": config.model.checkpoint, "whisper": config.model.whisper, "vae": config.model.vae}
    for role, name in names.items():
        try:
            fingerprints[role] = file_fingerprint(_model_file(name, role))
        except MissingModelError as exc:
            fingerprints[role] = f"missing:{name}"
            missing.append({"model": name, "role": role, "error": exc.message,
                            "fetch": f"lipsyncctl models fetch {name}" if "models fetch" in exc.hint else exc.hint})
    return fingerprints, missing


def _model_file(name: str, role: str) -> Path:
    """The installed file (or folder) of one network by registry name, ``tiny`` or path: the rule of
    :func:`lipsyncctl.pipeline.networks.resolve_files`, for one role (which resolves all three at once and
    stops at the first missing one, where a plan wants to name every missing model).

    Raises:
        MissingModelError: not installed, or neither a known model nor an existing path.
    """
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.errors import MissingModelError

    if name == "tiny":
        from lipsyncctl.checkpoints.tiny import ensure_tiny_models

        return Path(getattr(ensure_tiny_models(), role))
    registry = load_registry()
    if name in registry.names():
        return registry.resolve(name, role)
    path = Path(name).expanduser()
    if not path.exists():
        raise MissingModelError(f"model {name!r} is neither a known model nor an existing file",
                                hint=f"known models: {', '.join(registry.names())}; or give a path")
    return path


def _audio_window(seg: Segment, fps: Fraction, rate: int) -> tuple[Fraction, int]:
    """(timeline seconds of the first rendered frame, samples of the render at ``rate``)."""
    t0 = Fraction(seg.record_start) / fps - Fraction(seg.handle_in) / seg.media_fps
    import math

    s0 = math.floor(t0 * rate)
    s1 = math.floor((t0 + Fraction(seg.render_frames) / seg.media_fps) * rate)
    return t0, s1 - s0


def _cut(d: dubs.DubTrack, seg: Segment, fps: Fraction) -> np.ndarray:
    import math

    t0, n = _audio_window(seg, fps, d.rate)
    return d.window(math.floor(t0 * d.rate), n)


def _speech_local(d: dubs.DubTrack, seg: Segment, fps: Fraction, pad: int) -> tuple[list[tuple[int, int]], float]:
    """Speech as render-local frame ranges (padded) and the share of the visible frames with speech."""
    import math

    t0, _ = _audio_window(seg, fps, d.rate)
    ranges: list[tuple[int, int]] = []
    for a, b in d.speech:
        lo = max(math.floor((Fraction(a).limit_denominator(10**6) - t0) * seg.media_fps) - pad, 0)
        hi = min(math.ceil((Fraction(b).limit_denominator(10**6) - t0) * seg.media_fps) + pad, seg.render_frames)
        if hi > lo:
            if ranges and lo <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], max(hi, ranges[-1][1]))
            else:
                ranges.append((lo, hi))
    vis_lo, vis_hi = seg.handle_in, seg.handle_in + seg.source_frames
    covered = sum(max(0, min(hi, vis_hi) - max(lo, vis_lo)) for lo, hi in ranges)
    return ranges, covered / max(seg.source_frames, 1)


def _shot(seg: Segment, d: dubs.DubTrack, fps: Fraction, config: Config, job: TimelineJob,
          models_fp: dict[str, str], store: JobStore) -> ShotState:
    from lipsyncctl import config as cfg

    tl = config.timeline
    sets = seg.options.config_sets()
    if seg.options.length_policy is None:
        sets.append("sync.length_policy=silence")  # the cut is exactly as long as the picture
    seg_config = cfg.resolve(config.to_dict(), sets)
    speech, coverage = _speech_local(d, seg, fps, tl.speech_pad_frames)
    mode = tl.non_dialogue
    cut = _cut(d, seg, fps)
    ext = tl.shot_container if tl.shot_container != "auto" else default_extension(seg_config.output.codec)[1:]
    output = job.output / d.language / "shots" / f"{seg.id}.{ext}"
    keep = _complement(speech, seg.render_frames) if mode == "passthrough" else []
    key = content_key({
        "v": KEY_VERSION, "media": file_fingerprint(seg.media), "first": seg.render_start,
        "frames": seg.render_frames, "fps": tb.fraction_str(seg.media_fps),
        "audio": dubs.audio_digest(cut, d.rate), "config": config_for_key(seg_config.to_dict()),
        "mode": mode,
        "speech": speech if mode != "render" else None, "models": models_fp, "ext": ext,
    })
    shot = ShotState(seg, d.language, fps, key, output, speech, coverage)
    if mode == "passthrough" and not speech:
        shot.outcome = {"status": "no_dialogue", "output": None, "key": key, "frames": seg.render_frames,
                        "warnings": [], "error": None}
        return shot
    record = store.get(key)
    if record is not None:  # finished before; a render made for another shot is copied by _place_reused
        shot.outcome, shot.reused = record, True
        return shot
    shot.task = ShotTask(
        key=key, language=d.language, segment_id=seg.id, video=str(seg.media), fps=tb.fraction_str(seg.media_fps),
        first=seg.render_start, frames=seg.render_frames,
        audio=str(job.output / ".lipsyncctl" / "work" / d.language / f"{seg.id}.{key}.wav"),
        output=str(output), config=seg_config.to_dict(),
        model_audio=(str(job.output / ".lipsyncctl" / "work" / d.language / f"{seg.id}.{key}.model.wav")
                     if mode == "close" else None),
        keep_source=keep,
    )
    return shot


def _place_reused(shot: ShotState, inputs: list[Path]) -> None:
    """Copy a reused render that was made under another name (same content key) to the shot's own path,
    atomically; the copy's outcome then points at it."""
    from lipsyncctl.media.atomic import atomic_output, same_file

    record = shot.outcome
    if not shot.reused or not record or not record.get("output") or same_file(record["output"], shot.output):
        return
    with atomic_output(shot.output, inputs=inputs) as tmp:
        shutil.copy2(record["output"], tmp)
    shot.outcome = {**record, "output": str(shot.output)}


def _complement(ranges: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for lo, hi in ranges:
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < total:
        out.append((pos, total))
    return out


def _write_task_audio(task: ShotTask, dub_tracks: list[dubs.DubTrack], shots: list[ShotState]) -> None:
    """Write the WAV(s) of ``task``: the dub cut, and for ``close`` mode the cut silenced outside speech."""
    shot = next(s for s in shots if s.task is task)
    d = next(x for x in dub_tracks if x.language == task.language)
    cut = _cut(d, shot.segment, shot.fps)
    write_wav(Path(task.audio), cut, d.rate)
    if task.model_audio:
        gated = np.zeros_like(cut)
        for lo, hi in shot.speech:
            s0 = int(lo * d.rate / shot.segment.media_fps)
            s1 = int(hi * d.rate / shot.segment.media_fps)
            gated[:, s0:s1] = cut[:, s0:s1]
        write_wav(Path(task.model_audio), gated, d.rate)


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


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Float32 WAV of ``samples`` ``(ch, n)`` (PyAV), written atomically."""
    import av

    from lipsyncctl.media.atomic import atomic_output

    ch = samples.shape[0]
    layout = "mono" if ch == 1 else "stereo" if ch == 2 else f"{ch}c"
    with atomic_output(path) as tmp:
        with av.open(str(tmp), "w", format="wav") as c:
            s = c.add_stream("pcm_f32le", rate=rate, layout=layout)
            for i in range(0, max(samples.shape[1], 1), 4096):
                part = np.ascontiguousarray(samples[:, i : i + 4096].T.reshape(1, -1), dtype=np.float32)
                if part.size == 0:
                    break
                frame = av.AudioFrame.from_ndarray(part, format="flt", layout=layout)
                frame.sample_rate, frame.pts = rate, i
                for p in s.encode(frame):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
    return path


def _finish_language(job: TimelineJob, config: Config, timeline: Any, resolver: MediaResolver, plan: TimelinePlan,
                     d: dubs.DubTrack, shots: list[ShotState], mine: list[ShotState],
                     warnings: list[str]) -> dict[str, Any]:
    from lipsyncctl.timeline.finish import finish_language

    return finish_language(job, config, timeline, resolver, plan, d, shots, mine, warnings)
