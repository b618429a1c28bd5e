"""The library's entry points: typed options in, ``*Result`` out. The CLI is a thin layer over these.

Each function resolves nothing from the environment beyond what its arguments say (the run
configuration comes resolved from :func:`lipsyncctl.config.resolve`), reports progress through
:mod:`lipsyncctl.progress` and raises :class:`lipsyncctl.errors.LipsyncError` subclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.pipeline.clip import SyncResult
    from lipsyncctl.pipeline.networks import Networks
    from lipsyncctl.timeline.job import TimelineJob, TimelineResult


def sync(
    video: str | Path,
    audio: str | Path,
    output: str | Path,
    config: Config | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
    face_id: int | None = None,
    face_at: tuple[float, float] | None = None,
    networks: Networks | None = None,
) -> SyncResult:
    """Lip-sync one clip: re-render the mouth in ``video`` to match ``audio`` and write ``output``.

    Args:
        video: the picture (any container/codec PyAV decodes).
        audio: the new dialogue (WAV/FLAC/AAC..., or a file with an audio stream).
        output: the result; its extension picks the container. Never an input file.
        config: a resolved run configuration (``lipsyncctl.config.resolve("latentsync-1.5")``);
            None = the built-in defaults.
        start, end: seconds of ``video`` to use (the audio starts at ``start``).
        face_id: follow this face track id; face_at: follow the face at pixel ``(x, y)``. Either one
            overrides ``faces.select`` (as ``id`` / ``point``) and is recorded in ``OUT.run.yaml``;
            ``config.faces`` can say the same (``select``, ``track_id``, ``point``).
        networks: networks already loaded with :func:`lipsyncctl.pipeline.networks.load_networks` (a batch
            reuses them); None loads them, after the face pass (no face anywhere fails without loading).

    Returns:
        :class:`~lipsyncctl.pipeline.clip.SyncResult` (frames, faces found, no-face frames, time per
        stage, warnings such as the tiny model's "not lip-synced").
    """
    from lipsyncctl.config import Config as _Config
    from lipsyncctl.pipeline.clip import sync_clip

    return sync_clip(Path(video), Path(audio), Path(output), config or _Config(), start=start, end=end,
                     face_id=face_id, face_at=face_at, networks=networks)


def prep(inputs, out_dir, options=None, **kwargs):  # type: ignore[no-untyped-def]
    """Normalise clips for the model (constant frame rate, 16 kHz mono audio) into ``out_dir``.

    See :func:`lipsyncctl.prep.job.prep` for the arguments (``force``, ``dry_run``, ``jobs``, ``start``,
    ``duration``, ``scale``) and :class:`lipsyncctl.prep.job.PrepResult` for the result.
    """
    from lipsyncctl.prep import prep as _prep

    return _prep(inputs, out_dir, options, **kwargs)


def sync_timeline(job: TimelineJob, config: Config | None = None) -> TimelineResult:
    """Lip-sync every shot of an edit for each dub language (``lipsyncctl sync --timeline``).

    Args:
        job: :class:`~lipsyncctl.timeline.job.TimelineJob` (timeline file, output folder, dubs,
            relinking, workers/shard/backend, dry run).
        config: the resolved run configuration (its ``timeline`` section: handles, non-dialogue mode,
            conform, min-sync); None = the built-in defaults.

    Returns:
        :class:`~lipsyncctl.timeline.job.TimelineResult`; failed shots do not raise (see ``.failed``).
    """
    from lipsyncctl.config import Config as _Config
    from lipsyncctl.timeline.job import run_timeline

    return run_timeline(job, config or _Config())
