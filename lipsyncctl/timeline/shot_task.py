"""Render one segment: the only place the timeline job calls the clip pipeline.

A :class:`ShotTask` is plain data (picklable; its configuration is the frozen run
:class:`~lipsyncctl.config.Config`) so it can run in this process, in a local worker process, or on a Ray
worker. :func:`render_shot` runs it and returns a :class:`ShotOutcome`; it never
raises for a shot that fails (the job goes on with the others and reports it), except on Ctrl-C.

Non-dialogue handling (``timeline.non_dialogue``):
- ``render``: the whole shot is rendered with its dub;
- ``close``: the model hears silence outside speech (a closed mouth), the file carries the real dub;
- ``passthrough``: frames outside speech keep the source pixels (rendered losslessly, then spliced).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from lipsyncctl.config import Config
from lipsyncctl.errors import FaceChoiceError, LipsyncError, NoFaceError
from lipsyncctl.timeline.types import ShotOutcome, ShotStatus


@dataclass
class ShotTask:
    """Everything one segment's render needs. Frames are indices into ``video`` at ``fps``."""

    key: str
    language: str
    segment_id: str
    video: str
    fps: str                      # "24000/1001"
    first: int                    # first rendered source frame (head handle included)
    frames: int                   # rendered frames (handles included)
    audio: str                    # WAV of the dub cut, exactly ``frames`` long
    output: str
    config: Config                # this shot's resolved configuration (per-shot options applied)
    model_audio: str | None = None            # what the model hears, if not ``audio`` (close mode)
    keep_source: list[tuple[int, int]] = field(default_factory=list)  # local [lo, hi) kept as source
    timecode: str | None = None   # source timecode of the first rendered frame, written into the render
    reel: str | None = None       # reel name written beside it
    face_cache: str | None = None  # the shot's face-track file, shared by its languages (sync_clip(face_cache=))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config.to_dict()}


def execute_shot(task: ShotTask, cache: dict[str, Any], device: str | None) -> ShotOutcome:
    """The runner's executor (:mod:`lipsyncctl.runner.workers`): :func:`render_shot` with the networks of
    ``cache``, loaded on first use for this model set, device, dtype and GPU tuning (so a worker loads them
    once; a shot whose options ask for other tuning, e.g. ``inference.channels_last`` by a range, gets its
    own copy instead of networks tuned for another shot)."""
    from lipsyncctl.pipeline.networks import cached_networks

    try:
        networks = cached_networks(cache, task.config.with_overrides({"inference.device": device}))
    except LipsyncError as exc:
        return ShotOutcome(ShotStatus.FAILED, task.key, language=task.language, segment=task.segment_id,
                           error=f"{type(exc).__name__}: {exc}", seconds=0.0)
    return render_shot(task, networks=networks, device=device)


def render_shot(task: ShotTask, networks: Any = None, device: str | None = None) -> ShotOutcome:
    """Render ``task``; returns its :class:`~lipsyncctl.timeline.types.ShotOutcome` (status ``done``,
    ``no_face`` or ``failed``, with the error).

    Args:
        networks: a loaded :class:`~lipsyncctl.pipeline.networks.Networks` to reuse (None = load).
        device: run on this device (``cuda:1``) whatever the task's configuration says.

    Its messages start with the shot's ``language/segment`` (``de/shot_003: faces: reused ...``).
    """
    from lipsyncctl import progress

    with progress.labelled(f"{task.language}/{task.segment_id}"):
        return _render(task, networks, device)


def _render(task: ShotTask, networks: Any, device: str | None) -> ShotOutcome:
    from lipsyncctl.pipeline.clip import sync_clip

    t0 = time.perf_counter()
    config = task.config.with_overrides({"inference.device": device}, source=f"segment {task.segment_id}")
    frames = (task.first, task.first + task.frames)  # exact source frames, never via seconds
    output = Path(task.output)

    def outcome(status: ShotStatus, **values: Any) -> ShotOutcome:
        base = {"language": task.language, "segment": task.segment_id, "frames": task.frames, "faces_found": 0,
                "no_face_frames": task.frames, "seconds": time.perf_counter() - t0}
        return ShotOutcome(status, task.key, **{**base, **values})

    needs_post = bool(task.keep_source) or task.model_audio is not None
    face_cache = Path(task.face_cache) if task.face_cache else None
    try:
        if not needs_post:
            res = sync_clip(Path(task.video), Path(task.audio), output, config, frames=frames, networks=networks,
                            overwrite=True,  # the job owns its shot files: a changed shot replaces its render
                            face_cache=face_cache)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            from lipsyncctl.media.atomic import sweep_temps, temp_prefix

            sweep_temps(output.parent, stem=output.stem)
            with tempfile.TemporaryDirectory(dir=output.parent, prefix=temp_prefix(output)) as tmp:
                raw = Path(tmp) / "render.mkv"
                raw_config = config.with_overrides({"output.codec": "ffv1", "output.matte": False})
                res = sync_clip(Path(task.video), Path(task.model_audio or task.audio), raw, raw_config,
                                frames=frames, networks=networks, face_cache=face_cache, delivery=config.output)
                _finish(task, raw, output, config)
    except FaceChoiceError as exc:  # the edit's face choice (lipsync: {face: 7}) names no face there: a shot to fix,
        return outcome(ShotStatus.FAILED, error=f"{type(exc).__name__}: {exc}")  # not one without a face (exit 1)
    except NoFaceError as exc:
        return outcome(ShotStatus.NO_FACE, error=str(exc))
    except LipsyncError as exc:
        return outcome(ShotStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a GPU out of memory, a decoder's error...: this shot fails, the
        # run goes on with the others and reports it (Ctrl-C and SIGTERM, BaseExceptions, still stop the run)
        return outcome(ShotStatus.FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
    if res.frames != task.frames:
        return outcome(ShotStatus.FAILED, error=f"rendered {res.frames} frames, expected {task.frames}")
    if task.timecode is not None:  # so an NLE relinks the render by timecode and reel
        from lipsyncctl.timeline.mediaio import stamp_timecode

        try:
            stamp_timecode(output, task.timecode, task.reel, inputs=(Path(task.video), Path(task.audio)))
        except LipsyncError as exc:
            return outcome(ShotStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    return outcome(ShotStatus.DONE, output=str(output), faces_found=res.faces_found,
                   no_face_frames=res.no_face_frames, warnings=list(res.warnings))


def _finish(task: ShotTask, raw: Path, output: Path, config: Any) -> None:
    """Splice source frames into the lossless render where asked, encode with the run's codec, and mux
    the real dub. As the clip pipeline's own output, every frame starts from the source's stored pixels and
    only what the render changed is replaced (:mod:`lipsyncctl.media.splice`)."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.media.atomic import write_error
    from lipsyncctl.media.probe import probe
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.media.splice import Splicer
    from lipsyncctl.timeline.mediaio import mux, read_audio, read_frames, video_writer

    vinfo = probe(Path(task.video), sequence_fps=Fraction(task.fps)).video  # (an image sequence's rate)
    keep = [False] * task.frames
    for lo, hi in task.keep_source:
        for i in range(max(lo, 0), min(hi, task.frames)):
            keep[i] = True
    video_only = raw.with_name(f"video{output.suffix}")
    try:
        with video_writer(video_only, Fraction(task.fps), config, color=vinfo.color,
                          source_pix_fmt=vinfo.pix_fmt, sample_aspect=vinfo.sample_aspect,
                          field_order=vinfo.field_order) as writer, \
                IndexedReader(Path(task.video), Fraction(task.fps)) as reader:  # the grid of read_frames
            splicer = Splicer(writer.pix_fmt)
            source = reader.pictures(task.first, task.first + task.frames)
            for i, rgb in enumerate(read_frames(raw, 0, task.frames)):
                _, src_rgb, src_frame = next(source)
                out = src_rgb if keep[i] else rgb
                spliced = splicer.frame(src_frame, src_rgb, out) if splicer.active else None
                writer.write(out if spliced is None else spliced)
    except WriteError as exc:  # its temporary file: name the shot
        raise write_error(output, exc) from exc
    audio, rate = read_audio(Path(task.audio))
    mux(video_only, audio, rate, output, config.output.audio_codec, inputs=(Path(task.video), Path(task.audio)))
