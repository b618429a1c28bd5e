"""The sync pipeline for one clip (DESIGN.md §3), as numbered steps.

Memory stays bounded whatever the clip length: frames are decoded twice in a streaming way (once for
the faces, once for rendering), and only one window of frames (``inference.window``, 16 officially)
is held at a time. What is kept for the whole clip is small: one face record per source frame and the
whisper features (50 x 5 x 384 floats per second of audio).

1. Probe the inputs and plan the output frames (:mod:`lipsyncctl.pipeline.plan`).
2. Load the networks (:mod:`lipsyncctl.pipeline.models`).
3. Audio features: whisper over the whole new audio, once.
4. Faces: detect + track + smooth over the selected source frames, choose the speaker, and compute the
   official alignment matrix per frame (no face -> the frame passes through).
5. Render, window by window: read frames -> align -> VAE encode -> denoise -> decode -> paste back ->
   encode. Frames without a face are written unchanged.
6. Mux the new audio (its own rate and channels, fitted to the picture), rename into place, write
   ``run.yaml`` beside the output.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.errors import MediaError, NoFaceError
from lipsyncctl.pipeline.plan import ClipPlan, plan_clip, select_range

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.pipeline.models import ModelBundle


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


@dataclass
class FaceTrack:
    """Per selected source frame: the frame->crop matrix (None = no face) and the blend weight."""

    matrices: list[np.ndarray | None]
    weights: np.ndarray
    detector: str

    @property
    def found(self) -> int:
        return sum(m is not None for m in self.matrices)


def matte_path(output: Path) -> Path:
    """``out.mp4`` -> ``out.matte.mp4`` (the changed region, white = generated)."""
    return output.with_name(f"{output.stem}.matte{output.suffix}")


def run_yaml_path(output: Path) -> Path:
    """``out.mp4`` -> ``out.run.yaml`` (the resolved configuration of the run)."""
    return output.with_name(f"{output.stem}.run.yaml")


def sync_clip(
    video: Path,
    audio: Path,
    output: Path,
    config: Config,
    *,
    start: float | None = None,
    end: float | None = None,
    face_id: int | None = None,
    face_at: tuple[float, float] | None = None,
    models: ModelBundle | None = None,
) -> SyncResult:
    """Re-render the speaker's mouth in ``video`` to match ``audio``; write ``output``.

    Raises:
        MediaError: missing/unreadable inputs, no video stream, no audio stream, output == input.
        NoFaceError: no usable face in any selected frame.
        MissingModelError / CheckpointError / DeviceError / ConfigError: see their docs.
    """
    from lipsyncctl.media.atomic import atomic_output, check_not_input

    clock = _Clock()
    video, audio, output = Path(video), Path(audio), Path(output)
    warnings: list[str] = []
    check_not_input(output, [video, audio])
    check_not_input(matte_path(output), [video, audio])

    # 1. Probe and plan.
    with clock("probe"):
        vinfo, new_audio, audio_rate = _probe_inputs(video, audio)
    first, stop = select_range(vinfo.frame_count, vinfo.fps, start, end)
    out_fps = None if config.sync.fps == "source" else Fraction(config.sync.fps)
    plan = plan_clip(stop - first, vinfo.fps, new_audio.shape[1], audio_rate,
                     config.sync.length_policy, fps=out_fps, first_frame=first)

    # 2. Models.
    if models is None:
        with clock("load models"):
            from lipsyncctl.pipeline.models import load_models

            models = load_models(config)
    if models.is_tiny:
        from lipsyncctl.checkpoints.tiny import NOT_LIP_SYNCED

        progress.message(f"WARNING: {NOT_LIP_SYNCED}")
        warnings.append(NOT_LIP_SYNCED)

    # 3. Audio features, once for the whole audio (padded with silence to the output length).
    with clock("audio features"):
        features = _audio_features(models, audio, plan)

    # 4. Faces over the selected source frames, in source order.
    with clock("faces"):
        faces = _track_faces(video, vinfo, plan, config, models.device, face_id, face_at)
    if faces.found == 0:
        raise NoFaceError(f"{video}: no usable face in any of the {plan.source_frames} selected frames")
    no_face_out = sum(faces.matrices[plan.source_index(i) - plan.first_frame] is None
                      for i in range(plan.num_frames))
    if no_face_out:
        warnings.append(f"{no_face_out} of {plan.num_frames} frames have no usable face and pass through")

    # 5. Render and encode (video only, to a hidden temporary file beside the output).
    from lipsyncctl.pipeline.frames import VideoSpec, fit_length, mux
    from lipsyncctl.pipeline.render import Renderer

    spec = VideoSpec(width=vinfo.width, height=vinfo.height, fps=plan.fps, codec=config.output.codec,
                     crf=config.output.crf, preset=config.output.encoder_preset,
                     pix_fmt=config.output.pix_fmt, source_pix_fmt=vinfo.pix_fmt, color=vinfo.color)
    renderer = Renderer(models, config, plan, faces, features, video, vinfo, clock)
    samples = plan.output_samples(audio_rate)
    out_audio = fit_length(new_audio, samples)
    matte_out = matte_path(output) if config.output.matte else None
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.stem}.") as tmpdir:
        tmp_video = Path(tmpdir) / f"video{output.suffix}"
        tmp_matte = Path(tmpdir) / f"matte{output.suffix}" if matte_out else None
        renderer.render(tmp_video, spec, tmp_matte)
        # 6. Mux the new audio at its own rate and channels; write under a temporary name, then rename.
        with clock("mux"):
            with atomic_output(output, inputs=[video, audio]) as tmp_out:
                mux(tmp_video, out_audio, audio_rate, tmp_out, config.output.audio_codec)
            if matte_out is not None and tmp_matte is not None:
                with atomic_output(matte_out, inputs=[video, audio]) as tmp_m:
                    mux(tmp_matte, None, audio_rate, tmp_m)
    run_yaml = _write_run_yaml(output, config, plan, video, audio, models)
    return SyncResult(
        output=output, frames=plan.num_frames, fps=plan.fps, width=vinfo.width, height=vinfo.height,
        duration=plan.duration, audio_seconds=plan.audio_seconds,
        faces_found=plan.num_frames - no_face_out, no_face_frames=no_face_out, plan=plan.to_dict(),
        detector=faces.detector, stage_seconds=dict(clock.seconds), run_yaml=run_yaml, matte=matte_out,
        warnings=warnings, models=dict(models.files),
    )


def _probe_inputs(video: Path, audio: Path) -> tuple[Any, np.ndarray, int]:
    from lipsyncctl.media.probe import probe
    from lipsyncctl.pipeline.frames import read_audio

    for p, what in ((video, "video"), (audio, "audio")):
        if not p.exists():
            raise MediaError(f"{what} file not found: {p}", hint="check the path")
    info = probe(video)
    if info.video is None:
        raise MediaError(f"{video}: no video stream (an audio-only file?)", hint="give the picture with --video")
    if info.video.frame_count <= 0:
        raise MediaError(f"{video}: the video stream has no frames")
    ainfo = probe(audio)
    if not ainfo.audio:
        raise MediaError(f"{audio}: no audio stream (a video-only file?)",
                         hint="give the new dialogue with --audio (WAV, FLAC, AAC, or a video with sound)")
    samples, rate = read_audio(audio)
    return info.video, samples, rate


def _audio_features(models: ModelBundle, audio: Path, plan: ClipPlan) -> Any:
    """Whisper features ``(L, 5, 384)`` of the new audio at 16 kHz mono, padded with silence so every
    output frame (plus the 2-frame context) has real features."""
    from lipsyncctl.audio.features import audio_features
    from lipsyncctl.pipeline.frames import fit_length, read_audio

    mono, _ = read_audio(audio, rate=16000, channels=1)
    need = int(round((plan.num_frames + 3) / plan.fps * 16000))
    mono = fit_length(mono, max(need, mono.shape[1]))[0] if plan.policy == "silence" else mono[0]
    return audio_features(models.whisper, mono)


def _track_faces(video: Path, vinfo: Any, plan: ClipPlan, config: Config, device: Any,
                 face_id: int | None, face_at: tuple[float, float] | None) -> FaceTrack:
    from lipsyncctl.faces.align import FaceAligner
    from lipsyncctl.faces.detect import create_detector
    from lipsyncctl.faces.track import TrackOptions, crossfade_weights, select_speaker, track_faces
    from lipsyncctl.pipeline.frames import FrameReader

    opts = config.faces
    detector = create_detector(opts.backend, device=str(device) if device.type == "cuda" else "cpu")
    progress.message(f"face detector: {detector.name}")
    track_opts = TrackOptions(detect_every=opts.detect_every, smooth=opts.smoothing)
    first, stop = plan.first_frame, plan.first_frame + plan.source_frames
    with FrameReader(video, vinfo.fps, vinfo.start_time) as reader:
        frames = (rgb for _, rgb in reader.iter_range(first, stop))
        per_frame = track_faces(detector, frames, fps=float(vinfo.fps), options=track_opts,
                                total=plan.source_frames)
    mode = {"largest": "largest", "id": "track", "point": "point", "speaker": "largest"}[opts.select]
    if face_id is not None:
        mode = "track"
    elif face_at is not None:
        mode = "point"
    chosen = select_speaker(per_frame, mode=mode, track_id=face_id, point=face_at)
    aligner = FaceAligner(resolution=config.model.resolution, smooth=opts.smoothing)
    matrices: list[np.ndarray | None] = []
    for face in chosen:
        if face is None:
            aligner.reset()  # a new shot or the face came back: restart the official bias smoothing
            matrices.append(None)
        else:
            matrices.append(aligner.matrix(face.points3))
    weights = crossfade_weights(chosen, fade_in=opts.crossfade_frames, fade_out=opts.crossfade_frames)
    return FaceTrack(matrices, np.asarray(weights, dtype=np.float32), detector.name)


def _write_run_yaml(output: Path, config: Config, plan: ClipPlan, video: Path, audio: Path,
                    models: ModelBundle) -> Path:
    import yaml

    from lipsyncctl import __version__

    doc = {
        "lipsyncctl": __version__,
        "inputs": {"video": str(video), "audio": str(audio)},
        "output": str(output),
        "plan": plan.to_dict(),
        "models": dict(models.files),
        "config": config.to_dict(),
    }
    path = run_yaml_path(output)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path
