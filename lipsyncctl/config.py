"""Run configuration: the preset schema, preset loading, and the one precedence function.

Precedence (lowest to highest): built-in defaults < preset file < ``--set a.b=value`` < explicit flags.
:func:`resolve` implements it and is the only place that merges configuration.

The schema is strict: an unknown key anywhere is an error naming the file and the dotted key path,
and every numeric limit is declared once, here, in the field definitions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lipsyncctl import paths
from lipsyncctl.errors import ConfigError, UsageError

#: Bounds of the counts that are no config key, declared once: the CLI's options take them as their limits and the
#: library checks them (:func:`check_count`). Worker processes of one run (``--jobs`` of sync, curate, prep):
JOBS = (1, 256)
#: Processes of one training launch (``train --gpus/--nproc``):
LAUNCH_PROCESSES = (1, 64)


def check_count(label: str, value: int, bounds: tuple[int, int]) -> None:
    """Refuse ``value`` outside ``bounds`` (:data:`JOBS`, :data:`LAUNCH_PROCESSES`): :class:`UsageError` naming
    ``label`` (``--jobs``), as the CLI's own range check words it."""
    low, high = bounds
    if not low <= value <= high:
        raise UsageError(f"{label} {value}: not in the range {low}<=x<={high}", hint=f"give {label} between {low} and {high}")


#: The name that stands for the seeded random tiny models in ``model.*`` (see :meth:`ModelOptions.tiny_roles`).
TINY = "tiny"

#: The video codec names of ``prep.codec`` and ``output.codec``: one vocabulary for both commands. Each
#: maps onto the writer's table in :data:`lipsyncctl.media.writer.OUTPUT_CODECS` (a test keeps them equal).
VideoCodecName = Literal["h264", "h265", "prores_hq", "prores_4444", "dnxhr_hq", "ffv1"]
VIDEO_CODECS: tuple[str, ...] = get_args(VideoCodecName)
#: Older names still accepted and stored as the name they stand for (``prep``'s first vocabulary said
#: ``prores`` for ProRes 422 HQ; presets and scripts may still say it).
CODEC_ALIASES: dict[str, str] = {"prores": "prores_hq"}


def _codec_alias(value: Any) -> Any:
    return CODEC_ALIASES.get(value, value) if isinstance(value, str) else value


VideoCodec = Annotated[VideoCodecName, BeforeValidator(_codec_alias)]
#: x264's and x265's speed presets (the same names)
EncoderPreset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                        "veryslow", "placebo"]


def pixel_format(v: str | None) -> str | None:
    """A pixel format FFmpeg knows (``yuv420p``, ``yuv422p10le``...), or None (a pydantic check)."""
    if v is None:
        return v
    import av

    try:
        av.VideoFormat(str(v))
    except (ValueError, av.error.FFmpegError):
        raise ValueError(f"{v!r} is not a pixel format FFmpeg knows (e.g. yuv420p, yuv422p10le, rgb24)") from None
    return str(v)


def codec_help() -> str:
    """The codec names for ``--codec`` help: ``h264, h265, ... (prores = prores_hq)``."""
    aliases = ", ".join(f"{old} = {new}" for old, new in CODEC_ALIASES.items())
    return f"{', '.join(VIDEO_CODECS)} ({aliases})"


def device_name(v: str) -> str:
    """A device setting (``inference.device``, ``run.device``): ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
    (a pydantic validator's check: ValueError otherwise)."""
    if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


def numbers_not_booleans(model: type[BaseModel], name: str, value: Any) -> Any:
    """A pydantic before-check of every field: YAML reads ``yes``/``no``/``on``/``off`` as booleans, which a
    number field took for 1/0 (``timeline.min_sync: off`` turned the gate on at 0, ``crf: no`` made lossless
    output); a number field refuses them."""
    if isinstance(value, bool):
        field = model.model_fields.get(name)
        kinds = (get_args(field.annotation) or (field.annotation,)) if field is not None else ()
        if bool not in kinds and any(k in (int, float) or type(k) in (int, float) for k in kinds):
            raise ValueError(f"expected a number, not {str(value).lower()} (YAML reads yes/no/on/off as "
                             "true/false; null turns a setting off where it can be off)")
    return value


class StrictModel(BaseModel):
    """A settings model that refuses unknown keys and booleans for numbers, and cannot be changed once made (every
    run settings schema of the package derives from it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, v: Any, info: ValidationInfo) -> Any:
        return numbers_not_booleans(cls, info.field_name, v)


class ModelOptions(StrictModel):
    """Which networks to use."""

    checkpoint: str = Field(
        "latentsync-1.5", description="registry name or path of the UNet checkpoint, or 'tiny'"
    )
    unet_config: str = Field(
        "stage2", description="architecture config name in models/configs/unet or a path (a UNet file that states "
        "its own, train's export, is built as it says)"
    )
    resolution: Literal[256, 512] = Field(
        256, description="face crop size fed to the VAE (256 for 1.5, 512 for 1.6)"
    )
    whisper: str = Field("latentsync-1.5", description="registry name or path of the whisper tiny.pt (default: the one "
                         "in the default checkpoint's repo, which `models fetch latentsync-1.5` installs)")
    vae: str = Field("sd-vae-ft-mse", description="registry name or path of the VAE (folder or safetensors)")
    mask: str = Field(paths.OFFICIAL_MASK, description="the mouth mask the UNet was trained with (white = kept): the official "
                      "mask.png, or a PNG path (train's data.mask; a relative one is made absolute)")

    @field_validator("mask")
    @classmethod
    def _mask(cls, v: str) -> str:
        return paths.setting_path(v)

    def tiny_roles(self) -> frozenset[str]:
        """The networks of this run that are the tiny ones (``unet``, ``whisper``, ``vae``); empty for a real run.

        ``tiny`` stands in for a registry name or a path (``lipsyncctl.checkpoints.tiny`` generates the
        seeded random files). Per role:

        - ``unet``: ``checkpoint: tiny`` (the random weights) or ``unet_config: tiny`` (their architecture,
          about 1.2 M parameters instead of 1.3 G; the tiny weights are the only ones made for it). The VRAM
          model sizes this UNet, its activations and the CUDA overhead as the tiny model's.
        - ``whisper``: ``whisper: tiny``: random weights with the real whisper-tiny encoder dimensions, so
          its memory is the official encoder's.
        - ``vae``: ``vae: tiny``: a random VAE with 8..16 channels instead of 128..512.

        Any tiny role means random weights: the output is not lip-synced, and the pipeline says so.
        This is the one rule; the VRAM model and the network loader both ask it.
        """
        return frozenset(role for role, names in (("unet", (self.checkpoint, self.unet_config)),
                                                  ("whisper", (self.whisper,)), ("vae", (self.vae,)))
                         if TINY in names)


class InferenceOptions(StrictModel):
    """Diffusion sampling settings."""

    steps: int = Field(20, ge=1, le=1000, description="DDIM inference steps")
    guidance: float = Field(1.5, ge=1.0, le=20.0, description="classifier-free guidance scale (1.0 = off)")
    seed: int = Field(
        1247, ge=0, le=2**63 - 1, description="seed of the torch.Generator for the initial noise"
    )
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto = fp16 on CUDA GPUs of compute capability 8 or more, else fp32 (CPU, MPS, older GPUs)"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    window: int = Field(16, ge=1, le=24, description="frames per denoising window (the motion modules allow 24)")
    deepcache: bool = Field(False, description="reuse deep UNet features between steps (DeepCache-style)")
    deepcache_interval: int = Field(
        3, ge=1, le=20, description="steps between full UNet passes when deepcache is on"
    )
    vae_batch: int = Field(16, ge=1, le=256, description="frames per VAE encode/decode batch")
    batch_windows: int = Field(
        1, ge=1, le=8, description="windows denoised together in one UNet batch (a GPU option: fewer, larger "
        "kernel launches; the numerics of a larger batch, not the default's bytes; VRAM grows with it)"
    )
    pipelined: bool = Field(
        True, description="decode+align, the networks, paste and encode run concurrently on consecutive windows "
        "(same output bytes as false: one stage after the other)"
    )
    channels_last: bool = Field(
        False, description="the UNet and the VAE in channels-last memory layout (a GPU option: faster on some "
        "GPUs; the numerics change slightly, the output is not the default's bytes)"
    )
    compile: bool = Field(
        False, description="torch.compile the UNet and the VAE's encoder and decoder (a GPU option: the first "
        "window waits for the compilation; needs Triton on a GPU, a C++ compiler on the CPU)"
    )
    gpu_paste: bool = Field(
        False, description="paste the faces back on the networks' device with torch (a GPU option: the generated "
        "faces stay on the GPU, each frame's face box travels; torch's blur and erosion as the official kornia code, "
        "where the default uses OpenCV's on the CPU: a level apart at a few pixels, not the default's bytes; on a CPU "
        "device the same torch arithmetic, slower than the default)"
    )
    cuda_graphs: bool = Field(
        False, description="replay the UNet's denoising call from a CUDA graph (a GPU option: at 256 px the eager "
        "UNet is bound by kernel launches; the same output bytes; DeepCache's passes too; with compile: its "
        "reduce-overhead mode)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return device_name(v)


#: ``faces.select``: whose mouth is re-rendered. The one vocabulary of the face choice: the pipeline's
#: :class:`~lipsyncctl.pipeline.faces.FacePlan`, ``SyncResult.face_select``, run.yaml and the face selection in
#: :mod:`lipsyncctl.faces.speaker` say these words (the track followed is a separate ``track_id``).
FaceSelect = Literal["largest", "id", "point", "speaker"]


class FaceOptions(StrictModel):
    backend: Literal["auto", "dlib", "face-alignment", "insightface"] = Field(
        "auto", description="face detector and landmarks (auto: the best one installed; --detector)")
    detect_every: int = Field(5, ge=1, le=250, description="run the detector every k frames, track between")
    smoothing: bool = Field(True, description="smooth the landmarks between frames and the alignment's offset "
                            "(the official 0.2/0.8 bias smoothing)")
    select: FaceSelect = Field(
        "largest", description="whose mouth: largest face (official), track id, face at a point, active speaker"
    )
    track_id: int | None = Field(None, ge=0, description="the face track to follow (select: id; --face ID)")
    point: tuple[float, float] | None = Field(
        None, description="pixel [x, y] inside the face to follow (select: point; --face-at X,Y)"
    )
    crossfade_frames: int = Field(4, ge=0, le=50, description="frames of cross-fade where a face comes back")
    blend: Literal["official", "multiband"] = Field(
        "official", description="paste-back: official feathered restore, or multiband (Laplacian blend of the "
        "change only; lower seams, same support; tests/bench/bench_blend.py)"
    )

    @model_validator(mode="after")
    def _selection(self) -> FaceOptions:
        if self.select == "id" and self.track_id is None:
            raise ValueError("select 'id' needs faces.track_id (or --face ID)")
        if self.select == "point" and self.point is None:
            raise ValueError("select 'point' needs faces.point [x, y] (or --face-at X,Y)")
        if self.point is not None and not all(math.isfinite(v) and v >= 0 for v in self.point):  # (NaN passed < 0)
            raise ValueError("faces.point must be pixel coordinates >= 0")
        return self


def _check_fps(v: str) -> str:
    from fractions import Fraction

    v = str(v).strip()
    if v == "source":
        return v
    try:
        f = Fraction(v)
    except (ValueError, ZeroDivisionError):
        raise ValueError("must be 'source', a number or a fraction like 30000/1001") from None
    if not 1 <= f <= 240:
        raise ValueError("must be between 1 and 240")
    return v


def _check_sequence_fps(v: Any) -> str:
    if str(v).strip() == "source":
        raise ValueError("an image sequence states no rate: give 'auto', a number or a fraction like 24000/1001")
    return "auto" if str(v).strip() == "auto" else _check_fps(v)


def _off(v: Any) -> Any:
    """YAML reads ``off`` (``--set prep.deinterlace=off``, a preset's ``deinterlace: off``) as False: the word meant."""
    return "off" if v is False else v


#: a frame rate setting: 'source', a number (25, 29.97: YAML's) or a fraction string
FrameRate = Annotated[str, BeforeValidator(_check_fps)]
#: an image sequence's rate setting: 'auto' (:func:`lipsyncctl.pipeline.output.sequence_rate`) or a rate
SequenceRate = Annotated[str, BeforeValidator(_check_sequence_fps)]
#: how an interlaced source is read (``off`` also as YAML's False)
Deinterlace = Annotated[Literal["auto", "off"], BeforeValidator(_off)]


def _sequence_fps(what: str, fps_key: str) -> Any:
    """The ``sequence_fps`` field of the options that read ``what`` (sync's --video, prep's inputs)."""
    return Field("auto", description=f"the rate of an image-sequence {what} (an ffmpeg pattern such as "
                 "'shot/%04d.png', whose files state none): a number or fraction (24, 30000/1001), or auto: the rate "
                 f"its STEM.run.yaml records when lipsyncctl wrote it, else 25; {fps_key} then keeps or conforms it")


class SyncOptions(StrictModel):
    length_policy: Literal["loop", "pingpong", "cut", "freeze", "silence"] = Field(
        "pingpong", description="what to do when audio and picture lengths differ (pingpong is official)"
    )
    fps: FrameRate = Field(
        "source", description="'source' keeps the clip's rate; a number conforms like the official 25"
    )
    deinterlace: Deinterlace = Field(
        "auto", description="an interlaced source: its faces found and rendered from progressive pictures (FFmpeg's "
        "bwdif, one per frame) and pasted onto the source's own frames (auto), or from both fields at once (off)")

    audio_stream: int = Field(
        0, ge=0, le=63, description="which audio stream of --audio is the dub: 0 the first, 1 the second (ffmpeg's "
        "a:N); it is synced to and carried into the output (one clip and --batch; a timeline picks --audio-track)")
    sequence_fps: SequenceRate = _sequence_fps("--video", "sync.fps")


class PrepOptions(StrictModel):
    fps: FrameRate = Field("25", description="output frame rate: a number/fraction (25, 30000/1001) or 'source'")
    audio_rate: int = Field(16000, ge=8000, le=192000, description="sample rate of the output's sound (Hz)")
    audio_channels: int = Field(1, ge=1, le=8, description="channels of the output's sound (1: mono, as training)")
    audio_stream: int = Field(0, ge=0, le=63, description="which audio stream of an input is kept: 0 the first, 1 the "
                              "second (ffmpeg's a:N); an input with several says which")
    codec: VideoCodec = Field("h264", description="video codec (the same names as output.codec)")
    crf: int = Field(18, ge=0, le=51, description="x264/x265 constant rate factor (lower: better, larger)")
    encoder_preset: EncoderPreset = Field("medium", description="x264/x265 speed preset")
    pix_fmt: Annotated[str, AfterValidator(pixel_format)] = Field("yuv420p", description="the output's pixel format")
    sidecar_wav: bool = Field(True, description="also write the sound as OUT.wav beside the video")
    mux_audio: bool = Field(True, description="carry the sound in the output video (AAC)")
    allow_no_audio: bool = Field(False, description="an input without sound gives a video-only output instead of "
                                 "failing (--allow-no-audio)")
    max_size: int | None = Field(
        None, ge=16, le=16384, description="downscale so the long side is at most this"
    )
    deinterlace: Deinterlace = Field(
        "auto", description="an interlaced source (1080i, SD) made progressive with FFmpeg's bwdif, one frame per "
        "frame (auto), or its two fields kept in each frame (off)")
    sequence_fps: SequenceRate = _sequence_fps("input", "prep.fps")


class OutputOptions(StrictModel):
    codec: VideoCodec = Field("h264", description="video codec (the same names as prep.codec)")
    crf: int = Field(18, ge=0, le=51, description="x264/x265 constant rate factor (lower: better, larger)")
    encoder_preset: EncoderPreset = Field("medium", description="x264/x265 speed preset")
    pix_fmt: Annotated[str | None, AfterValidator(pixel_format)] = Field(
        None, description="None = the codec's default closest to the source")
    matte: bool = Field(False, description="also write a matte of the changed region")
    first_number: int | None = Field(
        None, ge=0, le=99_999_999,
        description="an image-sequence output's first file number (None: the source sequence's, 1 for a video)")
    png_level: int = Field(
        4, ge=0, le=9, description="zlib level of a PNG image-sequence output (-o 'shot.%04d.png') and its matte: 0 "
        "stores, 9 is smallest; 4 writes real 1080p pictures about four times as fast as 6 (libpng's default) for "
        "files about 9% larger")
    audio_codec: Literal["auto", "aac", "pcm", "pcm24"] = Field(
        "auto", description="auto: 24-bit PCM beside ProRes/DNxHR in a .mov/.mkv (as deliveries carry them), else AAC"
    )


class TimelineOptions(StrictModel):
    """The timeline (dubbing) job: ``lipsyncctl sync --timeline``."""

    handles: int = Field(12, ge=0, le=1000, description="extra source frames rendered before and after each shot")
    non_dialogue: Literal["render", "passthrough", "close"] = Field(
        "render", description="stretches without speech: render them, keep the source pixels, or close the mouth"
    )
    vad_threshold: float = Field(0.5, ge=0.05, le=0.95, description="silero-vad speech probability threshold")
    vad_min_silence_ms: int = Field(300, ge=0, le=10000, description="shorter pauses count as speech")
    speech_pad_frames: int = Field(3, ge=0, le=100, description="frames around speech still lip-synced")
    shot_container: Literal["auto", "mp4", "mov", "mkv"] = Field(
        "auto", description="container of the rendered shots (auto: from output.codec)"
    )
    conform: bool = Field(False, description="also write the full-length conformed video per language")
    min_sync: float | None = Field(
        None, ge=0, le=20, description="fail a shot whose SyncNet confidence (LSE-C) is below this"
    )
    scene_threshold: float = Field(
        27.0, ge=1, le=255, description="sync --split-scenes: PySceneDetect content detector threshold "
        "(lower = more cuts; its detect-content default)"
    )
    scene_min_frames: int = Field(
        15, ge=1, le=100000, description="sync --split-scenes: shortest shot in frames (PySceneDetect's min_scene_len)"
    )
    unchecked_gates: Literal["fail", "warn"] = Field(
        "fail", description="a QC gate that cannot be evaluated (min_sync without the evaluation SyncNet, a shot "
        "too short to score): fail (exit 4 before any render when the model is missing; the shot fails) or warn"
    )


class CurateOptions(StrictModel):
    """The training-data job: ``lipsyncctl curate`` (LATENTSYNC.md §4, the official data pipeline).

    Scores are stored per clip and decisions derived from them, so changing a threshold here re-decides
    without running a model again."""

    fps: Literal[25] = Field(25, description="the training rate (official: 25 fps CFR)")
    audio_rate: Literal[16000] = Field(16000, description="the training audio rate (official: 16 kHz mono)")
    audio_stream: int = Field(
        0, ge=0, le=63, description="which audio stream of each source is its sound: 0 the first, 1 the second "
        "(ffmpeg's a:N); the sources with several are listed in the run's warnings; one without that stream is rejected, no-audio")
    min_seconds: float = Field(
        2.0, ge=0.5, le=60, description="sources and shots shorter than this are rejected ('too-short')"
    )
    shot_threshold: float = Field(2.0, gt=0, le=255, description="adaptive detector threshold (official: 2)")
    min_scene_seconds: float = Field(0.6, ge=0, le=10, description="shortest shot (PySceneDetect's CLI default)")
    segment_seconds: float = Field(5.0, ge=1, le=60, description="segment length; the remainder is merged so "
                                   "every piece is between this and twice this")
    segments: Literal["exact", "official"] = Field(
        "exact", description="exact frame spans, or the official key-frame stream-copy lengths (comparison)"
    )
    deinterlace: Deinterlace = Field(
        "auto", description="an interlaced source's shots found and faces aligned on progressive pictures (FFmpeg's "
        "bwdif, one per frame) (auto), or on its frames with both fields (off)")
    min_sync_frames: int = Field(
        50, ge=10, le=1000, description="pieces shorter than this cannot be sync-scored (official min track: 50)"
    )
    resolution: Literal[256, 512] = Field(256, description="aligned face size (official: 256; 512 for 1.6)")
    detector: Literal["auto", "dlib", "face-alignment", "insightface"] = Field(
        "auto", description="face detector of the align stage (insightface is the official one; others are "
        "recorded as not official)"
    )
    detect_every: int = Field(
        1, ge=1, le=25, description="detect every k frames and track between (official: every frame)"
    )
    one_pass: bool = Field(
        True, description="shots and align in one decode of the source when both are computed (detect_every 1, "
        "exact segments); the same clips and records as two passes"
    )
    align_codec: Literal["h264", "h265"] = Field("h264", description="codec of the aligned clips (official: libx264)")
    align_crf: int = Field(13, ge=0, le=51, description="CRF of the aligned clips (official: 13)")
    lossless: bool = Field(False, description="aligned clips as lossless FFV1 (RGB) .mkv with PCM audio")
    single_face: bool = Field(
        False, description="official filter (off there too): reject a clip with more than one face in a frame"
    )
    min_face_size: bool = Field(
        False, description="official filter (off there too): reject a clip whose face box is narrower or "
        "shorter than the resolution in a frame"
    )
    quality_min: float = Field(
        40.0, ge=0, le=100, description="keep a clip whose hyperIQA score (mean of its first, middle and last "
        "aligned frame; 0-100) is at least this (official: 40)"
    )
    quality_crop: Literal["official", "resize"] = Field(
        "official", description="what hyperIQA sees: the official centre crop 224 of the aligned frame, or the "
        "whole frame resized to 224 (not official; at 512 the official crop sees only nose and mouth)"
    )
    skip_quality: bool = Field(
        False, description="do not run the quality stage (no hyperIQA weights needed); clips are kept unfiltered"
    )
    sync_min_conf: float = Field(
        3.0, ge=0, le=50, description="keep a clip whose official-scale SyncNet confidence (LSE-C) is at least "
        "this (official: 3)"
    )
    sync_max_offset: int = Field(
        6, ge=0, le=15, description="keep a clip whose measured audio-video offset is at most this many 25 fps "
        "frames either way (official: 6); a kept clip's offset is corrected"
    )
    sync_confirm: Literal["strict", "official"] = Field(
        "strict", description="strict: a corrected clip is kept on its re-scored confidence, and rejected when the "
        "re-scored offset is beyond 1 frame (sync-offset-unconfirmed); official: on the measured confidence, every "
        "corrected clip kept (the official pipeline's rule)"
    )
    skip_sync: bool = Field(
        False, description="do not run the sync stage (no syncnet-v2 / sfd-face weights needed); clips are kept "
        "unmeasured and uncorrected"
    )
    val_fraction: float = Field(0.05, ge=0, le=0.5, description="share of the split groups that go to val")
    split_seed: int = Field(0, description="seed of the deterministic train/val split")
    split_by: Literal["source", "parent", "grandparent"] = Field(
        "source", description="the unit never split across train and val: the source, its parent folder (a "
        "speaker's folder of clips), or the folder above that (VoxCeleb2's idNNNNN/VIDEO/00001.mp4: the speaker)"
    )


class Config(StrictModel):
    """A resolved run configuration (what ``--print-config`` shows and ``run.yaml`` stores)."""

    name: str = Field("defaults", description="the preset's name")
    description: str = Field("", description="what the preset is for")
    model: ModelOptions = ModelOptions()
    inference: InferenceOptions = InferenceOptions()
    faces: FaceOptions = FaceOptions()
    sync: SyncOptions = SyncOptions()
    prep: PrepOptions = PrepOptions()
    output: OutputOptions = OutputOptions()
    timeline: TimelineOptions = TimelineOptions()
    curate: CurateOptions = CurateOptions()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "overrides") -> Config:
        """A new validated configuration with ``overrides`` (dotted key -> value, e.g.
        ``{"faces.select": "id", "faces.track_id": 2}``; None = not given) applied. This one is unchanged
        (configurations are frozen); errors name ``source`` and the key."""
        tree = self.to_dict()
        changed = False
        for dotted, value in overrides.items():
            if value is None:
                continue
            _assign(tree, dotted.split("."), value)
            changed = True
        return validate(tree, source=source) if changed else self


def dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"section.key": value}`` (anything else: empty)."""
    if not isinstance(tree, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def drop_keys(tree: dict[str, Any], keys: Iterable[str], added: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``tree`` (changed in place, and returned) without the dotted ``keys``, and without each key of ``added``
    (dotted key -> default) that is at its default: the one rule of content keys and hashes for settings that came
    after keys were stored (left out at their default, so what was keyed before them is still found)."""
    added = added or {}
    for key in (*keys, *added):
        *head, last = key.split(".")
        node: Any = tree
        for k in head:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and (key not in added or node.get(last, added[key]) == added[key]):
            node.pop(last, None)
    return tree


def parse_point(text: str) -> list[float] | None:
    """A pixel ``X,Y`` (or ``X Y``: a spreadsheet cell, a shell word) as ``[x, y]``; None when it is not two finite
    numbers (the caller says where it was given)."""
    import math
    import re

    try:
        point = [float(p) for p in re.split(r"[,\s]+", text.strip()) if p]
    except ValueError:
        return None
    return point if len(point) == 2 and all(math.isfinite(v) for v in point) else None


def face_overrides(track_id: int | None = None, point: Sequence[float] | None = None) -> dict[str, Any]:
    """The overrides that follow face track ``track_id`` or the face at pixel ``point`` (``faces.select`` with
    ``faces.track_id`` or ``faces.point``; the id wins when both are given), or none: a shot's or a batch row's face
    choice."""
    if track_id is not None:
        return {"faces.select": "id", "faces.track_id": track_id}
    if point is not None:
        return {"faces.select": "point", "faces.point": [float(v) for v in point]}
    return {}


def overrides_from_sets(sets: Iterable[str]) -> dict[str, Any]:
    """``--set``-style ``KEY=VALUE`` strings as an overrides mapping for :meth:`Config.with_overrides`."""
    out: dict[str, Any] = {}
    for item in set_items(sets):
        keys, value = parse_set(item)
        out[".".join(keys)] = value
    return out


# ----------------------------------------------------------------------------------------------
# Presets


def builtin_presets_dir() -> Path:
    return paths.PRESETS_DIR


def list_presets(folder: Path | None = None) -> dict[str, Path]:
    """Built-in presets by name (file stem): the run presets, or those of ``folder`` (training presets)."""
    return {p.stem: p for p in sorted((folder or builtin_presets_dir()).glob("*.yaml"))}


def preset_path(name_or_path: str, folder: Path | None = None) -> Path:
    """A built-in preset name (of ``folder``, default the run presets) or a path to a YAML file."""
    presets = list_presets(folder)
    if name_or_path in presets:
        return presets[name_or_path]
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(
                f"preset {p}: a folder, not a YAML file" if p.is_dir() else f"preset file not found: {p}",
                hint="give a built-in name or an existing YAML file"
            )
        return p
    train = paths.PRESETS_DIR / "train"
    if folder is None and name_or_path in list_presets(train):
        raise ConfigError(f"unknown preset {name_or_path!r}: it is a training preset",
                          hint=f"`lipsyncctl train --preset {name_or_path} --print-config` shows it; "
                               "`lipsyncctl train --list-presets` lists them")
    if folder == train and name_or_path in list_presets():
        raise ConfigError(f"unknown training preset {name_or_path!r}: it is a preset of sync, prep, score and curate",
                          hint=f"training presets: {', '.join(presets)}; or give a path to a YAML file")
    raise ConfigError(
        f"unknown preset {name_or_path!r}",
        hint=f"built-in presets: {', '.join(presets) or '(none)'}; or give a path to a YAML file",
    )


def read_preset(name_or_path: str, *, schema: type[BaseModel] | None = None,
                folder: Path | None = None) -> dict[str, Any]:
    """Load a preset's raw mapping (validated against ``schema``, default :class:`Config`; errors name the
    file and key). ``folder`` holds the built-in presets of that schema."""
    path = preset_path(name_or_path, folder)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(exc)})", hint="fix the YAML syntax") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                          hint="save it as UTF-8 (an editor's UTF-16 'Unicode' is not read)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a preset must be a mapping of sections", hint="see `lipsyncctl presets show tiny`"
        )
    data.setdefault("name", path.stem)
    validate(data, source=str(path), schema=schema)
    return data


def validate(data: Mapping[str, Any], source: str = "config", schema: type[Any] | None = None) -> Any:
    """``data`` as a validated ``schema`` (default :class:`Config`); a :class:`ConfigError` names the key."""
    try:
        return (schema or Config).model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        keys = keys_command(schema)
        section = f" {loc.split('.')[0]}" if "." in loc else ""
        if err["type"] == "extra_forbidden":
            msg = f"{source}: unknown key '{loc}'"
            hint = f"check the spelling; `{keys}{section}` lists the valid keys"
        else:
            msg = f"{source}: invalid value for '{loc}': {err['msg']}"
            hint = f"`{keys}{section}` gives each key's type, limits and meaning"
        raise ConfigError(msg, hint=hint) from None


#: the hint of a malformed ``--set`` (sync's keys and train's differ)
SET_EXAMPLE = "e.g. --set inference.steps=10 (sync, prep, curate) or --set optim.lr=5e-5 (train)"


def parse_set(item: str) -> tuple[list[str], Any]:
    """Parse one ``--set a.b=value``; the value is read as YAML (so 1.5, true, null, [1,2] work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE", hint=SET_EXAMPLE)
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key", hint=SET_EXAMPLE)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _assign(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            node[k] = nxt
        node = nxt
    node[keys[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_items(sets: Iterable[str] | str) -> list[str]:
    """``--set``-style items as a list: one ``"KEY=VALUE"`` string given alone is that one item (a caller's
    ``sets="inference.steps=3"`` was read a letter at a time)."""
    return [sets] if isinstance(sets, str) else list(sets)


def resolve(
    preset: str | Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    *,
    schema: type[Any] | None = None,
    folder: Path | None = None,
    named: str = "preset",
) -> Any:
    """defaults < preset < ``--set`` < flags, validated once at the end. ``named``: what a mapping ``preset`` is
    called in errors (the file a run's record came from).

    ``flags`` maps dotted keys (``"inference.steps"``) to values; ``None`` values mean "not given" and
    are ignored, so a CLI can pass every option straight through. ``schema`` (default :class:`Config`)
    and ``folder`` (its built-in presets) serve the other kind of run: training
    (:mod:`lipsyncctl.training.config`) resolves through this same function.
    """
    schema = schema or Config
    tree: dict[str, Any] = schema().model_dump(mode="json")
    source = "defaults"
    if preset is not None:
        if isinstance(preset, Mapping):
            data = dict(preset)
            validate(data, source=named, schema=schema)
        else:
            data = read_preset(preset, schema=schema, folder=folder)
            source = str(preset_path(preset, folder))
        tree = _merge(tree, data)
    for item in set_items(sets):
        keys, value = parse_set(item)
        _assign(tree, keys, value)
        source = "--set"
    validate(tree, source=source if source == "--set" else "configuration", schema=schema)
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        _assign(tree, dotted.split("."), value)
    try:
        return validate(tree, source="command-line flags", schema=schema)
    except ConfigError as exc:
        # the tree was valid before the flags: a bad flag value is a bad argument (exit 2), as when Click refuses
        # a number out of its bounds, not a bad preset (3)
        raise UsageError(exc.message, hint=exc.hint) from None


def keys_command(schema: type[Any] | None = None) -> str:
    """The command that lists ``schema``'s keys (configuration errors' hints): ``presets keys``, with ``--train`` for
    the training configuration (its ``KEYS_COMMAND``)."""
    return getattr(schema, "KEYS_COMMAND", "lipsyncctl presets keys")


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
