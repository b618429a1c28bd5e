"""The curation job: raw talking-head footage -> the spans of a LatentSync training set, with a reason for
every rejected piece (``lipsyncctl curate``; LATENTSYNC.md §4).

1. Find the sources (files, folders, globs) and check ``-o`` before any work; take this shard's part.
2. Per source (in this process, worker processes or Ray: :mod:`lipsyncctl.runner.workers`), each stage
   unless its stored result has the same key (inputs + settings), the record saved after every stage:
   probe -> normalize (16 kHz mono audio; the picture is read on the 25 fps grid, never re-encoded) ->
   shots -> segments.
3. Decide every source and span from the stored measurements (:mod:`lipsyncctl.curation.decide`).
4. Rebuild the views from every record in DATA (all shards): ``manifest.jsonl`` (one line per span),
   ``report.json`` (counts per stage and reason, kept hours), ``report.html`` (the same, with thumbnails
   of the first rejected spans, read from the sources still there), ``curate.yaml`` (the resolved settings).

Layout under ``DATA``::

    DATA/curate.yaml, manifest.jsonl, report.json   views, rebuilt each run
    DATA/audio/<source id>.wav                      16 kHz mono audio of each usable source
    DATA/.lipsyncctl/records/sources/<id>.json      measurements per source stage (the resumable state)
    DATA/.lipsyncctl/records/clips/<source>/<clip>.json   measurements per clip stage
    DATA/.lipsyncctl/run.lock                       held while a run writes to DATA (shards share it:
                                                    :mod:`lipsyncctl.runner.lock`)

A kill at any moment leaves finished records whole; the rerun recomputes only what is missing. Inputs are
never modified, moved or deleted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl import progress
from lipsyncctl.config import Config, CurateOptions
from lipsyncctl.curation.clipstages import CLIP_STAGES, ClipContext, ClipStage, SourceFrames
from lipsyncctl.curation.decide import (
    MISSING,
    ClipSpan,
    clip_id,
    decide_clips,
    decide_source,
    source_stages_left,
    stage_end,
)
from lipsyncctl.curation.outcome import CurateResult, SourceOutcome, Tally
from lipsyncctl.curation.rebuild import (
    VIEWS,
    rebuild,
    set_views_generation,
    settings_changed,
    stage_names,
    views_generation,
)
from lipsyncctl.curation.records import (
    STAGES,
    ClipRecord,
    Decision,
    RecordStore,
    SourceRecord,
    Stage,
    StageResult,
    source_id,
)
from lipsyncctl.curation.reuse import (
    clip_stage_key,
    clip_stage_stale,
    clip_walk,
    picture_origin,
    probe_lacks_facts,
    source_key_after,
    source_stage_key,
    span_key,
    stands,
    stops_here,
)
from lipsyncctl.errors import CheckpointError, Interrupted, LipsyncError, UsageError


@dataclass(frozen=True, slots=True)
class CurateTask:
    """One source for a worker (picklable; a run holds one a source: slotted, its settings shared)."""

    path: str
    id: str
    data: str
    options: CurateOptions
    until: str
    force: tuple[str, ...] = ()
    models: dict[str, dict[str, str]] = field(default_factory=dict)  # clip stage -> role -> file (resolved)


def run_curation(inputs: list[str | Path], data: str | Path, config: Config, *, until: str | None = None,
                 force: tuple[str, ...] = (), dry_run: bool = False, jobs: int = 1,
                 shard: tuple[int, int] = (0, 1), backend: str = "local",
                 gpus: Sequence[str] = (), wait: bool = False) -> CurateResult:
    """Run the curation stages up to ``until`` on every source of ``inputs`` into ``data`` (see the module
    docstring). ``force``: stages to recompute even when their stored key matches (with every later one).
    ``gpus``: devices like ``cuda:1``, one worker each (:func:`~lipsyncctl.runner.workers.run_tasks`); a
    worker's clip stages load their networks on its device (:attr:`ClipContext.device`). ``wait``: when
    another run holds ``data`` (:mod:`lipsyncctl.runner.lock`), wait for it instead of raising.

    Raises:
        UsageError: no sources, ``data`` a file or one of the inputs. OSError: ``data`` not writable.
        BusyError: another run is writing to ``data`` (not with ``wait``).
    """
    from lipsyncctl.media.atomic import check_writable
    from lipsyncctl.media.inputs import LeftOut, check_inputs_exist, collect_inputs
    from lipsyncctl.runner.lock import FolderLock, folder_lock, one_at_a_time
    from lipsyncctl.runner.shards import take_shard
    from lipsyncctl.runner.store import content_key
    from lipsyncctl.runner.workers import run_tasks

    t0 = time.perf_counter()
    options = config.curate
    names = stage_names()
    until = until or names[-1]
    for name in (until, *force):
        if name not in names:
            raise UsageError(f"{name!r}: not a curate stage", hint=f"stages: {', '.join(names)}")
    forced = tuple(force)
    data = Path(data).absolute()  # records hold absolute paths: a rerun from another folder reuses them
    # 1. Sources, output checks, this shard's part.
    if data.exists() and not data.is_dir():
        raise UsageError(f"-o {data}: is a file; curate writes a folder", hint="give a folder name for -o")
    if data.is_dir() and not RecordStore.held_by(data):  # not curate's: its files of those names are not ours
        theirs = [name for name in VIEWS if os.path.lexists(data / name)]
        if theirs:
            raise UsageError(f"-o {data}: holds {', '.join(theirs)} that curate did not write (it is no curated "
                             "dataset); curate would replace them", hint="give a new folder (or a dataset curate "
                             "made) for -o")
    check_writable(data / "curate.yaml", probe=not dry_run, name=data)  # a dry run reads the permission bits only
    others = LeftOut()
    # another curated dataset inside the inputs (a 512 px curation beside the 256 px one, an earlier -o RAW): its
    # aligned clips are not sources (faces of faces, the same speakers under new ids on both sides of the split)
    store = RecordStore.of(data)
    pairs = _distinct_stems(collect_inputs(list(inputs), data, others=others, closed=RecordStore.held_by), store)
    if not pairs:
        raise UsageError("no media files in the inputs given", hint="give files, folders or glob patterns")
    check_inputs_exist([src for src, _ in pairs])  # exit 5 before any work, as in every command
    warnings: list[str] = [n for n in (others.note(),) if n]
    if others.closed:
        names = ", ".join(map(str, others.closed[:3])) + (" ..." if len(others.closed) > 3 else "")
        warnings.append(f"{len(others.closed)} curated dataset folder(s) in the inputs: their subfolders (aligned "
                        f"clips) are not taken as sources, their own media files are: {names}")
    for text in warnings:
        progress.warning(text)
    # fail fast (exit 4) before any work; a dry run says what is missing and makes nothing (not the tiny models)
    models = _clip_models(config, until, warnings if dry_run else None)
    if backend != "ray":  # Ray's workers have devices of their own (--gpus asks it for a GPU a task)
        _check_gpus(gpus, warnings if dry_run else None)
    folder = str(data)
    tasks = [CurateTask(os.path.abspath(src), source_id(src, stem), folder, options, until, forced, models)
             for src, stem in pairs]
    del pairs
    mine = take_shard(sorted(tasks, key=lambda t: t.id), shard)
    if not mine:  # (more shards than sources: said, not a silent success)
        warnings.append(f"shard {shard[0]}/{shard[1]} has no source: the {len(tasks)} source(s) go to the first "
                        f"{len(tasks)} shard(s)")
        progress.warning(warnings[-1])
    _check_ids(tasks, mine, store, data)
    if dry_run:
        if data.is_dir():  # (a plan of a DATA a run is writing would be a snapshot telling to rerun what it measures)
            FolderLock(data, wait=wait, command="lipsyncctl curate --dry-run").check_free()
        if changed := settings_changed(data / "curate.yaml", options):  # (what the run would decide the views with)
            warnings.append(changed)
            progress.warning(changed)
        plan = CurateResult(data, until, shard, Tally(options.fps), dry_run=True, warnings=warnings,
                            views_written=False)  # (a dry run writes nothing)
        for task in mine:
            plan.add(*_planned(task, store), options)
        plan.seconds = time.perf_counter() - t0
        return plan
    # one run per DATA; the shards of one job share it (the same settings: a shard deciding with other thresholds
    # would rebuild the views by its own)
    job = content_key({"curate": options.model_dump(mode="json"), "until": until})[:12]
    with folder_lock(data, shard=shard, wait=wait, job=job):
        # 2. The stages, per source.
        done: dict[str, list[str]] = {}
        lost: dict[str, tuple[str, str]] = {}  # a source whose worker died (out of memory): failed, the others go on

        def gone(task: CurateTask, why: str) -> list[str]:
            lost[task.id] = (task.path, why)
            return []

        try:
            run_tasks(mine, execute_source, lambda task, computed: done.__setitem__(task.id, computed),
                      jobs=jobs, gpus=list(gpus), backend=backend, label="sources", name=lambda t: t.id, lost=gone)
        except KeyboardInterrupt:  # the views are the last rebuild's: a source this run changed (new settings) may
            # have new clips under the names the views list (another resolution, other scores)
            changed = sum(1 for computed in done.values() if computed)
            raise Interrupted(f"curate interrupted: {len(done)} of {len(mine)} source(s) finished"
                              + (f", {changed} with stages computed" if changed else ""),
                              hint="rerun the same command to resume (finished stages are kept); until then DATA's "
                              "views (train.txt, val.txt, manifest.jsonl) are the last finished run's: `lipsyncctl "
                              "curate report DATA` rebuilds them from what is stored",
                              partial={"finished": len(done), "sources": len(mine)}) from None
        scope = frozenset(t.id for t in mine)
        del tasks, mine  # (~0.4 KB a source, not needed by the rebuild)
        # 3. Decisions. 4. Views from every record in DATA (every shard's; one shard at a time, so the
        # shard finishing last, which sees every record, writes the views last). The warnings said at the start
        # (files skipped) are in --json too.
        # A shard skips its rebuild when one that started after its stages ended has finished (it read this shard's
        # records): a hundred shards ending together queued a hundred rebuilds of the whole DATA (minutes each at a
        # million sources); now one or two.
        before = views_generation(data)  # (unreadable: a rebuild, whatever it says later)
        seen = before[0] if before is not None else sys.maxsize
        with one_at_a_time(data, "views"):
            started, finished = views_generation(data) or (0, 0)
            if shard[1] > 1 and finished > seen:
                progress.message("the views were rebuilt since this shard's stages ended, by another shard (with this "
                                 "shard's spans): not again; the counts here are this shard's sources")
                result = rebuild(data, config, until=until, shard=shard, done=done, scope=scope, warnings=warnings,
                                 lost=lost, write=False)
            else:
                set_views_generation(data, started + 1, finished)
                result = rebuild(data, config, until=until, shard=shard, done=done, scope=scope, lost=lost,
                                 complete=until == names[-1], warnings=warnings, models=models)
                set_views_generation(data, started + 1, started + 1)
    result.seconds = time.perf_counter() - t0
    return result


def _check_ids(tasks: list[CurateTask], mine: list[CurateTask], store: RecordStore, data: Path) -> None:
    """A source's id comes from its path inside the folder given (so a moved tree keeps its ids): refuse two
    inputs with one id (files of different folders given one by one, as a shell expands ``raw/*/*.mp4``),
    and a file of this shard's (``mine``) that DATA already holds under another id (an earlier run was given another
    folder), which would make a second copy of its clips. A source whose own record names its file is known; DATA's
    other records are read only when some source is not (a new file, or a moved one), and only their paths are held
    (a DATA that holds one file under two ids already, from a version without this check, is not looked for). A new
    file that holds what a source whose file is gone held (the same fingerprint: a file renamed or moved into another
    folder, ``mv`` keeping its time) is refused too: its clips would be in DATA twice, under two ids, possibly on both
    sides of the split (the fingerprints of the files whose ids are new are read only when a stored source of no
    task here has lost its file; a moved tree keeps its ids and is no such case).

    Raises:
        UsageError: naming the files.
    """
    by_id: dict[str, str] = {}
    for t in tasks:
        if t.id in by_id:
            raise UsageError(f"{by_id[t.id]} and {t.path}: one source id (the same name inside the folders given)",
                             hint="give the folder that holds them (e.g. raw/, or the pattern in quotes: "
                             "'raw/*/*.mp4'), so each source is named by its path inside it")
        by_id[t.id] = t.path
    unknown: dict[str, str] = {}  # path -> id, of the sources whose record is not theirs yet
    new: dict[str, str] = {}      # path -> id, of those whose id has no record at all (a new file, or a renamed one)
    for t in mine:
        raw = store.load("sources", t.id)
        recorded = os.path.abspath(raw["path"]) if raw is not None else None
        if recorded != t.path:
            unknown[t.path] = t.id
        if raw is None:
            new[t.path] = t.id
        elif recorded != t.path and _another_file(recorded, t.path):
            # another folder's file of the same name inside it (batch1/x.mp4, now batch2/x.mp4): its clips were
            # replaced by this one's, in silence (a moved tree, whose old path is gone, keeps its ids)
            raise UsageError(f"{t.path} and {raw['path']} (in {data} from an earlier run): one source id, the same "
                             "name inside the folders given", hint="rename one of them, or curate this folder into "
                             "another DATA (a source's id is its path inside the folder given)")
    ids = {t.id for t in tasks}
    some_gone = False  # a stored source of no task here whose file is gone: a new file may be it, renamed
    for rid in store.each_id("sources") if unknown else ():  # (no order needed: not a million ids sorted)
        raw = store.load("sources", rid)
        path = os.path.abspath(raw["path"]) if raw is not None else None
        if path in unknown and unknown[path] != rid:
            raise UsageError(f"{path} is in {data} already, as source {rid} (an earlier run was given another "
                             "folder holding it)", hint="give the inputs as the earlier runs did (the same "
                             "folders), or curate into another folder")
        some_gone = some_gone or (raw is not None and rid not in ids and not os.path.lexists(raw["path"]))
    if new and some_gone:  # (the new files' fingerprints, then the records again: nothing held a record)
        from lipsyncctl.runner.store import file_fingerprint

        prints = {file_fingerprint(Path(path)): path for path in new if os.path.isfile(path)}
        for rid in store.each_id("sources"):
            raw = store.load("sources", rid)
            path = prints.get(raw["fingerprint"]) if raw is not None and rid not in ids else None
            if path is not None and not os.path.lexists(raw["path"]):
                raise UsageError(f"{path} holds what source {rid} of {data} held, whose file {raw['path']} is gone "
                                 "(moved or renamed): its clips would be in DATA twice, under two ids",
                                 hint="put the file back where it was, or curate the new tree into another folder")


def _distinct_stems(pairs: list[tuple[Path, Path]], store: RecordStore) -> list[tuple[Path, Path]]:
    """Two files that differ only by their extension (a clip and its re-export, ``x.mp4`` and ``x.mov``) would have
    one id: each keeps its extension in its stem (``x_mp4``, ``x_mov``), except the one DATA already holds under the
    plain stem's id, which keeps it (a re-export dropped beside a curated clip changed the clip's id)."""
    from lipsyncctl.media.inputs import extension_stem

    by_stem: dict[Path, list[int]] = {}
    for i, (_, rel) in enumerate(pairs):
        by_stem.setdefault(rel, []).append(i)
    out = list(pairs)
    for rel, members in by_stem.items():
        if len(members) < 2 or len({pairs[i][0].suffix for i in members}) < len(members):
            continue  # one file, or the same name in two folders given one by one (_check_ids refuses those)
        for i in members:
            src = pairs[i][0]
            raw = store.load("sources", source_id(src, rel))
            if raw is None or os.path.abspath(raw["path"]) != os.path.abspath(src):
                out[i] = (src, extension_stem(src, rel))
    return out


def _another_file(recorded: str, given: str) -> bool:
    """Whether ``recorded`` (a stored source's path) is still there as a file other than ``given``."""
    try:
        return os.path.isfile(recorded) and not os.path.samefile(recorded, given)
    except OSError:
        return False


def report_curation(data: str | Path, config: Config, *, wait: bool = False, dry_run: bool = False,
                    without: frozenset[str] = frozenset()) -> CurateResult:
    """Steps 3 and 4 alone (``lipsyncctl curate report DATA``): re-decide every stored source and clip with
    ``config.curate``'s thresholds and rebuild the views without running a stage (the sources are only
    read for the report's thumbnails of rejected spans, and may be gone). ``dry_run``: the decisions alone (the
    result lists the spans as a plan), nothing written and no lock taken (thresholds tried on the data as it is),
    once no run writes DATA (refused, or ``wait``). ``without``: the dry run leaves these sources out (``curate
    forget --dry-run``).

    Raises:
        MediaError: ``data`` is not there (exit 5).
        UsageError: ``data`` holds no curate records.
        BusyError: another run is writing to ``data`` (not with ``wait``).
    """
    from lipsyncctl.runner.lock import FolderLock, folder_lock

    t0 = time.perf_counter()
    data = Path(data).absolute()
    check_curated(data)
    if dry_run:  # it writes nothing, not even a lock file; a run writing DATA is waited for or refused (its plan would
        # tell to rerun for spans being measured)
        FolderLock(data, wait=wait, command="lipsyncctl curate report --dry-run").check_free()
        result = rebuild(data, config, until="report", write=False, dry_run=True, without=without)
        result.seconds = time.perf_counter() - t0
        return result
    with folder_lock(data, wait=wait):
        result = rebuild_views(data, config)
    result.seconds = time.perf_counter() - t0
    return result


def rebuild_views(data: Path, config: Config) -> CurateResult:
    """Re-decide every stored source and rebuild the views (``curate report``, ``curate forget``); call while
    holding ``data`` alone."""
    started, _ = views_generation(data) or (0, 0)  # numbered as a shard's (DATA is held alone here)
    set_views_generation(data, started + 1, started)
    result = rebuild(data, config, until="report")
    set_views_generation(data, started + 1, started + 1)
    return result


def check_curated(data: Path) -> None:
    """``data`` is a folder holding curate's records of a source or more (``curate report``, ``curate forget``).

    Raises:
        MediaError: not there, or a file (exit 5, as a missing input of every command).
        UsageError: no curate records in it.
    """
    if not data.is_dir():
        from lipsyncctl.errors import MediaError

        raise MediaError(f"{data}: {'a file, not a folder' if data.exists() else 'no such folder'}",
                         hint="give the DATA folder of `lipsyncctl curate RAW... -o DATA`")
    if not RecordStore.of(data).any("sources"):
        raise UsageError(f"{data}: no curate records here", hint="run `lipsyncctl curate RAW... -o DATA` first")


def execute_source(task: CurateTask, cache: dict[str, Any], device: str | None) -> list[str]:
    """The runner's executor: every stage of one source up to ``task.until``, then the clip stages of
    each span kept so far; returns the stages computed. Errors of a stage are stored in the record (a
    rejection or a failure), never raised, except Ctrl-C and a model file that does not load (a
    :class:`~lipsyncctl.errors.CheckpointError`: every span would fail the same way, so the job stops). The source's folder of aligned clips is removed when it
    holds none (each span rejected at align: no face, several faces); no other run writes there (one source is
    one task, of one shard)."""
    try:
        return _execute_source(task, cache, device)
    finally:
        with contextlib.suppress(OSError):  # not empty (clips, an interrupted writer's temporaries) or not made
            (Path(task.data) / "aligned" / task.id).rmdir()


def _execute_source(task: CurateTask, cache: dict[str, Any], device: str | None) -> list[str]:
    from lipsyncctl.runner.store import file_fingerprint

    store = RecordStore.of(task.data)
    path = Path(task.path)
    fingerprint = file_fingerprint(path) if path.is_file() else MISSING
    raw = store.load("sources", task.id)
    rec = SourceRecord.from_dict(raw) if raw else SourceRecord(task.id, str(path), fingerprint)
    rec.path, rec.fingerprint = str(path), fingerprint
    names = [str(s) for s in STAGES]
    last = names.index(task.until) if task.until in names else len(names) - 1
    walk = _standing(task, rec, fingerprint, last)
    computed: list[str] = []
    if walk.refreshed:
        store.save("sources", task.id, rec.to_dict())
        computed.append(str(Stage.PROBE))
    key, forced, complete = walk.key, walk.forced, not walk.stopped
    fresh: set[str] = set()  # clips whose align the one pass just computed
    aligned: list[tuple[int, int]] = []
    for i in range(walk.next, last + 1) if complete else ():
        stage = STAGES[i]
        if i > walk.next:  # the walk gave the first one's key
            key = source_key_after(key, stage, rec, task.options)
            forced = forced or str(stage) in task.force
        if stage is Stage.SHOTS and _one_pass(task):  # shots and align in one decode
            rec.stages[str(stage)], aligned = _shots_and_align(rec, task, key, forced, store, cache, device)
            fresh.update(clip_id(task.id, a, b) for a, b in aligned)
        else:
            rec.stages[str(stage)] = _run_stage(stage, rec, task, key)
        for later in STAGES[i + 1:]:
            rec.stages.pop(str(later), None)  # computed from the old result: stale
        store.save("sources", task.id, rec.to_dict())
        computed.append(str(stage))
        if rec.stages[str(stage)].error is not None or stops_here(stage, rec.stages[str(stage)], task.options):
            complete = False
            break
    computed += [f"align:{a}-{b}" for a, b in aligned]  # listed in stage order: after segments
    if not complete or task.until in names or decide_source(rec, task.options).verdict != "kept":
        return computed
    # The clip stages, per span kept so far (their keys chain on the segments' key).
    clip_stages = CLIP_STAGES[: [s.name for s in CLIP_STAGES].index(task.until) + 1]
    audio = Path(rec.stages[str(Stage.NORMALIZE)].data["audio"])
    # one decode of the source for all its clips, in span order
    frames = SourceFrames(path, task.options.fps, deinterlace=task.options.deinterlace == "auto")
    try:
        for span in sorted(decide_clips(rec, task.options), key=lambda s: s.first):
            if span.decision.verdict != "kept":
                continue
            done = _run_clip_stages(span, clip_stages, key, forced, task, store, path, audio, cache, device,
                                    frames, fresh)
            computed += [f"{name}:{span.first}-{span.stop}" for name in done]
    finally:
        frames.close()
    return computed


def _run_clip_stages(span: ClipSpan, stages: tuple[ClipStage, ...], segments_key: str, forced: bool, task: CurateTask,
                     store: RecordStore, source: Path, audio: Path, cache: dict[str, Any],
                     device: str | None, frames: SourceFrames | None = None,
                     fresh: frozenset[str] | set[str] = frozenset()) -> list[str]:

    rec = _clip_record(store, span)
    computed = []
    for i, stage, key, forcing in clip_walk(span, stages, segments_key, forced, task):
        files = {role: Path(p) for role, p in task.models.get(stage.name, {}).items()}
        old = rec.stages.get(stage.name)
        # made by the one pass in this run (``--force shots`` would otherwise force it once more)
        just_made = stage.name == "align" and span.id in fresh and old is not None and old.key == key
        if not just_made and clip_stage_stale(old, key, forcing, stage):
            previous = {s.name: rec.stages[s.name].data for s in stages[:i]}
            ctx = ClipContext(span.id, span.source, source, span.first, span.stop, audio, Path(task.data),
                              task.options, previous, cache, device, files, frames)
            try:
                result = StageResult(key, stage.run(ctx))
            except CheckpointError:
                raise  # a model file that does not load fails every span: the run stops (exit 4), nothing stored
            except LipsyncError as exc:
                result = StageResult(key, error=str(exc))
            rec.stages[stage.name] = result
            for later in stages[i + 1:]:
                rec.stages.pop(later.name, None)
            store.save(f"clips/{span.source}", span.id, rec.to_dict())
            computed.append(stage.name)
        if _ends_at(rec, stage, task.options):
            break  # rejected or failed here: the later stages do not run on it
    return computed


def _ends_at(rec: ClipRecord, stage: ClipStage, options: CurateOptions) -> bool:
    """A span's clip stages end at ``stage``: its result is a failure or a rejection (:func:`.decide.stage_end`).
    Only this stage's: a later stage's stored failure is a stage to retry (the whole record's decision stopped the
    walk before it, so a failed span was never computed again, even with ``--force`` of that stage)."""
    res = rec.stages.get(stage.name)
    return res is not None and stage_end(stage, res, options) is not None


def _clip_record(store: RecordStore, span: ClipSpan) -> ClipRecord:
    """The stored record of ``span``'s clip, or a new one."""
    raw = store.load(f"clips/{span.source}", span.id)
    return ClipRecord.from_dict(raw) if raw else ClipRecord(span.id, span.source, span.first, span.stop)


@dataclass
class _Standing:
    """How far a source's stored stage results stand (:func:`_standing`)."""

    next: int  # the first source stage to compute (one past ``until``'s when every one stands)
    key: str  # that stage's key (the last standing one's when every one stands)
    forced: bool  # ``--force`` reaches that stage
    stopped: bool  # a standing result ends the source's stages (unusable, too short, undecodable, a failure)
    refreshed: bool  # an older probe was read again for the facts it lacked (``rec`` holds the new one)


def _standing(task: CurateTask, rec: SourceRecord, fingerprint: str, last: int) -> _Standing:
    """The source stages up to index ``last`` whose stored results a run reuses, walked as a run and a dry run
    both walk them: keys chained on the file's fingerprint, ``--force``, an older probe refreshed in ``rec``
    (:func:`_refresh_probe`: a read of the file, nothing stored), and a standing result that stops the stages."""
    key, forced, refreshed = fingerprint, False, False
    for i, stage in enumerate(STAGES[: last + 1]):
        key = source_key_after(key, stage, rec, task.options)
        forced = forced or str(stage) in task.force
        old = rec.result(stage)
        if stage is Stage.PROBE and old is not None and old.key == key and not forced and probe_lacks_facts(old):
            new = _refresh_probe(old, rec, task, key)
            if new is not None:  # the same file, the facts it had unchanged: the later stages stand
                rec.stages[str(stage)] = old = new
                refreshed = True
        if not stands(stage, old, key, forced):
            return _Standing(i, key, forced, False, refreshed)
        if stops_here(stage, old, task.options):
            return _Standing(i, key, forced, True, refreshed)
    return _Standing(last + 1, key, forced, False, refreshed)


def _one_pass(task: CurateTask) -> bool:
    """Shots and align share one decode (:mod:`.onepass`): its settings allow it, this run goes as far as
    align, and align is the built-in stage (the one pass is its implementation too)."""
    from lipsyncctl.curation import align, onepass

    names = [s.name for s in CLIP_STAGES]
    builtin = any(s.name == align.NAME and s.run is align.run for s in CLIP_STAGES)
    return (onepass.applies(task.options) and builtin and task.until in names
            and names.index(task.until) >= names.index(align.NAME))


def _shots_and_align(rec: SourceRecord, task: CurateTask, key: str, forced: bool, store: RecordStore,
                     cache: dict[str, Any], device: str | None) -> tuple[StageResult, list[tuple[int, int]]]:
    """The shots stage's result and the align stage of the spans it makes, in one decode of the source
    (:func:`.onepass.shots_and_align`). Spans that the segments stage will reject are not aligned; nor are
    those whose stored align result is current (a rerun after a kill). Returns the result and the ids of the
    clips aligned. A source that stops decoding keeps none of them (records and files removed)."""
    from lipsyncctl.curation import onepass
    from lipsyncctl.curation.align import worker_detector
    from lipsyncctl.curation.clipstages import clip_stage

    options, path = task.options, Path(task.path)
    align = clip_stage("align")
    seg_key = source_stage_key(key, Stage.SEGMENTS, options)
    shortest = round(options.min_seconds * options.fps)
    kind = f"clips/{task.id}"
    made: dict[str, tuple[int, int]] = {}

    def align_key(first: int, stop: int) -> str:
        return clip_stage_key(span_key(seg_key, first, stop), align, task)

    def wanted(first: int, stop: int, shot_frames: int) -> bool:
        if shot_frames < shortest or stop - first < options.min_sync_frames:
            return False  # rejected at shots or segments (or not known yet: the clip stages align it later)
        raw = store.load(kind, clip_id(task.id, first, stop))
        old = ClipRecord.from_dict(raw).stages.get(align.name) if raw else None
        return clip_stage_stale(old, align_key(first, stop), forced, align)

    def finished(first: int, stop: int, data: dict[str, Any]) -> None:
        sid = clip_id(task.id, first, stop)
        raw = store.load(kind, sid)
        clip = ClipRecord.from_dict(raw) if raw else ClipRecord(sid, task.id, first, stop)
        clip.stages = {align.name: StageResult(align_key(first, stop), data)}  # the later stages follow from it
        store.save(kind, sid, clip.to_dict())
        made[sid] = (first, stop)

    def forget() -> None:  # the records and files of the clips made so far
        for sid in made:
            raw = store.load(kind, sid)
            for f in align.outputs(ClipRecord.from_dict(raw).stages[align.name].data) if raw else []:
                Path(f).unlink(missing_ok=True)
            store.delete(kind, sid)

    try:
        detector = worker_detector(options, cache, device)
        audio = Path(rec.stages[str(Stage.NORMALIZE)].data["audio"])
        data = onepass.shots_and_align(path, _frames(rec), options, source_id=task.id, data=Path(task.data),
                                       audio=audio, detector=detector, wanted=wanted, finished=finished)
    except onepass.Inconsistent as exc:  # never expected: the two passes then (and a note in the log)
        progress.warning(f"{path.name}: shots and align in one decode stopped ({exc}); two passes instead")
        forget()
        return _run_stage(Stage.SHOTS, rec, task, key), []
    except LipsyncError as exc:
        forget()
        return StageResult(key, error=f"{exc}"), []
    if data.get("problem"):  # nothing of a source that does not decode is kept
        forget()
        return StageResult(key, data), []
    return StageResult(key, data), list(made.values())


def _clip_models(config: Config, until: str, warnings: list[str] | None = None) -> dict[str, dict[str, str]]:
    """The network files of the clip stages up to ``until`` (:attr:`ClipStage.models`), resolved once, the face
    detector checked with them. With ``warnings`` (a dry run): stage by stage and writing nothing (a tiny set not made
    yet is left to the run); a stage whose files are not there is said in ``warnings`` and left out, so the plan counts
    its work as to compute.

    Raises:
        MissingModelError: one is not installed, or the face detector cannot run here (exit 4, before any
            source is touched); not with ``warnings``.
    """
    from lipsyncctl.checkpoints.tiny import TinyNotMade, not_generated
    from lipsyncctl.curation import align
    from lipsyncctl.faces.detect import usable_backend

    names = [s.name for s in CLIP_STAGES]
    models, missing = {}, []
    for stage in CLIP_STAGES[: names.index(until) + 1] if until in names else ():
        if stage.skipped(config.curate):
            continue
        # a dry run makes nothing (not even tiny models), nor does a run past a missing model (it stops)
        with not_generated() if warnings is not None or missing else contextlib.nullcontext():
            try:
                if stage.name == align.NAME:
                    usable_backend(config.curate.detector)  # its files are its backend's business
                models[stage.name] = {role: str(p) for role, p in stage.models(config.model).items()}
            except TinyNotMade:
                continue  # made by the run: its stages count as to compute
            except LipsyncError as exc:
                missing.append((stage.name, exc))
                if warnings is not None:
                    _would_stop(warnings, exc)
    if missing and warnings is None:  # the first, and the stages after it that miss theirs (one rerun, not three)
        (_, first), *others = missing
        if others:
            names_ = ", ".join(name for name, _ in others)
            first.message += (f" (the {names_} stage{'s need' if len(others) > 1 else ' needs'} models not "
                              "installed either: --dry-run lists every one)")
        raise first
    return models


def _check_gpus(gpus: Sequence[str], warnings: list[str] | None) -> None:
    """Every ``gpus`` device exists here (:func:`~lipsyncctl.runner.devices.check_gpus`), before any work; with
    ``warnings`` (a dry run, perhaps on another machine than the run's) said there instead.

    Raises:
        DeviceError: one is missing (exit 4); not with ``warnings``.
    """
    from lipsyncctl.runner.devices import check_gpus

    try:
        check_gpus(gpus)
    except LipsyncError as exc:
        if warnings is None:
            raise
        _would_stop(warnings, exc)


def _would_stop(warnings: list[str], exc: LipsyncError) -> None:
    """A dry run's note of what would stop the run (exit code, message and hint), said and kept in ``warnings``."""
    warnings.append(f"a run would stop (exit {exc.exit_code}): {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
    progress.warning(warnings[-1])


def _refresh_probe(old: StageResult, rec: SourceRecord, task: CurateTask, key: str) -> StageResult | None:
    """``old`` probed again for the facts it lacks (cheap; its key, the file's fingerprint, is the same), or None
    when the new probe disagrees with a fact ``old`` had (then every later stage is computed again). A dataset
    curated by an older version is not decoded again for a new fact: only the stages whose keys it changes
    run (an interlaced source's shots, which now see deinterlaced pictures)."""
    new = _run_stage(Stage.PROBE, rec, task, key)
    if new.error is not None or any(new.data.get(k) != v for k, v in old.data.items()):
        return None
    return new


def _run_stage(stage: Stage, rec: SourceRecord, task: CurateTask, key: str) -> StageResult:
    from lipsyncctl.curation import stages

    path, options = Path(task.path), task.options
    try:
        if stage is Stage.PROBE:
            data = stages.probe_source(path, options)
        elif stage is Stage.NORMALIZE:
            data = stages.normalize_audio(path, Path(task.data) / "audio" / f"{task.id}.wav", options,
                                          start=picture_origin(rec),
                                          stream_index=rec.stages[str(Stage.PROBE)].data.get("audio_index"))
        elif stage is Stage.SHOTS:
            data = stages.detect_shots(path, _frames(rec), options)
        else:
            shots = rec.stages[str(Stage.SHOTS)].data["shots"]
            keys = stages.keyframe_indices(path, options.fps) if options.segments == "official" else None
            data = stages.cut_segments(shots, options, keys)
    except LipsyncError as exc:
        return StageResult(key, error=f"{exc}")
    return StageResult(key, data)


def _frames(rec: SourceRecord) -> int:
    """Frames every stage after normalize works on: the picture's grid frames, cut to the audio's length
    (a span must have sound for every frame)."""
    probe = rec.stages[str(Stage.PROBE)].data
    norm = rec.stages[str(Stage.NORMALIZE)].data
    return min(probe["grid_frames"], norm["audio_frames"])


def _planned(task: CurateTask, store: RecordStore) -> tuple[SourceOutcome, list[ClipSpan]]:
    """What a run would do with one source, from its stored record alone (a dry run: nothing runs or is
    written): the stages it would compute, as :func:`execute_source` decides them, and the decision and spans
    the stored measurements give with the current thresholds. A source with a source stage to run is
    ``undecided`` (its spans are not known yet: every clip stage is listed by name)."""
    from lipsyncctl.runner.store import file_fingerprint

    path = Path(task.path)
    fingerprint = file_fingerprint(path) if path.is_file() else MISSING
    raw = store.load("sources", task.id)
    rec = SourceRecord.from_dict(raw) if raw else SourceRecord(task.id, task.path, fingerprint)
    names = [str(s) for s in STAGES]
    last = names.index(task.until) if task.until in names else len(names) - 1
    clip_names = [] if task.until in names else [s.name for s in CLIP_STAGES][
        : [s.name for s in CLIP_STAGES].index(task.until) + 1]
    walk = _standing(task, rec, fingerprint, last)  # a refreshed probe is kept in memory here
    refreshed = [str(Stage.PROBE)] if walk.refreshed else []
    if walk.stopped:
        return SourceOutcome(task.id, task.path, decide_source(rec, task.options), to_compute=refreshed), []
    if walk.next <= last:
        stage, forced, old = STAGES[walk.next], walk.forced, rec.result(STAGES[walk.next])
        why = ("new" if raw is None else "the file changed" if rec.fingerprint != fingerprint
               else "--force" if forced else "not measured" if old is None
               else "a failure, retried" if old.error is not None
               else "an older record" if old.key == walk.key and stage is Stage.PROBE
               else "its audio file is gone" if old.key == walk.key else "settings changed")
        todo = refreshed + names[walk.next: last + 1] + clip_names
        return SourceOutcome(task.id, task.path, Decision.undecided(str(stage), why), to_compute=todo), []
    decision = decide_source(rec, task.options)
    spans = decide_clips(rec, task.options, store.clip_records(rec.id))
    todo = list(refreshed)
    if clip_names and decision.verdict == "kept":
        stages = CLIP_STAGES[: len(clip_names)]
        for span in decide_clips(rec, task.options):  # as execute_source: the spans the source stages keep
            if span.decision.verdict != "kept":
                continue
            clip = _clip_record(store, span)
            for j, stage, ckey, cforced in clip_walk(span, stages, walk.key, walk.forced, task):
                if clip_stage_stale(clip.stages.get(stage.name), ckey, cforced, stage):
                    todo += [f"{s.name}:{span.first}-{span.stop}" for s in stages[j:]]
                    break
                if _ends_at(clip, stage, task.options):
                    break
    return (SourceOutcome(task.id, task.path, decision, clips=len(spans),
                          kept=sum(c.decision.verdict == "kept" for c in spans), to_compute=todo,
                          stages_left=source_stages_left(rec)), spans)
