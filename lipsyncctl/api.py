"""The library's entry points: typed options in, ``*Result`` out. The CLI is a thin layer over these and
imports nothing else of the library but the leaves (``config``, ``errors``, ``progress``).

Each function resolves nothing from the environment beyond what its arguments say (the run
configuration comes resolved from :func:`resolve_config`), reports progress through
:mod:`lipsyncctl.progress` and raises :class:`lipsyncctl.errors.LipsyncError` subclasses.

``import lipsyncctl`` gives the same names lazily (``lipsyncctl.sync``, ``lipsyncctl.LipSyncPipeline``...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lipsyncctl.checkpoints.convert import ConvertResult
    from lipsyncctl.checkpoints.fetch import FetchResult
    from lipsyncctl.checkpoints.info import CheckpointInfo
    from lipsyncctl.checkpoints.manage import ModelsListing
    from lipsyncctl.checkpoints.verify import ModelCheck
    from lipsyncctl.checks.doctor import DoctorResult
    from lipsyncctl.config import Config, OutputOptions, PrepOptions
    from lipsyncctl.config_keys import KeyInfo
    from lipsyncctl.curation.outcome import CurateResult
    from lipsyncctl.pipeline.batch import BatchResult
    from lipsyncctl.pipeline.clip import SyncResult
    from lipsyncctl.pipeline.lipsync import LipSyncPipeline
    from lipsyncctl.pipeline.networks import Networks
    from lipsyncctl.pipeline.score import ScoreResult
    from lipsyncctl.preparation.job import PrepResult
    from lipsyncctl.timeline.prune import PruneResult
    from lipsyncctl.timeline.types import TimelineJob, TimelineResult
    from lipsyncctl.training.config import TrainConfig
    from lipsyncctl.training.loop import TrainResult

__all__ = [
    "LipSyncPipeline", "check_models", "convert_checkpoint", "curate", "curate_forget", "curate_report", "curate_stages", "is_curated", "doctor", "fetch_models", "inspect_checkpoint",
    "config_keys", "key_bounds", "list_models", "load_pipeline", "model_path", "prep", "resolve_config", "score", "sync", "sync_batch", "sync_timeline",
    "timeline_job", "prune", "verify_models", "train", "resolve_train_config", "train_presets", "presets", "preset",
    "launch_train",
]


# ---- configuration -----------------------------------------------------------------------------

def resolve_config(preset: str | Path | Mapping[str, Any] | None = None, sets: Iterable[str] = (),
                   flags: Mapping[str, Any] | None = None) -> Config:
    """The run configuration: defaults < ``preset`` (name, YAML path or mapping) < ``sets``
    (``"inference.steps=10"``) < ``flags`` (dotted key -> value; None = not given). Validated, frozen."""
    from lipsyncctl.config import resolve

    config = resolve(str(preset) if isinstance(preset, Path) else preset, sets, flags)
    _refuse_unused_crf(config, flags or {})
    return config


def config_keys(section: str | None = None, *, train: bool = False) -> list[KeyInfo]:
    """Every key of the run configuration (``train``: of the training configuration), or of one ``section``, with
    its type, default, bounds and description, from the schema that validates presets and ``--set``.

    Raises:
        ConfigError: no such section or key (exit 3, an unknown key as in --set; the sections are listed).
    """
    from lipsyncctl.config_keys import describe_keys

    if train:
        from lipsyncctl.training.config import TrainConfig

        return describe_keys(TrainConfig, section)
    return describe_keys(None, section)


def key_bounds(key: str, *, train: bool = False) -> tuple[float | None, float | None]:
    """The inclusive ``ge``/``le`` limits the schema declares for ``key`` (``"inference.steps"`` -> ``(1, 1000)``;
    ``train``: a key of the training configuration), None where there is none or it is open (``gt``/``lt``: the
    schema checks it): what a command's option for the key takes as its range."""
    from lipsyncctl.config import Config
    from lipsyncctl.config_keys import field_bounds

    schema: Any = Config
    if train:
        from lipsyncctl.training.config import TrainConfig

        schema = TrainConfig
    section, _, name = key.partition(".")
    if not name and section in schema.model_fields and not hasattr(schema.model_fields[section].annotation,
                                                                   "model_fields"):
        return None, None  # a top-level key (``name``, ``description``): no bounds
    fields = getattr(schema.model_fields[section].annotation, "model_fields", {}) if section in schema.model_fields \
        else {}
    if name not in fields:
        from lipsyncctl.errors import ConfigError

        raise ConfigError(f"no configuration key {key!r}", hint=f"`lipsyncctl presets keys{' --train' if train else ''}`"
                          " lists them")
    (low, low_in), (high, high_in) = field_bounds(fields[name])
    return low if low_in else None, high if high_in else None


def _paths(inputs: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """A function's inputs: one path or several (one string was read a letter at a time: "m: file not found")."""
    import os

    one = isinstance(inputs, str | bytes | os.PathLike)
    return [Path(os.fsdecode(p)) if isinstance(p, bytes | os.PathLike) else p for p in ([inputs] if one else inputs)]


def _check_jobs(jobs: int) -> None:
    """UsageError (exit 2) for a ``jobs`` outside :data:`lipsyncctl.config.JOBS`, before any input is read."""
    from lipsyncctl.config import JOBS, check_count

    check_count("--jobs", jobs, JOBS)


def _check_seconds(start: float | None, end: float | None, of: str) -> None:
    """UsageError (exit 2) when ``end`` is not after ``start`` (0 when not given): before anything is read or a model
    looked for (it was exit 4 on a machine without the model, exit 2 on one with it)."""
    from lipsyncctl.errors import UsageError

    if end is not None and end <= (start or 0):
        raise UsageError(f"--end {end:g} is not after --start {start or 0:g}", hint=f"both are seconds {of}")


def _refuse_unused_crf(config: Config, flags: Mapping[str, Any]) -> None:
    """A CRF given as a flag for a codec that has none (ProRes, DNxHR, FFV1) is a usage error: the encoder would
    ignore it and the user would believe the quality was set (from a preset or --set it is left alone: a
    preset's CRF serves its default codec)."""
    from lipsyncctl.errors import UsageError
    from lipsyncctl.pipeline.output import takes_crf

    for section in ("output", "prep"):
        crf, codec = flags.get(f"{section}.crf"), getattr(config, section).codec
        if crf is not None and not takes_crf(codec):
            raise UsageError(f"--crf {crf}: the {codec} codec has no CRF",
                             hint="CRF sets the quality of h264 and h265; ffv1 is lossless, ProRes and DNxHR "
                                  "are sized by their profile (prores_hq, prores_4444, dnxhr_hq)")


# ---- sync: one clip, a batch with loaded networks, an edit --------------------------------------

def sync(
    video: str | Path,
    audio: str | Path,
    output: str | Path,
    config: Config | str | Path | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
    frames: tuple[int, int] | None = None,
    networks: Networks | None = None,
    overwrite: bool = False,
    face_cache: str | Path | None = None,
    delivery: OutputOptions | None = None,
) -> SyncResult:
    """Lip-sync one clip: re-render the mouth in ``video`` to match ``audio`` and write ``output``.

    Args:
        video: the picture (any container/codec PyAV decodes).
        audio: the new dialogue (WAV/FLAC/AAC..., or a file with an audio stream), from its own start (an
            MPEG-TS's first sample); ``video`` itself: its own sound as it plays with the frames rendered.
        output: the result; its extension picks the container. Never an input file.
        config: a resolved run configuration (:func:`resolve_config`), or a preset's name or file; None = the
            built-in defaults.
            The face to follow is ``config.faces`` (``select``: largest, id, point or speaker;
            ``track_id``; ``point``), recorded in ``OUT.run.yaml``.
        start, end: seconds of ``video`` to use (the audio's first sample goes with the frame at ``start``); or
        frames: exactly the source frames ``[first, stop)``.
        networks: networks already loaded (:class:`LipSyncPipeline` holds them for a batch); None loads
            them, after the face pass (no face anywhere fails without loading).
        overwrite: replace an existing ``output``; False (default) raises UsageError before any work.
        face_cache: a ``.npz`` file the face pass is read from when it holds these frames' faces, else written
            to (:func:`lipsyncctl.pipeline.clip.sync_clip`).
        delivery: for an intermediate ``output`` that the caller re-encodes itself (a timeline's shots: a lossless
            render, then the run's codec), the settings of that final encode: what the run says of the source's
            fields, HDR10 metadata and bit depth speaks of those, and the warnings of the final file (a silent dub,
            aspect, dropped streams, tags) are the caller's to give. Nothing is re-encoded here. None: ``output`` is
            the delivery, in ``config.output``.

    Returns:
        :class:`~lipsyncctl.pipeline.clip.SyncResult` (frames, faces found, no-face frames, time per
        stage, warnings such as the tiny model's "not lip-synced").
    """
    from lipsyncctl.pipeline.clip import sync_clip

    _check_seconds(start, end, "of the video")
    _reproducible_math()
    _not_empty(video=video, audio=audio, output=output)
    return sync_clip(Path(video), Path(audio), Path(output), _as_config(config), start=start, end=end,
                     frames=frames, networks=networks, overwrite=overwrite,
                     face_cache=Path(face_cache) if face_cache is not None else None, delivery=delivery)


def sync_batch(list_file: str | Path, config: Config | str | Path | None = None, *, overwrite: bool = False,
               networks: Networks | None = None, dry_run: bool = False, jobs: int = 1,
               gpus: str | Sequence[str] | None = None, shard: str | tuple[int, int] | None = None,
               backend: str = "local") -> BatchResult:
    """Lip-sync every clip of a CSV list (``video,audio,output[,start,end]``, paths relative to the list; see
    :mod:`lipsyncctl.pipeline.batch`) with the networks loaded once. A clip whose output exists is skipped unless
    ``overwrite``; a clip's failure is its item's ``reason`` and the others go on (``result.ok`` is False, as with a
    row another run is still rendering: ``busy``).
    ``dry_run``: each row ``planned`` (its inputs probed), ``skipped`` or ``failed``; nothing loaded or written.
    ``jobs``, ``gpus`` (``"0,1"``), ``backend`` (``"ray"``): the rows on worker processes, one set of networks
    each, as for a timeline's shots (``networks`` serve the rows of this process only); ``shard`` (``"I/N"`` or
    ``"auto"``): only that part of the rows. ``list_file`` ``"-"`` reads the list from standard input.

    Raises:
        MediaError: no such list; UsageError: a bad list (names the line), a bad ``gpus``, ``shard`` or
            ``backend``; MissingModelError: a model, the face detector or the device.
    """
    from lipsyncctl.pipeline.batch import read_batch
    from lipsyncctl.pipeline.batch import sync_batch as _sync_batch

    _check_jobs(jobs)
    from lipsyncctl.runner.devices import parse_gpus
    from lipsyncctl.runner.shards import parse_shard

    _reproducible_math()
    part = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    devices = parse_gpus(gpus) if isinstance(gpus, str) or gpus is None else list(gpus)
    rows = read_batch(list_file)
    return _sync_batch(rows, _as_config(config), list_file=Path(list_file), overwrite=overwrite, networks=networks,
                       dry_run=dry_run, jobs=jobs, gpus=devices, shard=part, backend=backend)


def score(videos: str | Path | Sequence[str | Path], config: Config | str | Path | None = None, *,
          audio: str | Path | None = None,
          start: float | None = None, end: float | None = None, min_sync: float | None = None) -> ScoreResult:
    """How well the mouth of each clip matches a sound track: LSE-C / LSE-D (``lipsyncctl score``).

    Args:
        videos: one clip or several (a sync's output, a source picture...).
        config: a resolved configuration: ``inference.device``, ``faces.backend`` (the approximate scale's face
            detector) and ``sync.deinterlace`` are used; None = the built-in defaults.
        audio: the sound to measure against, for every clip; None = each clip's own sound.
        start, end: seconds of each clip to measure (the sound from ``start`` too).
        min_sync: a clip whose LSE-C is under it, or that cannot be measured, does not pass (``result.failed``).

    Returns:
        :class:`~lipsyncctl.pipeline.score.ScoreResult`: per clip its status (ok, under_min_sync, unmeasured,
        failed), LSE-C, LSE-D, offset and face tracks; the scale (official with ``sfd-face`` installed, else
        approximate) and the evaluation SyncNet's provenance.

    Raises:
        MissingModelError: ``syncnet-v2`` is not installed (``lipsyncctl models fetch syncnet-v2 sfd-face``).
        MediaError: a clip or ``audio`` that is not there.
    """
    from lipsyncctl.errors import UsageError
    from lipsyncctl.pipeline.score import score_clips

    paths = _paths(videos)
    if not paths:
        raise UsageError("no clip to score", hint="give one clip or more")
    _check_seconds(start, end, "of each clip")
    _not_empty(**{f"video {i + 1}": p for i, p in enumerate(paths)}, **({"audio": audio} if audio is not None else {}))
    _reproducible_math()
    return score_clips([Path(p) for p in paths], _as_config(config), audio=Path(audio) if audio is not None else None,
                       start=start, end=end, min_sync=min_sync)


def load_pipeline(preset: str | Path = "latentsync-1.5", *, sets: Iterable[str] = (), device: str | None = None,
                  dtype: str | None = None) -> LipSyncPipeline:
    """A :class:`LipSyncPipeline` for ``preset``: the networks loaded once, then ``pipe(video, audio, out)``
    per clip (like ``whisper.load_model(...)``)."""
    from lipsyncctl.pipeline.lipsync import LipSyncPipeline as _Pipeline

    _reproducible_math()
    return _Pipeline.from_preset(preset, sets=sets, device=device, dtype=dtype)


def timeline_job(
    timeline: str | Path,
    output: str | Path,
    *,
    audio: Sequence[str] = (),
    audio_tracks: Sequence[str] = (),
    audio_offset: str | None = None,
    media_root: str | Path | None = None,
    relink: Sequence[str] = (),
    edl_rate: float | None = None,
    jobs: int = 1,
    gpus: str | Sequence[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    backend: str = "local",
    dry_run: bool = False,
    wait: bool = False,
    conform_me: str | Path | None = None,
    split_scenes: bool = False,
    segments: str | Path | None = None,
) -> TimelineJob:
    """A :class:`~lipsyncctl.timeline.job.TimelineJob` from the words a user types: ``audio`` as
    ``FILE`` or ``LANG=FILE``, ``audio_tracks`` as ``NAME`` or ``LANG=NAME``, ``relink`` as ``OLD=NEW``,
    ``gpus`` as ``"0,1"``, ``shard`` as ``"I/N"`` or ``"auto"`` (array-job variables). ``wait``: when
    another run is writing to ``output``, wait for it instead of raising BusyError. ``conform_me``: an M&E
    file the conform mixes under the dub. ``split_scenes``: ``timeline`` is a flat programme master, cut
    into shots with PySceneDetect first (:mod:`lipsyncctl.timeline.scenes`; ``OUT/scenes.otio``).
    ``segments``: a JSON/YAML file of ranges with their own options (:mod:`lipsyncctl.timeline.ranges`; read
    and checked here: UsageError, or ConfigError for a bad option); ``timeline`` may then be a clip. Raises
    UsageError naming the option for a malformed value, MediaError for a missing ``conform_me`` or
    ``segments`` file (before anything runs)."""
    from lipsyncctl.runner.devices import parse_gpus
    from lipsyncctl.runner.shards import parse_shard
    from lipsyncctl.runner.workers import check_backend
    from lipsyncctl.timeline import dub as dubs
    from lipsyncctl.timeline.ranges import load_segments
    from lipsyncctl.timeline.source import parse_relink
    from lipsyncctl.timeline.types import TimelineJob

    files, tracks = dubs.parse_audio_specs(list(audio)), dubs.parse_track_specs(list(audio_tracks))
    dubs.check_languages([lang for lang, _ in (*files, *tracks)])  # (before any dub is decoded)
    _check_jobs(jobs)
    return TimelineJob(
        timeline=Path(timeline), output=Path(output), audio=files,
        audio_tracks=tracks, audio_offset=audio_offset,
        media_root=Path(media_root) if media_root is not None else None, relink=parse_relink(list(relink)),
        edl_rate=edl_rate, jobs=jobs,
        gpus=parse_gpus(gpus) if isinstance(gpus, str) or gpus is None else list(gpus),
        shard=parse_shard(shard) if isinstance(shard, str) or shard is None else shard,
        backend=check_backend(backend), dry_run=dry_run, wait=wait, conform_me=_existing(conform_me, "--conform-me"),
        split_scenes=split_scenes, segments=load_segments(segments) if segments is not None else None,
    )


def _as_config(config: Config | str | Path | None) -> Config:
    """A function's ``config`` argument: a resolved :class:`~lipsyncctl.config.Config`; None, the defaults; a preset
    name or YAML file (``"tiny"``), that preset (:func:`resolve_config`).

    Raises:
        UsageError: anything else (a training configuration, a dict: named with the call that makes one)."""
    from lipsyncctl.config import Config as _Config

    if config is None:
        return _Config()
    if isinstance(config, str | Path):
        return resolve_config(config)
    if not isinstance(config, _Config):
        from lipsyncctl.errors import UsageError

        train = type(config).__name__ == "TrainConfig"
        raise UsageError(f"config: a {type(config).__name__}, not a run configuration",
                         hint="a training configuration goes to train(), or doctor(train_config=...)" if train
                         else "give lipsyncctl.resolve_config(preset, sets) or a preset name")
    return config


def _reproducible_math() -> None:
    """MKL's alignment-independent mode for this process, before the first matrix product (the face alignment's
    SVD, the networks): the same inputs give the same bits in every process
    (:func:`~lipsyncctl.runner.devices.reproducible_cpu_math`)."""
    from lipsyncctl.runner.devices import reproducible_cpu_math

    reproducible_cpu_math()


def _not_empty(**paths: str | Path) -> None:
    """UsageError for a path given as ``""`` (``Path("")`` is the current folder: a caller's unset value)."""
    for name, value in paths.items():
        if str(value) == "":
            from lipsyncctl.errors import UsageError

            raise UsageError(f"{name}: an empty path", hint="give a file or folder name")


def _present(path: str | Path) -> None:
    """MediaError (exit 5, a missing input as in every command) when the file or folder ``path`` names is not there."""
    if not Path(path).exists():
        from lipsyncctl.errors import MediaError

        raise MediaError(f"{path}: no such file or folder", hint="check the path")


def _existing(path: str | Path | None, option: str) -> Path | None:
    """``path`` as a Path; MediaError naming ``option`` when it is not a file (a missing input: exit 5, as in
    every command)."""
    if path is None:
        return None
    if not Path(path).is_file():
        from lipsyncctl.errors import MediaError

        raise MediaError(f"{option} {path}: file not found", hint="check the path")
    return Path(path)


def sync_timeline(job: TimelineJob, config: Config | str | Path | None = None) -> TimelineResult:
    """Lip-sync every shot of an edit for each dub language (``lipsyncctl sync --timeline``).

    Args:
        job: :class:`~lipsyncctl.timeline.job.TimelineJob` (:func:`timeline_job` builds one).
        config: the resolved run configuration (its ``timeline`` section: handles, non-dialogue mode,
            conform, min-sync); None = the built-in defaults.

    Returns:
        :class:`~lipsyncctl.timeline.job.TimelineResult`; failed shots do not raise (see ``.failed``).
    """
    from lipsyncctl.timeline.job import run_timeline

    _reproducible_math()
    return run_timeline(job, _as_config(config))


def prune(folder: str | Path, *, keep: int = 1, renders: bool = False, dry_run: bool = False,
          wait: bool = False) -> PruneResult:
    """Remove the old versions of each language of a ``sync --timeline`` output ``folder`` (all but the newest
    ``keep`` and ``current``'s; a version holding files its report does not list is left alone) and, with
    ``renders``, the cached renders no kept version uses (``lipsyncctl prune``). ``dry_run``: the same result,
    nothing removed. Returns :class:`~lipsyncctl.timeline.prune.PruneResult` (``freed_bytes``: files whose last
    link went)."""
    from lipsyncctl.timeline.prune import prune_output

    return prune_output(folder, keep=keep, renders=renders, dry_run=dry_run, wait=wait)


# ---- curate ----------------------------------------------------------------------------------

def curate(inputs: str | Path | Sequence[str | Path], data: str | Path, config: Config | str | Path | None = None, *,
           until: str | None = None, force: Sequence[str] = (), dry_run: bool = False, jobs: int = 1,
           shard: str | tuple[int, int] | None = None, backend: str = "local",
           gpus: str | Sequence[str] | None = None, wait: bool = False) -> CurateResult:
    """Turn raw talking-head footage into the spans of a training set in ``data`` (``lipsyncctl curate``),
    resumable stage by stage, with a reason for every rejected piece. ``shard``: ``"I/N"``, ``"auto"``
    (array-job variables) or a tuple; ``until``: the last stage to run (default: every stage built,
    :func:`curate_stages`); ``gpus``: ``"0,1"`` or ``["cuda:0", "cuda:1"]``, one worker per GPU (its clip
    stages load their networks there); ``wait``: when another run is writing to ``data``, wait for it
    instead of raising BusyError; ``dry_run``: run and write nothing, each source's ``to_compute`` the stages
    a run would compute (missing weights a warning). Returns :class:`~lipsyncctl.curation.outcome.CurateResult`;
    raises UsageError naming the option for a malformed value."""
    from lipsyncctl.curation.job import run_curation
    from lipsyncctl.runner.devices import parse_gpus
    from lipsyncctl.runner.shards import parse_shard
    from lipsyncctl.runner.workers import check_backend

    _reproducible_math()
    _check_jobs(jobs)
    inputs = _paths(inputs)
    part = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    devices = parse_gpus(gpus) if isinstance(gpus, str) or gpus is None else list(gpus)
    return run_curation(list(inputs), data, _as_config(config), until=until, force=tuple(force),
                        dry_run=dry_run, jobs=jobs, shard=part, backend=check_backend(backend), gpus=devices,
                        wait=wait)


def curate_report(data: str | Path, config: Config | str | Path | None = None, *, wait: bool = False,
                  dry_run: bool = False) -> CurateResult:
    """Re-decide a curated dataset with ``config.curate``'s thresholds and rebuild its manifest, lists and
    report from the stored measurements (no stage runs; sources still there give the report's thumbnails of
    rejected spans): ``lipsyncctl curate report``. ``dry_run``: decide and count only, write nothing."""
    from lipsyncctl.curation.job import report_curation

    return report_curation(data, _as_config(config), wait=wait, dry_run=dry_run)


def curate_forget(data: str | Path, sources: str | Path | Sequence[str | Path],
                  config: Config | str | Path | None = None, *, wait: bool = False,
                  dry_run: bool = False) -> CurateResult:
    """Take ``sources`` (ids, paths as curated, or folders of them) out of a curated dataset: their records and every
    file curate made of them in DATA, then the views rebuilt without them (``lipsyncctl curate forget``; the
    source files are not touched), with ``config``'s curate settings (None: those the views were written with).
    The result's ``forgotten`` lists them. ``dry_run``: what would go, nothing removed or written."""
    from lipsyncctl.curation.forget import forget_sources

    return forget_sources(data, _paths(sources), None if config is None else _as_config(config), wait=wait,
                          dry_run=dry_run)


def is_curated(data: str | Path) -> bool:
    """Whether ``data`` holds curate's records of a source or more (what ``curate_report`` re-decides)."""
    from lipsyncctl.curation.records import RecordStore

    return Path(data).is_dir() and RecordStore.of(data).any("sources")


def curate_stages() -> list[str]:
    """The curate stages in order (the per-source ones, then the clip stages built so far)."""
    from lipsyncctl.curation.job import stage_names

    return stage_names()


# ---- train -----------------------------------------------------------------------------------

def resolve_train_config(preset: str | Path | Mapping[str, Any] | None = None, sets: Iterable[str] = (),
                         flags: Mapping[str, Any] | None = None) -> TrainConfig:
    """A training configuration: defaults < training ``preset`` (``stage2``, ``tiny``, ... or a YAML path)
    < ``sets`` (``"loss.trepa=0"``) < ``flags`` (dotted key -> value; None = not given)."""
    from lipsyncctl.training.config import resolve_train_config as _resolve

    return _resolve(str(preset) if isinstance(preset, Path) else preset, sets, flags)


def train_presets() -> dict[str, Path]:
    """The built-in training presets by name."""
    from lipsyncctl.training.config import list_train_presets

    return list_train_presets()


def presets(*, train: bool = False) -> list[dict[str, str]]:
    """The built-in presets of sync, prep, score and curate (``train``: of train), each ``{"name", "description",
    "path"}``, the description read from its file (validated: a preset that does not load raises its ConfigError)."""
    from lipsyncctl.config import list_presets, read_preset

    if train:
        from lipsyncctl.training.config import TrainConfig, list_train_presets, presets_dir

        found, kw = list_train_presets(), {"schema": TrainConfig, "folder": presets_dir()}
    else:
        found, kw = list_presets(), {}
    return [{"name": name, "description": " ".join(str(read_preset(str(path), **kw).get("description", "")).split()),
             "path": str(path)} for name, path in found.items()]


def preset(name: str | Path, *, train: bool = False, resolved: bool = True) -> dict[str, Any]:
    """A preset (a built-in name or a YAML file; ``train``: a training preset) validated: merged over the defaults,
    or as written (not ``resolved``).

    Raises:
        ConfigError: no such preset, or one that does not validate (naming its file and key)."""
    from lipsyncctl import config as cfg

    if not train:
        return cfg.resolve(str(name)).to_dict() if resolved else cfg.read_preset(str(name))
    from lipsyncctl.training.config import TrainConfig, preset_source, presets_dir

    if resolved:
        return resolve_train_config(name).to_dict()
    source = preset_source(str(name))
    return source if isinstance(source, dict) else cfg.read_preset(source, schema=TrainConfig, folder=presets_dir())


def train(data: str | Path, out: str | Path, config: TrainConfig | str | Path, *, resume: str | None = None,
          overwrite: bool = False, wait: bool = False) -> TrainResult:
    """Train a UNet (stage 1/2) or a StableSyncNet on a curated dataset into the run folder ``out``
    (``lipsyncctl train``). ``config``: :func:`resolve_train_config`'s, or a training preset's name or YAML file.
    ``resume``: ``"latest"`` or a checkpoint folder (the whole training state);
    ``overwrite``: start over in a folder that holds a run. Under ``torchrun``/``accelerate launch`` every
    process calls this (DDP). Returns :class:`~lipsyncctl.training.loop.TrainResult`.

    Raises:
        BusyError: another run is writing to ``out`` (exit 6; ``wait`` waits for it instead).
        Interrupted: Ctrl-C or SIGTERM stopped it (exit 130); its hint says how to go on (``--resume latest`` from
            the last checkpoint, or the same command when there is none).
    """
    import torch

    from lipsyncctl.errors import Interrupted, UsageError
    from lipsyncctl.training.config import TrainConfig as _TrainConfig
    from lipsyncctl.training.loop import train as _train
    from lipsyncctl.training.state import interrupted_hint

    if isinstance(config, str | Path):
        config = resolve_train_config(config)
    if not isinstance(config, _TrainConfig):
        raise UsageError(f"config: a {type(config).__name__}, not a training configuration",
                         hint="give lipsyncctl.api.resolve_train_config(preset, sets) or a training preset's name "
                         "(a run configuration goes to sync, score, curate)")
    try:  # (the loop sets MKL's reproducible mode itself, and says when it is too late)
        with torch.random.fork_rng(devices=[]):  # the caller's global CPU RNG as it was (the run has its own;
            # a resume sets the CUDA generators to the checkpoint's)
            return _train(config, data=Path(data), out=Path(out), resume=resume, overwrite=overwrite, wait=wait)
    except KeyboardInterrupt:
        raise Interrupted("interrupted", hint=interrupted_hint(Path(out))) from None


def launch_train(argv: Sequence[str], processes: int | None, *, cpu: bool = False,
                 accelerate_config: str | Path | None = None, run: str | Path | None = None,
                 wait: bool = False, resume: str | None = None) -> int:
    """Run ``lipsyncctl train ARGV`` in ``processes`` processes on this machine (one per GPU, or gloo on the
    CPU) through torch's elastic launcher, or through ``accelerate launch`` with ``accelerate_config`` (an
    accelerate config file or a shipped name: ``fsdp``; ``processes`` None keeps the file's count); returns
    the exit status of the group. ``run``: the run folder, locked for the group (BusyError, exit 6, unless
    ``wait``). ``resume``: the ``--resume`` of ARGV, whose checkpoint's process count is checked before any
    process starts (UsageError). Raises ConfigError for an unreadable or unsupported config file."""
    from lipsyncctl.training.launch import launch

    return launch(list(argv), processes, cpu=cpu, accelerate_config=accelerate_config,
                  run=Path(run) if run is not None else None, wait=wait, resume=resume)


# ---- prep, doctor ------------------------------------------------------------------------------

def prep(inputs: str | Path | Sequence[str | Path], out_dir: str | Path, options: PrepOptions | None = None, *,
         force: bool = False, dry_run: bool = False, jobs: int = 1, start: float = 0.0,
         duration: float | None = None, scale: str | None = None) -> PrepResult:
    """Normalise clips for the model (constant frame rate, 16 kHz mono audio) into ``out_dir``.

    ``force``: redo clips whose outputs are up to date; ``dry_run``: plan only; ``jobs``: clips at once;
    ``start``/``duration``: the seconds of each clip kept; ``scale``: ``"0.5"`` or ``"WxH"``. See
    :func:`lipsyncctl.preparation.job.prep` for the details and :class:`lipsyncctl.preparation.job.PrepResult`
    for the result.
    """
    from lipsyncctl.config import PrepOptions as _PrepOptions
    from lipsyncctl.errors import UsageError
    from lipsyncctl.preparation.job import prep as _prep

    inputs = _paths(inputs)
    if options is not None and not isinstance(options, _PrepOptions):
        raise UsageError(f"options: a {type(options).__name__}, not prep's options",
                         hint="give resolve_config(preset, sets).prep, or None for the defaults")
    _not_empty(out_dir=out_dir, **{f"inputs[{i}]": p for i, p in enumerate(inputs)})
    return _prep(inputs, out_dir, options, force=force, dry_run=dry_run, jobs=jobs, start=start, duration=duration,
                 scale=scale)


def doctor(config: Config | str | Path | None = None, *, outputs_dir: str | Path | None = None,
           models_dir: str | Path | None = None, train_config: TrainConfig | None = None) -> DoctorResult:
    """Check Python, torch, GPUs, ffmpeg, PyAV, presets, disk and models; with ``config``, whether this
    machine can run it (device, VRAM estimate against free memory, model files); with ``train_config``, the
    training VRAM estimate against free memory. ``outputs_dir``: where outputs go, which must be writable (None:
    the current folder, where a failed write check only warns). ``models_dir``: where the inference checks look;
    a training preset's files are looked for where ``train`` looks (``LIPSYNCCTL_MODELS`` or the default)."""
    from lipsyncctl.checks.doctor import run_checks

    return run_checks(None if config is None else _as_config(config),
                      Path(outputs_dir) if outputs_dir is not None else None, Path(models_dir) if models_dir is not None else None, train_config=train_config)


# ---- models ------------------------------------------------------------------------------------

def list_models(models_dir: str | Path | None = None) -> ModelsListing:
    """Every known model, installed or not, and where the models directory is."""
    from lipsyncctl.checkpoints.manage import list_models as _list

    return _list(Path(models_dir) if models_dir is not None else None)


def fetch_models(names: Sequence[str], *, force: bool = False, deps: bool = True) -> list[FetchResult]:
    """Download models (and what they require) into the models directory: the one call that downloads."""
    from lipsyncctl.checkpoints.manage import fetch_models as _fetch

    return _fetch(list(names), force=force, deps=deps)


def verify_models(names: Sequence[str] | None = None, *, hashes: bool = True, load: bool = True,
                  record: bool = False) -> list[ModelCheck]:
    """Sizes, sha256 and strict loadability of installed models (default: all of them); see
    :func:`check_models` for the error of a failed check."""
    from lipsyncctl.checkpoints.manage import verify_models as _verify

    return _verify(list(names) if names else None, hashes=hashes, load=load, record=record)


def check_models(checks: Sequence[ModelCheck]) -> None:
    """Raise the error (CheckpointError or MissingModelError, with the fetch command) for failed checks."""
    from lipsyncctl.checkpoints.manage import raise_for_checks

    raise_for_checks(list(checks))


def convert_checkpoint(source: str | Path, output: str | Path, *, kind: str | None = None, config: Any = None,
                       fp16: bool = False, overwrite: bool = False) -> ConvertResult:
    """An official checkpoint as safetensors with its config in the header: ``kind`` (None: told from its tensors),
    its architecture ``config`` (None: the official one), ``fp16`` weights, ``overwrite`` an existing ``output`` (see
    :func:`lipsyncctl.checkpoints.convert.convert_checkpoint`)."""
    from lipsyncctl.checkpoints.convert import convert_checkpoint as _convert

    _present(source)
    return _convert(source, output, kind=kind, config=config, fp16=fp16, overwrite=overwrite)


def inspect_checkpoint(path: str | Path, *, match: bool = True) -> CheckpointInfo:
    """A checkpoint's container, tensors, dtypes and the official config it matches."""
    from lipsyncctl.checkpoints.info import inspect_checkpoint as _inspect

    _present(path)
    return _inspect(path, match=match)


def model_path(name: str, role: str | None = None) -> Path:
    """Where an installed model file lives (MissingModelError when it is not installed)."""
    from lipsyncctl.checkpoints.manage import model_path as _path

    return _path(name, role)


def __getattr__(name: str) -> Any:
    if name == "LipSyncPipeline":
        from lipsyncctl.pipeline.lipsync import LipSyncPipeline

        return LipSyncPipeline
    raise AttributeError(f"module 'lipsyncctl.api' has no attribute {name!r}")
