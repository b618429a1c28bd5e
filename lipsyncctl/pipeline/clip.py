"""The sync pipeline for one clip (DESIGN.md §3), as numbered steps.

Memory stays bounded whatever the clip length: frames are decoded in a streaming way, and only a few windows of
frames (``inference.window``, 16 officially) are held at a time. With ``inference.pipelined`` and ``faces.select:
largest`` the clip is decoded once (the render reads the frames the face pass decoded, kept until it has read
past them); otherwise twice (once for the faces, once for rendering).
What is kept for the whole clip: one face record per source frame, the new audio at 16 kHz mono (64 kB per
second) and its whisper features (50 x 5 x 384 floats per second of audio), both past 2 minutes in unnamed files
beside the output, mapped, not in memory (the log-mel between them is taken a window at a time). The new audio at its own rate is streamed from its file into the
output, never held.

The steps, numbered as DESIGN §3 numbers them, in the order the code runs them (the faces first: a clip with no
face fails before a network loads):

1. Probe the inputs, check the output, plan the output frames (:mod:`lipsyncctl.pipeline.plan`).
3. Faces: detect + track + smooth over the selected source frames, choose the speaker, and compute
   the official alignment matrix per frame (no face -> the frame passes through;
   :mod:`lipsyncctl.pipeline.faces`). A clip with no face anywhere stops here, before any network loads.
   Pipelined with ``select: largest`` the pass goes on in a thread of its own once it has found a face
   (:class:`~lipsyncctl.pipeline.faces.FaceStream`): the networks load, the audio features and the render
   run beside it, the render waiting for each frame's record (the same records, so the same output bytes)
   and reading the frames the pass decoded (:meth:`~lipsyncctl.pipeline.faces.FaceStream.reader`).
   Then the networks load (:mod:`lipsyncctl.pipeline.networks`).
2. Audio features: whisper over the new audio up to the last output frame's context, once.
4-8. Render, window by window: read frames -> align -> condition (masks, VAE encode) -> denoise -> decode and
   paste back -> encode (:mod:`lipsyncctl.pipeline.render`). Frames without a face are written unchanged. Then
   mux the new audio (its own rate and channels, cut or padded with silence to the picture), rename the output
   (and matte) into place and write ``run.yaml`` beside it (:mod:`lipsyncctl.pipeline.output`). Until that rename
   everything lives in a hidden temporary folder beside the output, removed on any failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.audio import MODEL_AUDIO_RATE
from lipsyncctl.errors import MediaError, NoFaceError, UsageError
from lipsyncctl.media.container import exists, is_image_sequence, sequence_file, sequence_files
from lipsyncctl.media.rates import exact
from lipsyncctl.pipeline.output import matte_path, record_sharers, run_yaml_path
from lipsyncctl.pipeline.plan import (
    ClipPlan,
    end_clamp_warning,
    length_mismatch_warning,
    picture_samples,
    plan_clip,
    select_frames,
    select_range,
)

if TYPE_CHECKING:
    from lipsyncctl.config import Config, FaceSelect, OutputOptions
    from lipsyncctl.media.probe import AudioInfo, MediaInfo, VideoInfo
    from lipsyncctl.pipeline.faces import FacePlan, FaceStream
    from lipsyncctl.pipeline.networks import Networks

__all__ = ["SyncResult", "matte_path", "run_yaml_path", "sync_clip"]


@dataclass
class SyncResult:
    """What ``sync`` produced (``--json`` prints :meth:`to_dict`)."""

    output: Path
    frames: int
    fps: Fraction
    width: int
    height: int
    duration: float
    audio_seconds: float
    faces_found: int
    no_face_frames: int
    plan: dict[str, Any]
    detector: str
    stage_seconds: dict[str, float]
    run_yaml: Path | None = None
    matte: Path | None = None
    warnings: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    face_select: FaceSelect = "largest"  # the faces.select word that chose the face (FacePlan.selection)
    face_track: int | None = None
    faces_reused: bool = False  # the face pass was read from ``face_cache`` instead of tracked
    #: an image-sequence output's files: its first and last (``shot.1001.png``, ``shot.1240.png``); None for a video
    files: tuple[Path, Path] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "frames": self.frames,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "width": self.width,
            "height": self.height,
            "duration": round(self.duration, 6),
            "audio_seconds": round(self.audio_seconds, 6),
            "faces_found": self.faces_found,
            "no_face_frames": self.no_face_frames,
            "plan": self.plan,
            "detector": self.detector,
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "run_yaml": str(self.run_yaml) if self.run_yaml else None,
            "matte": str(self.matte) if self.matte else None,
            "warnings": list(self.warnings),
            "models": dict(self.models),
            "face_select": self.face_select,
            "face_track": self.face_track,
            "faces_reused": self.faces_reused,
            **({"files": [str(p) for p in self.files]} if self.files else {}),
        }


class _Clock:
    """Wall time per stage (stages may be entered many times)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0




def sync_clip(
    video: Path,
    audio: Path,
    output: Path,
    config: Config,
    *,
    start: float | None = None,
    end: float | None = None,
    frames: tuple[int, int] | None = None,
    networks: Networks | None = None,
    overwrite: bool = False,
    face_cache: Path | None = None,
    delivery: OutputOptions | None = None,
) -> SyncResult:
    """Re-render the speaker's mouth in ``video`` to match ``audio``; write ``output``.

    Args:
        start, end: seconds of ``video`` to use (from the frame on screen at ``start``:
            :func:`~lipsyncctl.pipeline.plan.select_range`); the new audio's first sample goes with that frame
            (:func:`dub_origin`: a dub from its own start, the clip's own sound from that frame's time).
        frames: or exactly the source frames ``[first, stop)`` on the clip's constant-rate grid (what an
            edit list says; not with ``start``/``end``).
        The face to follow is ``config.faces`` (``select``, ``track_id``, ``point``), recorded in run.yaml.
        networks: networks already loaded (a batch reuses them); None loads them after the face pass.
        overwrite: replace an existing ``output``; False (default) refuses before any work.
        face_cache: a file (``.npz``) for the face pass: when it holds the faces of these source frames
            (same file fingerprint, frames, fps, ``config.faces``, resolution, and for ``select: speaker``
            the same audio), they are read instead of tracked again (``SyncResult.faces_reused``); otherwise
            the faces are tracked and written there (atomically). A corrupt or stale file is ignored and
            replaced, never trusted. The output is the same bytes either way. None (default): no cache.
        delivery: the output settings the picture is finally delivered in, when ``output`` is an intermediate
            that the caller re-encodes (the timeline's shots: a lossless render, then the run's codec): what the
            run says of the source's fields and HDR10 metadata speaks of those. None: ``config.output``.

    Raises:
        MediaError: missing/unreadable inputs, no video stream, no audio stream.
        NoFaceError: no usable face in any selected frame (raised before any network loads).
        ConfigError: the output container cannot hold the codec.
        UsageError: both ``frames`` and ``start``/``end``; ``output`` exists and not ``overwrite``; ``output``
            is an input.
        MissingModelError / CheckpointError / DeviceError: see their docs.
    """
    from lipsyncctl.media.atomic import OVERWRITE_HINT, check_not_input, check_writable
    from lipsyncctl.media.audio import loudest_channel, read_audio_and_length
    from lipsyncctl.media.mux import tags_not_carried
    from lipsyncctl.media.rates import parse_rate
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.media.writer import check_container_rate
    from lipsyncctl.pipeline import faces as face_pass
    from lipsyncctl.pipeline.output import (
        alpha_warning,
        aspect_warning,
        audio_rate_warning,
        check_frame_size,
        check_output,
        check_record,
        depth_warning,
        dropped_streams_warning,
        float_picture_warning,
        hdr10_warning,
        interlace_warning,
        level_warning,
        sequence_warnings,
        vfr_warning,
    )
    from lipsyncctl.runner.lock import output_lock

    clock = _Clock()
    video, audio, output = Path(video), Path(audio), Path(output)
    if frames is not None and (start is not None or end is not None):
        raise UsageError("give a frame range or start/end seconds, not both")
    warnings: list[str] = []
    check_output(output, config.output)  # first: `-o .` or `-o /` has no name to make the matte's or record's of
    matte_out = matte_path(output) if config.output.matte else None

    # 1. Probe and plan (the steps are DESIGN §3's); check the output.
    check_found(video, audio)
    for path in (output, matte_out, run_yaml_path(output)):
        if path is not None:
            check_not_input(path, [video, audio])
    for path in (output, matte_out):
        if path is not None and not overwrite and (exists(path) or os.path.islink(path)):
            from lipsyncctl.errors import OutputExistsError

            # (a stale link holds the name too: the render's rename would find it taken after the whole clip)
            what = "exists" if exists(path) else f"a symbolic link to nothing (-> {os.readlink(path)}) holds the name"
            raise OutputExistsError(f"{path}: {what}; refusing to replace it", hint=OVERWRITE_HINT)
    check_record(output)  # x.run.yaml of an x.mov beside this x.mkv stays x.mov's
    check_writable(output)  # a read-only destination fails now, not after the render
    stale_matte = _stale_matte(output, [video, audio]) if overwrite and matte_out is None else None
    files = None
    if networks is None:  # missing weights, a refused device or dtype fail here, before minutes of face tracking
        from lipsyncctl.pipeline.networks import check_inference, resolve_files

        files = resolve_files(config.model)
        check_inference(config.inference)
    else:  # loaded for another model, resolution, dtype or GPU options than this run's: said now, not ignored
        from lipsyncctl.pipeline.networks import check_loaded

        check_loaded(networks, config)
    with clock("probe"):
        inputs = probe_inputs(video, audio, config.sync.audio_stream, config.sync.sequence_fps)
        info, audio_stream = inputs.info, inputs.dub.index
        if inputs.several:
            warnings.append(inputs.several)
        vinfo = info.video
        grid = vinfo.nominal_fps
        total = grid_frames(vinfo)
        first, stop = select_range(total, grid, start, end) if frames is None else select_frames(total, *frames)
        # One decode of the dub: the model's 16 kHz copy (a long one mapped from a file beside the output) and its
        # length at its own rate (the plan's); the output streams the original from the file at the mux. The
        # clip's own sound from the first frame rendered (as it plays with it), a dub from its start.
        dub_start = inputs.origin + (Fraction(first) / grid if inputs.same else 0)
        mono, audio_samples, audio_rate = read_audio_and_length(audio, MODEL_AUDIO_RATE, 1, stream_index=audio_stream,
                                                                 folder=_scratch_folder(output), start=dub_start)
        if audio_samples <= 0:
            raise MediaError(f"{audio}: the audio stream is empty" + (" from --start on" if first else ""))
        if inputs.same:  # the clip's own sound ends with the frames rendered, as it plays with them
            shown = picture_samples(stop - first, grid, audio_rate)
            if audio_samples - shown > audio_rate / grid and stop == total and end is None:
                warnings.append(f"the clip's own sound runs {(audio_samples - shown) / audio_rate:.3f} s past its "
                                "last frame: cut there (the length policy applies to a sound shorter than the "
                                "picture)")
            audio_samples = min(audio_samples, shown)
        # a timeline's shot (its output an intermediate render) may have no dialogue: its silence is no mistake
        if level := level_warning(inputs.dub.codec, mono, several=inputs.several is not None,
                                  silent=delivery is None,
                                  channel_peak=lambda: loudest_channel(audio, stream_index=audio_stream,
                                                                       start=dub_start)):
            warnings.append(level)
    check_frame_size(output, config.output, vinfo.pix_fmt, vinfo.display_size)
    check_point(config, vinfo.display_size)
    clamped = end_clamp_warning(total, grid, end)
    if clamped:
        warnings.append(clamped)
    out_fps = None if config.sync.fps == "source" else parse_rate(config.sync.fps)  # 29.97: 30000/1001
    plan = plan_clip(stop - first, grid, audio_samples, audio_rate, config.sync.length_policy, fps=out_fps,
                     first_frame=first)
    try:  # an MXF holds the SMPTE rates only: said before any work; the source's rate is its media's (5), a rate
        check_container_rate(output, plan.fps)  # asked for (--fps) the user's choice (2)
    except MediaError as exc:
        if out_fps is None:
            raise
        raise UsageError(f"sync.fps {config.sync.fps} (--fps): {exc.message}", hint=exc.hint) from None
    number = _first_number(video, plan, config)  # an image-sequence output's first file
    mismatch = length_mismatch_warning(plan, start, end) if frames is None else None  # an edit's range: exact
    if mismatch:
        warnings.append(mismatch)
    resampled = audio_rate_warning(output, config.output, audio_rate)
    if resampled:
        warnings.append(resampled)
    if vinfo.is_vfr:
        warnings.append(vfr_warning(vinfo.fps, grid))
    delivered = delivery or config.output
    sequence = is_image_sequence(output)
    if vinfo.interlaced:
        warnings.append(interlace_warning(delivered, vinfo.fields, vinfo.field_order, config.sync.deinterlace,
                                          sequence=sequence))
    if hdr10 := hdr10_warning(delivered, vinfo.color, sequence=sequence):
        warnings.append(hdr10)
    if floating := float_picture_warning(vinfo.pix_fmt):
        warnings.append(floating)
    # (a timeline's shot rendered to a lossless intermediate is re-encoded as delivered, through the same splice)
    lost = [alpha_warning(vinfo.pix_fmt),
            None if sequence else depth_warning(delivered, vinfo.pix_fmt, turned=vinfo.rotation % 360 != 0)]
    if delivery is None:  # the output is the delivery (an intermediate's final file, a timeline shot's, is the caller's)
        lost += [aspect_warning(output, config.output, vinfo.sample_aspect), dropped_streams_warning(info.others),
                 None if sequence else tags_not_carried(output, info.timecode, info.reel)]
    warnings.extend(w for w in lost if w)
    warnings.extend(sequence_warnings(output, config.output))

    # The faces of the source frames the output shows, and a cross-fade's look-ahead past them (the frames after
    # a cut by a shorter dub are not tracked: minutes on a long clip, and a pass beside the render waited for them).
    face_frames = min(plan.source_frames, plan.shown_source_frames() + config.faces.crossfade_frames + 1)
    # an interlaced source's faces are found and rendered from progressive pictures, pasted onto its own frames
    with output_lock(run_yaml_path(output), what=output, shared=record_sharers(output)), \
            IndexedReader(video, grid, info=info, deinterlace=config.sync.deinterlace == "auto") as reader:
        # 3. Faces over the selected source frames, first: before any network loads (fail fast). Pipelined, the pass
        # runs beside the networks and the render (FaceStream) once it has found a face.
        with clock("faces"):
            faces, faces_reused = face_pass.cached_clip_faces(
                face_cache, video, reader, first, face_frames, grid, config.faces, config.model.resolution,
                device=_detector_device(config, networks), audio_16k=mono if config.faces.select == "speaker" else None,
                concurrent=config.inference.pipelined, info=info, keep=_frames_kept(config))
        stream = faces if isinstance(faces, face_pass.FaceStream) else None
        try:
            if not (stream.first_face() if stream is not None else faces.found > 0):
                raise NoFaceError(f"{video}: no usable face in any of the {face_frames} selected frames",
                                  hint="check --start/--end, or try another detector (--detector)")
            said_at = len(warnings)  # the face pass's warnings go here, once it has ended (a stream: after the render)

            # The networks, once a face is found (a clip without one fails without loading them).
            if networks is None:
                with clock("load models"):
                    from lipsyncctl.pipeline.networks import load_networks

                    networks = load_networks(config, files)
            if networks.is_tiny:
                from lipsyncctl.checkpoints.tiny import NOT_LIP_SYNCED

                progress.warning(NOT_LIP_SYNCED)  # now, before minutes of work; the CLI does not repeat it
                warnings.append(NOT_LIP_SYNCED)
            from lipsyncctl.pipeline.networks import mask_warning

            if said := mask_warning(networks, config.model.mask):  # (this run's mask: loaded networks serve many)
                progress.warning(said)
                warnings.append(said)

            # 2. Audio features, once, up to the last output frame (padded with silence to the output length).
            with clock("audio features"):
                features = _audio_features(networks, mono, plan, _scratch_folder(output))
            del mono

            # 4-8. Align, condition, denoise, decode and paste, encode (render.py); mux; the face pass's end and the run's record; rename into place.
            source = stream.reader(reader) if stream is not None else reader  # one decode when the pass streams
            done: list[Any] = []  # (faces, no_face_out, run_yaml) from settle()

            def settle(final: Path, matte_final: Path | None) -> None:
                whole = faces
                if stream is not None:
                    whole = stream.result()  # done, or nearly: the render has asked for the frames it shows
                    clock.seconds["faces"] = stream.seconds  # its own wall time, beside the other stages
                assert not isinstance(whole, face_pass.FaceStream)
                said, no_face = _face_warnings(whole, plan, first)
                warnings[said_at:said_at] = said
                done.extend([whole, no_face, _write_run_yaml(output, config, plan, video, audio, networks, whole,
                                                             plan.num_frames - no_face, final, matte_final)])

            _render_and_write(source, vinfo, plan, faces, features, networks, config, clock, video, audio, output,
                              matte_out, settle, timecode=_output_timecode(info, plan, output),
                              audio_stream=audio_stream, audio_start=dub_start, start_number=number,
                              overwrite=overwrite)
            if stale_matte is not None:  # the matte of the take this one replaced no longer matches it
                for stale in sequence_files(stale_matte) if is_image_sequence(stale_matte) else [stale_matte]:
                    stale.unlink(missing_ok=True)
        finally:
            if stream is not None:
                stream.close()
    faces, no_face_out, run_yaml = done
    width, height = vinfo.display_size
    return SyncResult(
        output=output, frames=plan.num_frames, fps=plan.fps, width=width, height=height,
        duration=plan.duration, audio_seconds=plan.audio_seconds,
        faces_found=plan.num_frames - no_face_out, no_face_frames=no_face_out, plan=plan.to_dict(),
        detector=faces.detector, stage_seconds=dict(clock.seconds), run_yaml=run_yaml, matte=matte_out,
        warnings=warnings, models=dict(networks.files), face_select=faces.selection, face_track=faces.track_id,
        faces_reused=faces_reused,
        files=(sequence_file(output, number), sequence_file(output, number + plan.num_frames - 1))
        if is_image_sequence(output) else None,
    )


def _stale_matte(output: Path, inputs: list[Path]) -> Path | None:
    """The matte of the take at ``output`` that a render without ``--matte`` replaces (removed once the new take is
    in place: it no longer matches it): only the file the take's record says its render wrote (``OUT.matte.EXT`` of
    another origin, a compositor's roto put in its place since, an input named so, is not lipsyncctl's to remove;
    an image sequence's frames are not recorded: its record's matte flag says)."""
    from lipsyncctl.media.atomic import same_file
    from lipsyncctl.pipeline.output import read_record
    from lipsyncctl.runner.store import same_content

    matte = matte_path(output)
    if not exists(output) or not exists(matte) or any(same_file(matte, p) for p in inputs):
        return None

    try:
        made = read_record(output) or {}
        ours = Path(str(made["output"])).name == output.name and made["config"]["output"]["matte"] is True
        wrote = (made.get("contents") or {}).get("matte")  # (a record of before: the matte flag alone)
        ours = ours and (wrote is None or same_content(wrote, matte) is True)  # (replaced since: another tool's)
    except (KeyError, TypeError, AttributeError):  # (not a record of ours)
        ours = False
    return matte if ours else None


def check_point(config: Config, size: tuple[int, int]) -> None:
    """``faces.select: point`` (``--face-at X,Y``) inside the picture: a point outside it is a wrong argument, said
    before the face pass (which could only find no face there)."""
    from lipsyncctl.errors import UsageError

    point = config.faces.point
    if config.faces.select == "point" and point is not None:
        x, y = point
        if not (0 <= x < size[0] and 0 <= y < size[1]):
            raise UsageError(f"--face-at {x:g},{y:g} is outside the {size[0]}x{size[1]} picture",
                             hint="give the point in pixels of the picture as shown, from its top-left corner")


def _frames_kept(config: Config) -> int:
    """How many decoded frames a face pass beside the render keeps ahead of the render's reads (the render then
    decodes nothing of its own): a window and a cross-fade's look-ahead past the last frame read (the tracker's own
    buffer comes on top), so that the next window's frames and records are ready while the render works on one.
    Every kept frame is a whole source frame (25 MB at 4K): no more than that."""
    return config.inference.window + config.faces.crossfade_frames + 2


def _face_warnings(faces: FacePlan, plan: ClipPlan, first: int) -> tuple[list[str], int]:
    """The face pass's own warnings plus one on the output frames that pass through without a face, and how many
    those frames are."""
    no_face_out = sum(faces.matrices[plan.source_index(i) - first] is None for i in range(plan.num_frames))
    said = list(faces.warnings)
    if no_face_out:
        said.append(f"{no_face_out} of {plan.num_frames} frames have no usable face and pass through")
    return said, no_face_out


def _render_and_write(reader: Any, vinfo: VideoInfo, plan: ClipPlan, faces: FacePlan | FaceStream, features: Any,
                      networks: Networks, config: Config, clock: _Clock, video: Path, audio: Path,
                      output: Path, matte_out: Path | None, settle: Callable[[Path, Path | None], None],
                      timecode: tuple[str, str | None] | None = None, audio_stream: int | None = None,
                      audio_start: Fraction = Fraction(0), start_number: int = 1, overwrite: bool = True) -> None:
    """Steps 4-8 and the mux: everything is written in a hidden folder beside ``output``; ``settle`` (the face pass's end,
    ``OUT.run.yaml``) runs, given the finished file and matte, and only then are they renamed into place: a failure or Ctrl-C before leaves no
    ``output``, so a rerun of the same command starts again. A write failure there (disk full...) is a
    :class:`~lipsyncctl.errors.WriteError` naming ``output`` and about the space the render needs. An image
    sequence ``output`` (numbered from ``start_number``) gets no sound; its files are moved into place last
    (:func:`~lipsyncctl.media.atomic.replace_sequence`: those of a longer take it replaces are removed). Without
    ``overwrite``, an output another run put in place meanwhile (the same command twice at once) is not replaced:
    :class:`UsageError`, as when it was there at the start (:func:`~lipsyncctl.media.atomic.move_new`)."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.media.atomic import (
        move_new,
        output_folder,
        replace_sequence,
        space_needed,
        sweep_temps,
        taken_error,
        temp_prefix,
        write_error,
    )
    from lipsyncctl.media.mux import mux_audio
    from lipsyncctl.pipeline.output import open_writer
    from lipsyncctl.pipeline.render import Renderer

    renderer = Renderer(networks, config, plan, faces, features, clock)
    writer = None
    needed: list[int] = []  # measured in the hidden folder; told once it is removed (its files freed)
    sweep_temps(output.parent, stem=output.stem)  # the hidden folders of runs of OUT that were killed
    try:
        with output_folder(output), \
                tempfile.TemporaryDirectory(dir=output.parent, prefix=temp_prefix(output)) as tmpdir:
            tmp = Path(tmpdir)
            sequence = is_image_sequence(output)
            video_only = tmp / (output.name if sequence else f"video{output.suffix}")
            matte_tmp = (tmp / (matte_out.name if sequence else f"matte{output.suffix}")) if matte_out is not None else None
            try:
                like_source = {"color": vinfo.color, "source_pix_fmt": vinfo.pix_fmt, "start_number": start_number,
                               "sample_aspect": vinfo.sample_aspect, "field_order": vinfo.field_order}
                with open_writer(video_only, plan.fps, config.output, **like_source) as writer, \
                        (open_writer(matte_tmp, plan.fps, config.output, **like_source) if matte_tmp
                         else contextlib.nullcontext()) as matte:
                    renderer.render(reader, writer, matte)
                final = video_only  # an image sequence holds no sound
                if not sequence:  # the new audio at its own rate and channels, cut or padded with silence to the picture
                    with clock("mux"):
                        final = mux_audio(video_only, audio, tmp / f"final{output.suffix}",
                                          codec=config.output.audio_codec, pad=True,
                                          duration=Fraction(plan.num_frames) / plan.fps,  # exact: the plan's samples
                                          inputs=[video], timecode=timecode[0] if timecode else None,
                                          reel=timecode[1] if timecode else None, audio_stream=audio_stream,
                                          audio_start=audio_start)
            except WriteError as exc:
                stored = (writer.packets_written, writer.frames_written) if writer is not None else (0, 0)
                needed.append(space_needed(exc, video_only, stored, plan.num_frames))
                raise
            if not overwrite:  # another run of the same output finished while this one rendered: its take stays
                for path in (output, matte_out):
                    if path is not None and exists(path):
                        raise taken_error(path)
            settle(final, matte_tmp)
            place = replace_sequence if sequence else os.replace if overwrite else move_new
            if matte_out is not None and matte_tmp is not None:
                place(matte_tmp, matte_out)
            place(final, output)
    except WriteError as exc:  # a file of the hidden folder: name the output, and what the render needs
        raise write_error(output, exc, needed=needed[0] if needed else None) from exc


def _first_number(video: Path, plan: ClipPlan, config: Config) -> int:
    """The number of an image-sequence output's first file: ``output.first_number`` where set (1001, as VFX counts),
    else the source sequence's own number of the frame it starts at (an edit of plate ``shot.1001..`` from
    ``--start`` comes back under the same numbers), else 1 (a video source: FFmpeg's first number)."""
    from lipsyncctl.media.container import sequence_numbers

    if config.output.first_number is not None:
        return config.output.first_number
    return sequence_numbers(video)[0] + plan.first_frame if is_image_sequence(video) else 1


def _output_timecode(info: MediaInfo, plan: ClipPlan, output: Path) -> tuple[str, str | None] | None:
    """``(timecode, reel)`` for the output: the source timecode of its first frame (the file's start timecode tag
    plus the frames before ``--start``, counted at the output's rate; drop frame where the tag is) and the source's
    reel name, so an editor's NLE relinks or conforms the dubbed clip by timecode as it did the source. None without
    a tag (or one that does not parse at the source's rate), or for a container that holds no timecode."""
    from lipsyncctl.media import timecode as tb
    from lipsyncctl.media.mux import TIMECODE_CONTAINERS

    if info.video is None or output.suffix.lower() not in TIMECODE_CONTAINERS:
        return None
    tc = tb.start_timecode(info.timecode, info.video.nominal_fps, plan.first_frame, plan.fps)
    return (tc, info.reel) if tc is not None else None


def grid_frames(vinfo: VideoInfo) -> int:
    """Frames of the source on its constant-rate grid: the frame count for CFR input, the duration at
    the nominal rate for VFR input (what :class:`~lipsyncctl.media.reader.IndexedReader` yields)."""
    if not vinfo.is_vfr:
        return vinfo.frame_count
    return max(1, round(exact(vinfo.duration) * vinfo.nominal_fps))


def _detector_device(config: Config, networks: Networks | None) -> str:
    """Where GPU face detectors run: the networks' device (resolved without loading anything)."""
    if networks is not None:
        device = networks.device
    else:
        from lipsyncctl.runner.devices import resolve_device

        device = resolve_device(config.inference.device)
    return str(device) if device.type == "cuda" else "cpu"


@dataclass(frozen=True)
class Inputs:
    """A clip's inputs, probed once: the video's :class:`MediaInfo`, the dub's sound stream (``sync.audio_stream`` of
    the audio file) and, when that file has several, the warning that says which one is used."""

    info: MediaInfo
    dub: AudioInfo
    several: str | None = None
    origin: Fraction = Fraction(0)  # the time of the audio file's timeline where the dub starts: see dub_origin
    same: bool = False  # the dub is the clip's own sound (the video's file)


def dub_origin(info: MediaInfo, audio: Path, same: bool) -> Fraction:
    """Where the dub starts on its file's timeline (its sample 0, placed at the output's first frame): the
    clip's own sound (``same``) from the time of its first picture, as the file plays them together (as
    ``prep`` cuts it; a range's first frame is counted from there: ``sync --start``, ``score``); another file from
    its own start (:func:`~lipsyncctl.media.audio.own_start`: an MPEG-TS
    starts at 1.4 s or any time). A stream that starts later than that begins with silence (a .mov whose
    sound starts 0.5 s after its picture keeps that half second)."""
    from lipsyncctl.media.audio import own_start

    if same and info.video is not None:
        return exact(info.video.start_time)
    return own_start(audio)


def check_found(video: Path, audio: Path) -> None:
    """MediaError (exit 5) when ``video`` or ``audio`` is not there: before anything else is looked at (a missing
    model is said after a mistyped path, not before it). An image sequence's pattern: its probe says."""
    from lipsyncctl.media.container import is_image_sequence

    for p, what in ((video, "video"), *(((audio, "audio"),) if audio != video else ())):
        if not p.exists() and not (what == "video" and is_image_sequence(p)):
            raise MediaError(f"{what} file not found: {p}", hint="check the path")


def probe_inputs(video: Path, audio: Path, audio_stream: int = 0, sequence_fps: str = "auto", *,
                 no_sound_hint: str = "give a sound: a WAV, FLAC or AAC file, or a video with sound") -> Inputs:
    """Both inputs, found usable (else MediaError): a picture with frames, and a sound (its ``audio_stream``-th
    stream; ``no_sound_hint``: the caller's way to give another, said when there is none); the file is probed once
    when the clip is its own sound. The picture may be an image sequence (an
    ffmpeg pattern, ``shot/%04d.png``) at ``sequence_fps`` (``sync.sequence_fps``, see
    :func:`~lipsyncctl.pipeline.output.sequence_rate`): the readers made with its probe read it at that rate."""
    from lipsyncctl.media.atomic import same_file
    from lipsyncctl.media.probe import pick_audio_stream, probe
    from lipsyncctl.pipeline.output import sequence_rate

    check_found(video, audio)
    info = probe(video, sequence_fps=sequence_rate(video, sequence_fps))
    if info.video is None:
        raise MediaError(f"{video}: no video stream (an audio-only file?)", hint="give a file with a picture: a video, or an image sequence's pattern")
    if info.video.frame_count <= 0:
        raise MediaError(f"{video}: the video stream has no frames")
    same = audio == video or same_file(audio, video)
    sound = info if same else probe(audio)
    if not sound.audio:
        raise MediaError(f"{audio}: no audio stream (a video-only file?)",
                         hint=no_sound_hint)
    dub, several = pick_audio_stream(audio, sound, audio_stream, "sync.audio_stream")
    return Inputs(info, dub, several, dub_origin(info, audio, same), same)


def _scratch_folder(output: Path) -> Path:
    """Where a long dub's 16 kHz sound and its features are kept on disk (unnamed files): the output's folder, or
    the system's temporary folder while the output's is not made yet."""
    import tempfile

    return output.parent if output.parent.is_dir() else Path(tempfile.gettempdir())


def _audio_features(networks: Networks, mono: np.ndarray, plan: ClipPlan, folder: Path | None) -> Any:
    """Whisper features ``(L, 5, 384)`` of the new audio (16 kHz mono ``(n,)``); with the ``silence``
    policy padded with silence so every output frame (plus the 2-frame context) has real features, and a dub
    shorter than the features' minimum (:data:`~lipsyncctl.audio.features.MIN_SAMPLES`, 0.02 s: its one output
    frame) padded to it. Only the rows the output's frames read are computed (a long dub on a short picture, cut:
    the encoder runs over the windows those frames read, not over the whole dub). Those of a long audio are kept
    on disk in ``folder`` (the output's: :func:`~lipsyncctl.audio.features.audio_features`)."""
    from lipsyncctl.audio.features import MIN_SAMPLES, audio_features, rows_for_frames

    need = MIN_SAMPLES
    if plan.policy == "silence":
        need = max(need, int(round((plan.num_frames + 3) / plan.fps * MODEL_AUDIO_RATE)))
    return audio_features(networks.whisper, mono, folder=folder, length=need,
                          rows=rows_for_frames(plan.num_frames, plan.fps))


def _write_run_yaml(output: Path, config: Config, plan: ClipPlan, video: Path, audio: Path,
                    networks: Networks, faces: FacePlan, found: int, final: Path, matte: Path | None) -> Path:
    """``found``: the output's frames with a face (``--json``'s ``faces_found``; the pass also read frames past the
    cut, which the output does not have). ``final``: the finished output, about to be renamed into place: its
    contents are recorded too (``--batch`` tells an output emptied or cut short since from a finished one; an image
    sequence's files are not: its frames are the user's to replace one by one)."""
    import torch

    from lipsyncctl.pipeline.output import ENCODER_THREADS, write_run_yaml
    from lipsyncctl.runner.store import content_record

    # The thread counts: torch's numerics depend on its own (the encoder's is fixed), see pipeline.output.
    # the inputs' absolute paths: the record names the files whatever folder a later run starts from (--batch), and
    # their contents (size, mtime, first and last MiB) tell a file delivered again under the same name
    return write_run_yaml(output, config, plan.to_dict(), {"video": os.path.abspath(video), "audio": os.path.abspath(audio)},
                          dict(networks.files),
                          {"contents": {"video": content_record(video), "audio": content_record(audio),
                                        **({} if is_image_sequence(output) else {"output": content_record(final)}),
                                        **({"matte": content_record(matte)} if matte and not is_image_sequence(output)
                                           else {})},
                           "faces": {"detector": faces.detector, "select": faces.selection,
                                     "track_id": faces.track_id, "found": found},
                           "threads": {"torch": torch.get_num_threads(), "encoder": ENCODER_THREADS}})
