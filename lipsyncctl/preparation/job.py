"""The ``prep`` job: normalise media for the model — constant frame rate video, 16 kHz mono audio.

For each input clip it writes, under the output directory and mirroring the input's relative path:

- ``NAME.mp4`` (``.mov`` for ProRes and DNxHR, ``.mkv`` for FFV1; ``codec`` takes ``output.codec``'s names,
  mapped through the same table, :data:`lipsyncctl.media.writer.OUTPUT_CODECS`): the picture at a
  constant rate (``fps``, or the source's nominal rate with ``fps="source"``), rotation metadata applied to
  the pixels and cleared, resolution kept unless ``max_size``/``scale`` ask otherwise, and the 16 kHz mono
  audio muxed;
- ``NAME.wav``: the same audio as a sidecar (16-bit PCM);
- ``NAME.prep.json``: a small manifest (input size and mtime, the options, the outputs) that makes a
  rerun skip clips that are already up to date.

Inputs are never touched and never overwritten. Each clip succeeds or fails on its own; failures
(empty, truncated, corrupt or non-media files, no audio) are reported per item in :class:`PrepResult`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from lipsyncctl import progress
from lipsyncctl.config import JOBS, PrepOptions, check_count
from lipsyncctl.errors import BusyError, Interrupted, LipsyncError, MediaError, UsageError
from lipsyncctl.folders import missing_folders, remove_empty
from lipsyncctl.media.container import MEDIA_EXTS, SWS_THREADS, is_image_sequence, sequence_files
from lipsyncctl.media.inputs import LeftOut, check_inputs_exist, collect_inputs
from lipsyncctl.media.rates import exact

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".prep.json"
Status = Literal["done", "skipped", "failed", "planned"]

__all__ = ["PrepItem", "PrepResult", "PrepOptions", "collect_inputs", "prep"]


@dataclass
class PrepItem:
    """One input clip and what became of it.

    ``status``: ``done`` (written), ``skipped`` (outputs up to date), ``failed`` (``reason`` says
    why), or ``planned`` (``dry_run``: would be written).
    """

    input: Path
    output: Path
    wav: Path | None
    manifest: Path
    status: Status = "planned"
    reason: str = ""
    hint: str = ""
    frames: int | None = None
    fps: Fraction | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    source_fps: Fraction | None = None
    source_vfr: bool | None = None
    source_fields: str | None = None  # the source's field order (VideoInfo.field_order)
    rotation: int | None = None
    has_audio: bool | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def fr(x: Fraction | None) -> str | None:
            return None if x is None else f"{x.numerator}/{x.denominator}"

        return {
            "input": str(self.input), "output": str(self.output), "wav": str(self.wav) if self.wav else None,
            "manifest": str(self.manifest), "status": self.status, "reason": self.reason, "hint": self.hint, "frames": self.frames,
            "fps": fr(self.fps), "duration": self.duration, "width": self.width, "height": self.height,
            "source_fps": fr(self.source_fps), "source_vfr": self.source_vfr, "source_fields": self.source_fields,
            "rotation": self.rotation,
            "has_audio": self.has_audio, "seconds": round(self.seconds, 3), "warnings": list(self.warnings),
        }


@dataclass
class PrepResult:
    """Everything ``prep`` did. ``ok`` is False when any item failed."""

    out_dir: Path
    items: list[PrepItem]
    dry_run: bool = False
    seconds: float = 0.0
    #: the run's own warnings (each item has its own): files a folder walk left out
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[PrepItem]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0, "planned": 0}
        for item in self.items:
            out[item.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "dry_run": self.dry_run, "ok": self.ok, "counts": self.counts(),
                "seconds": round(self.seconds, 3), "warnings": list(self.warnings),
                "items": [i.to_dict() for i in self.items]}


# ------------------------------------------------------------------------------------------------
# Options

def _parse_fps(value: str) -> Fraction | None:
    """``"source"`` -> None; ``"25"``, ``"29.97"``, ``"30000/1001"`` -> an exact Fraction."""
    if value == "source":
        return None
    from lipsyncctl.media.rates import parse_rate

    return parse_rate(value)  # "29.97" means the NTSC rate, as everywhere else in video


def parse_scale(value: str | None) -> tuple[float | None, tuple[int, int] | None]:
    """``"0.5"`` -> (0.5, None); ``"1280x720"`` / ``"-1x720"`` (keep aspect) -> (None, (w, h))."""
    if value is None:
        return None, None
    text = str(value).lower().strip()
    try:
        if "x" in text:
            w, h = (int(v) for v in text.split("x", 1))
            if (w <= 0 and h <= 0) or w == 0 or h == 0 or min(w, h) < -1:
                raise ValueError
            return None, (w, h)
        factor = float(text)
        if not 0 < factor <= 8:
            raise ValueError
        return factor, None
    except ValueError:
        raise UsageError(f"--scale {value!r}: expected a factor (0.5) or WxH (1280x720, -1x720 keeps the aspect)") \
            from None


def output_size(width: int, height: int, *, max_size: int | None = None, scale: str | None = None,
                even: bool = True) -> tuple[int, int]:
    """The output ``(width, height)`` for a displayed ``width x height`` picture: ``scale`` first, then
    ``max_size`` caps the long side (aspect kept); rounded to even sides when ``even`` (4:2:0 video), down where
    rounding up would pass ``max_size`` (an odd cap: ``201`` gives at most 200)."""
    factor, box = parse_scale(scale)
    w, h = float(width), float(height)
    if factor is not None:
        w, h = w * factor, h * factor
    elif box is not None:
        bw, bh = box
        if bw < 0:
            w, h = bh * w / h, float(bh)
        elif bh < 0:
            w, h = float(bw), bw * h / w
        else:
            w, h = float(bw), float(bh)
    if max_size is not None and max(w, h) > max_size:
        k = max_size / max(w, h)
        w, h = w * k, h * k
    step = 2 if even else 1
    cap = max_size - max_size % step if max_size is not None else None
    sides = [max(step, int(v / step + 0.5) * step) for v in (w, h)]  # halves round up
    if cap is not None and cap >= step:
        sides = [min(v, cap) for v in sides]
    return sides[0], sides[1]


def _pix_fmt_for(codec: str, wanted: str) -> str:
    """``wanted`` if the encoder of ``prep.codec`` ``codec`` takes it, else that codec's own format (ProRes
    and DNxHR cannot store yuv420p; ``prores_4444`` falls back to yuv444p10le, not 4:2:2)."""
    from lipsyncctl.media.writer import encoder_formats, output_spec

    named, spec = output_spec(codec)
    formats = encoder_formats(spec.encoder)
    return wanted if not formats or wanted in formats else named.pix_fmt or spec.pix_fmt


def _options_key(options: PrepOptions, extra: dict[str, Any]) -> dict[str, Any]:
    """What a clip's outputs depend on, for every clip: ``deinterlace`` is not in it (it matters only to an
    interlaced source: :func:`_up_to_date` checks it there, so progressive outputs stay up to date), nor
    ``audio_stream`` at its default (the first stream, what outputs made before the setting hold: they stay up to
    date), nor ``sequence_fps`` (an image sequence's stamp has it: :func:`_input_stamp`)."""
    exclude = {"deinterlace", "sequence_fps"} | ({"audio_stream"} if options.audio_stream == 0 else set())
    return {"version": MANIFEST_VERSION, **options.model_dump(mode="json", exclude=exclude), **extra}


def _fields_done(item: PrepItem, manifest: dict[str, Any], deinterlace: str, keep: bool) -> bool:
    """Whether outputs of ``manifest`` are what ``deinterlace`` makes of ``item``'s source: a progressive source's
    always are; an interlaced one's when made with the same setting. A manifest from before the setting (made
    as ``off``) has its source probed, and with ``keep`` (not a dry run) the answer kept in it for later runs."""
    from lipsyncctl.media.probe import is_interlaced

    summary = manifest.setdefault("summary", {})
    if "field_order" not in summary:
        from lipsyncctl.media.atomic import atomic_output
        from lipsyncctl.media.probe import probe

        try:
            summary["field_order"] = probe(item.input).video.field_order  # type: ignore[union-attr]
        except (LipsyncError, AttributeError):
            return False
        summary["deinterlace"] = "off"
        if keep:  # where it cannot be written (a read-only output), the next run probes again
            with contextlib.suppress(OSError, LipsyncError), atomic_output(item.manifest) as tmp:
                tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return not is_interlaced(summary["field_order"]) or summary.get("deinterlace", "off") == deinterlace


# ------------------------------------------------------------------------------------------------
# Manifest (idempotence)

def _input_stamp(src: Path, sequence_fps: str) -> dict[str, Any]:
    """What an input's outputs were made from: its file(s); an image sequence's also the rate it is read at."""
    files = sequence_files(src) if is_image_sequence(src) else [src]
    stats = [f.stat() for f in files]
    stamp = {"path": str(src.resolve()), "size": sum(s.st_size for s in stats),
             "mtime_ns": max(s.st_mtime_ns for s in stats), "files": len(files)}
    from lipsyncctl.pipeline.output import sequence_rate

    rate = sequence_rate(src, sequence_fps)  # "25.0" is 25, "23.976" is 24000/1001, auto: its run.yaml's
    return {**stamp, "sequence_fps": f"{rate.numerator}/{rate.denominator}"} if is_image_sequence(src) and rate != 25 \
        else stamp


def _up_to_date(item: PrepItem, stamp: dict[str, Any], key: dict[str, Any], deinterlace: str,
                keep: bool = True) -> bool:
    try:
        manifest = json.loads(item.manifest.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("input") != stamp or manifest.get("options") != key:
        return False
    outputs = manifest.get("outputs", {})
    if not outputs:
        return False
    for path, size in outputs.items():
        p = Path(path)
        if not p.is_file() or p.stat().st_size != size:
            return False
    if not _fields_done(item, manifest, deinterlace, keep):
        return False
    summary = manifest["summary"]
    for name in ("frames", "duration", "width", "height", "has_audio"):
        setattr(item, name, summary.get(name))
    if summary.get("fps"):
        item.fps = Fraction(summary["fps"])
    if item.wav is not None and str(item.wav.resolve()) not in outputs:
        item.wav = None  # the run that made them wrote no WAV (no audio): none to report
    return True


def _write_manifest(item: PrepItem, stamp: dict[str, Any], key: dict[str, Any], outputs: list[Path],
                    deinterlace: str) -> None:
    from lipsyncctl.media.atomic import atomic_output

    data = {
        "input": stamp, "options": key,
        "outputs": {str(p.resolve()): p.stat().st_size for p in outputs},
        "summary": {"frames": item.frames, "fps": f"{item.fps.numerator}/{item.fps.denominator}" if item.fps else None,
                    "duration": item.duration, "width": item.width, "height": item.height,
                    "has_audio": item.has_audio, "field_order": item.source_fields,
                    "deinterlace": deinterlace},
    }
    with atomic_output(item.manifest) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# One clip

@dataclass
class _Job:
    options: PrepOptions
    fps: Fraction | None
    start: float
    duration: float | None
    scale: str | None
    all_inputs: tuple[Path, ...]
    cancel: threading.Event


def _plan(item: PrepItem, job: _Job) -> Any:
    """Probe the input and fill the plan fields of ``item``; returns the MediaInfo."""
    from lipsyncctl.media.probe import probe
    from lipsyncctl.pipeline.output import (
        alpha_warning,
        dropped_streams_warning,
        hdr10_warning,
        sequence_rate,
        vfr_warning,
    )

    info = probe(item.input, sequence_fps=sequence_rate(item.input, job.options.sequence_fps))
    v = info.video
    if v is None:
        raise MediaError(f"{item.input}: no video stream (an audio-only file?)")
    item.source_fps, item.source_vfr, item.rotation, item.source_fields = v.fps, v.is_vfr, v.rotation, v.field_order
    item.has_audio = info.has_audio
    if not info.has_audio and not job.options.allow_no_audio:
        raise MediaError(f"{item.input}: no audio stream",
                         hint="pass --allow-no-audio to write video-only output for such files")
    if not info.has_audio:
        item.wav = None
    fps = job.fps or v.nominal_fps
    available = max(0.0, (v.duration or 0.0) - job.start)
    if available <= 0:
        raise MediaError(f"{item.input}: --start {job.start} s is past the end ({v.duration:.3f} s)")
    seconds = available if job.duration is None else min(job.duration, available)
    item.fps = fps
    item.frames = max(1, round(exact(seconds) * fps))
    item.duration = float(item.frames / fps)
    dw, dh = v.square_size  # anamorphic footage comes out in square pixels (the networks see faces as shown)
    if v.sample_aspect != 1:
        item.warnings.append(f"anamorphic ({v.display_size[0]}x{v.display_size[1]} pixels of aspect "
                             f"{v.sample_aspect.numerator}:{v.sample_aspect.denominator}): resampled to {dw}x{dh} "
                             "square pixels")
    pix_fmt = _pix_fmt_for(job.options.codec, job.options.pix_fmt)
    item.width, item.height = output_size(dw, dh, max_size=job.options.max_size, scale=job.scale,
                                          even=pix_fmt.startswith(("yuv420", "yuvj420", "yuv422", "nv12")))
    from lipsyncctl.media.writer import OUTPUT_CODECS, size_refused

    if why := size_refused(OUTPUT_CODECS[job.options.codec].codec, item.width, item.height):
        raise MediaError(f"{item.input}: prepared at {item.width}x{item.height}; {why}",
                         hint="prepare it with another --codec (prores_hq, ffv1, h264), or a larger --scale")
    asked = output_size(dw, dh, max_size=job.options.max_size, scale=job.scale, even=False)
    if (item.width, item.height) != asked:  # a size asked for (or the source's) that 4:2:0 cannot store
        item.warnings.append(f"{asked[0]}x{asked[1]} rounded to {item.width}x{item.height} (even sides for {pix_fmt})")
    if v.is_vfr:
        item.warnings.append(vfr_warning(v.fps, fps))
    if v.interlaced and job.options.deinterlace == "auto":
        item.warnings.append(f"the source is {v.fields}: deinterlaced (bwdif, one frame per frame; "
                             "prep.deinterlace=off keeps the fields)")
    elif v.interlaced:
        from lipsyncctl.media.writer import OUTPUT_CODECS, keeps_fields

        coded = ("" if keeps_fields(OUTPUT_CODECS[job.options.codec].codec, v.field_order)
                 else f"; {job.options.codec} codes them progressive, so its fields are not tagged")
        item.warnings.append(f"the source is {v.fields}: frames are kept whole (two fields each, combed where "
                             f"things move; prep.deinterlace=auto makes them progressive){coded}")
    from lipsyncctl.media.mux import tags_not_carried

    for said in (hdr10_warning(job.options, v.color), alpha_warning(v.pix_fmt), dropped_streams_warning(info.others),
                 tags_not_carried(item.output, info.timecode, info.reel)):
        if said:
            item.warnings.append(said)
    if job.duration is not None and job.duration > available + 1e-6:
        item.warnings.append(f"only {available:.3f} s available after --start")
    return info


def _encode_video(item: PrepItem, info: Any, job: _Job, dest: Path, encoded: list[tuple[int, int]]) -> None:
    """Decode (deinterlace), conform to CFR, rotate/scale, encode to ``dest`` (video only); ``encoded`` gets the
    packets the file holds and the frames given to the encoder when the writer stops (by a write failure too)."""
    from lipsyncctl.media.reader import SEEK_MARGIN, VideoReader, conform_cfr, deinterlace, rotate, to_rgb24
    from lipsyncctl.media.writer import OUTPUT_CODECS, VideoWriter

    v = info.video
    opts = job.options
    codec = OUTPUT_CODECS[opts.codec]  # the same name -> writer mapping as sync's output.codec
    pix_fmt = _pix_fmt_for(opts.codec, opts.pix_fmt)
    assert item.fps is not None and item.frames is not None and item.width and item.height
    rot = v.rotation
    # Scale in stored orientation, then rotate (cheaper than the other way round).
    stored = (item.height, item.width) if rot in (90, 270) else (item.width, item.height)
    resize = stored != (v.width, v.height)
    start = _origin(v, job, item.fps)
    # fields kept (--deinterlace off) and not scaled (which blends them): coded and tagged interlaced, as sync does
    fields = v.field_order if v.interlaced and opts.deinterlace == "off" and not resize and not rot else None
    with VideoReader(item.input, info=info, apply_rotation=False) as reader, \
            VideoWriter(dest, item.fps, codec=codec.codec, crf=opts.crf, preset=opts.encoder_preset,
                        profile=codec.profile, pix_fmt=pix_fmt, color=v.color, inputs=job.all_inputs,
                        field_order=fields) as writer, \
            progress.Task(f"prep {item.input.name}", total=item.frames) as task:
        try:
            if job.start > 0:
                # Resume decoding before the cut: the frame on screen at --start began before it (an
                # off-grid --start or VFR input), and conform_cfr picks it from there.
                reader.seek(time=max(exact(v.start_time), start - SEEK_MARGIN))
            last_src: Any = None
            last_out: Any = None
            frames = deinterlace(reader) if v.interlaced and opts.deinterlace == "auto" else reader
            for _, frame in conform_cfr(frames, item.fps, start=start, count=item.frames):
                if job.cancel.is_set():
                    raise Interrupted("prep interrupted")
                if frame is not last_src:  # repeated slots reuse the converted frame
                    last_src = frame
                    av_frame = frame.av_frame
                    if resize:
                        av_frame = av_frame.reformat(width=stored[0], height=stored[1], interpolation="AREA",
                                                     threads=SWS_THREADS)
                    if rot:
                        av_frame = rotate(to_rgb24(av_frame), rot)
                    last_out = av_frame
                writer.write(last_out)
                task.advance(1)
        finally:
            encoded[:] = [(writer.packets_written, writer.frames_written)]


def _audio(item: PrepItem, info: Any, job: _Job) -> Iterator[Any]:
    """The clip's audio at the requested rate/channels, cut or padded to exactly the video's length, streamed
    (:func:`~lipsyncctl.media.audio.iter_audio`: an hour of sound is never held). Notes audio longer or shorter
    than the picture in ``item.warnings``."""
    from lipsyncctl.media.audio import iter_audio
    from lipsyncctl.media.probe import pick_audio_stream

    opts = job.options
    v = info.video
    start = float(_origin(v, job, item.fps))
    assert item.duration is not None
    a, several = pick_audio_stream(item.input, info, opts.audio_stream, "prep.audio_stream")
    if several:
        item.warnings.append(several)
    longer = (a.start_time + a.duration) - (start + item.duration)  # sound past the picture's (or --duration's) end
    if longer > 0.05 and job.duration is None:
        item.warnings.append(f"audio {longer:.3f} s longer than the picture: cut at the picture's end")
    elif -longer > 0.05:
        item.warnings.append(f"audio {-longer:.3f} s shorter than the picture: padded with silence")
    return iter_audio(item.input, opts.audio_rate, opts.audio_channels, start=start, duration=item.duration, pad=True,
                      stream_index=a.index)


def _check_outputs(items: list[PrepItem], inputs: tuple[Path, ...]) -> None:
    """Before any work: no two inputs get one output (same-named files of two folders given one by one or as
    two folders, ``A001/C0001.MP4`` and ``B001/C0001.MP4``: the second overwrote the first, exit 0), and no
    output is an input.

    Raises:
        UsageError: naming the files (exit 2).
    """
    from lipsyncctl.media.atomic import check_not_input

    seen: dict[Path, Path] = {}
    for item in items:
        for out in (item.output, item.wav, item.manifest):
            if out is not None:
                check_not_input(out, inputs)
        key = item.output.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {item.input} would both be written to {item.output}",
                             hint="give the folder that holds both (their paths inside it keep them apart), "
                             "or prepare them into two -o folders")
        seen[key] = item.input


def _process(item: PrepItem, job: _Job, stamp: dict[str, Any], key: dict[str, Any], force: bool = False) -> None:
    from lipsyncctl.errors import WriteError
    from lipsyncctl.media.atomic import write_error
    from lipsyncctl.runner.lock import output_lock

    info = _plan(item, job)  # the outputs were checked against the inputs before any work (_check_outputs)
    item.output.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(item.output):  # another prep of this output (BusyError): its item is skipped, said
        if not force and stamp and _up_to_date(item, stamp, key, job.options.deinterlace):
            item.status, item.reason = "skipped", "up to date (another run made it meanwhile)"
            return
        if not force:
            _check_ours(item)
        _write_pending(item)  # a run killed before its manifest leaves the outputs still its own (a rerun redoes them)
        try:
            written = _write_outputs(item, info, job)
        except BaseException as exc:
            if not any(out is not None and out.exists() for out in (item.output, item.wav)):
                item.manifest.unlink(missing_ok=True)  # nothing of it in place: no manifest left either
            if isinstance(exc, WriteError):  # a file of the hidden folder (removed now): name the output, and what
                raise write_error(item.output, exc) from exc  # it needs
            raise
        _write_manifest(item, stamp, key, written, job.options.deinterlace)
    item.status = "done"


def _check_ours(item: PrepItem) -> None:
    """An output file already there is replaced only when prep made it: its ``NAME.prep.json`` beside it lists a file
    of its name, or says a run was writing it (:func:`_write_pending`). A user's own file of that name is not (sync's
    rule for an output without its record).

    Raises:
        UsageError: naming the file (the item fails; ``--force`` replaces it).
    """
    try:
        manifest = json.loads(item.manifest.read_text())
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict) or manifest.get("pending"):
        return
    listed = {Path(p).name for p in manifest.get("outputs", {})}  # (by name: a prepped folder may have moved)
    for out in (item.output, item.wav):
        if out is not None and (out.exists() or out.is_symlink()) and out.name not in listed:
            why = f"{item.manifest.name} beside it lists no such file" if manifest else f"no {item.manifest.name} beside it"
            raise UsageError(f"{out}: exists, and prep did not make it ({why})",
                             hint="--force replaces it; or prepare into another -o folder")


def _write_pending(item: PrepItem) -> None:
    """Say in ``NAME.prep.json`` that a run is writing the item's outputs (no run reads it as up to date): a run killed
    after renaming them into place, before its manifest, leaves them prep's own for the rerun to redo."""
    from lipsyncctl.media.atomic import atomic_output

    with atomic_output(item.manifest) as tmp:
        tmp.write_text(json.dumps({"pending": True}) + "\n")


def _write_outputs(item: PrepItem, info: Any, job: _Job) -> list[Path]:
    """Write ``item``'s video (and WAV) through a hidden folder beside them; the files written."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.media.atomic import atomic_output, space_needed, sweep_temps, temp_prefix
    from lipsyncctl.media.audio import write_wav
    from lipsyncctl.media.mux import mux_audio, stamp_timecode

    opts = job.options
    written: list[Path] = []
    sweep_temps(item.output.parent, stem=item.output.stem)  # left by a killed run
    with tempfile.TemporaryDirectory(dir=item.output.parent, prefix=temp_prefix(item.output, "prep")) as tmpdir:
        audio: Any = _audio(item, info, job) if item.has_audio else None
        sidecar = audio is not None and opts.sidecar_wav and item.wav is not None
        if sidecar:  # decoded once: the WAV is written first (hidden) and the mux reads it
            audio = write_wav(Path(tmpdir) / "audio.wav", audio, opts.audio_rate)
        tc = _timecode(item, info, job)  # the source's, at the output's first frame and rate
        muxed = audio is not None and opts.mux_audio
        video_only = Path(tmpdir) / f"video{item.output.suffix}" if muxed else item.output
        encoded: list[tuple[int, int]] = []  # (packets stored, frames given) when the encoder stops: what it needs
        try:
            _encode_video(item, info, job, video_only, encoded)
            if muxed:
                with atomic_output(item.output, inputs=job.all_inputs) as tmp:
                    mux_audio(video_only, audio, tmp, rate=opts.audio_rate, codec="aac", inputs=job.all_inputs,
                              timecode=tc, reel=info.reel if tc else None)
            elif tc is not None:
                stamp_timecode(item.output, tc, reel=info.reel, inputs=job.all_inputs)
        except WriteError as exc:
            exc.needed = space_needed(exc, video_only if muxed else None, encoded[0] if encoded else (0, 0),
                                      item.frames or 0, copies=2 if muxed else 1)
            raise
        written.append(item.output)
        if sidecar:
            assert item.wav is not None
            os.replace(audio, item.wav)  # checked against the inputs before any work (_check_outputs)
            written.append(item.wav)
        elif item.wav is not None and not opts.sidecar_wav:
            item.wav = None
    return written


def _origin(v: Any, job: _Job, fps: Fraction | None) -> Fraction:
    """Where the output starts on the source's timeline (its first frame and its sound): ``--start``, or, for a
    constant-rate source kept at its rate (``fps``), the start of the frame on screen then (the picture starts on that
    frame; the sound started at ``--start`` ran up to a frame ahead of it, 30 ms at 25 fps; sync's own sound starts
    there too). A conform to another rate keeps ``--start``: output frame k is what is on screen at start + k/fps."""
    from lipsyncctl.media.rates import frame_on_screen

    first = exact(v.start_time)
    if job.start <= 0 or v.is_vfr or fps != v.nominal_fps:
        return first + exact(job.start)
    return first + Fraction(frame_on_screen(job.start, v.nominal_fps)) / v.nominal_fps


def _timecode(item: PrepItem, info: Any, job: _Job) -> str | None:
    """The output's start timecode: the source's tag plus the frames ``--start`` skips, at the output's rate (so an
    editor relinks the prepped clip by timecode, as sync's outputs); None without a tag or in a container that
    holds none."""
    from lipsyncctl.media.mux import TIMECODE_CONTAINERS
    from lipsyncctl.media.rates import frame_on_screen
    from lipsyncctl.media.timecode import start_timecode

    v = info.video
    if item.fps is None or item.output.suffix.lower() not in TIMECODE_CONTAINERS:
        return None
    skipped = frame_on_screen(job.start, v.nominal_fps)  # the frame prep starts on (conform_cfr's)
    return start_timecode(info.timecode, v.nominal_fps, skipped, item.fps)


def _run_item(item: PrepItem, job: _Job, key: dict[str, Any], force: bool, dry_run: bool) -> PrepItem:
    started = time.perf_counter()
    try:
        if job.cancel.is_set():
            raise Interrupted("prep interrupted")
        try:
            stamp = _input_stamp(item.input, job.options.sequence_fps)
        except OSError:
            stamp = {}
        if not force and stamp and _up_to_date(item, stamp, key, job.options.deinterlace, keep=not dry_run):
            item.status = "skipped"
            item.reason = "up to date"
        elif dry_run:
            _plan(item, job)
            if not force:
                _check_ours(item)
            item.status = "planned"
        else:
            from lipsyncctl.media.container import check_readable

            check_readable(item.input)
            _process(item, job, stamp, key, force)
    except Interrupted:
        raise
    except BusyError as exc:  # another prep into this folder (two overlapping runs): its file, not a failure
        item.status, item.reason = "skipped", f"another run is preparing it now ({exc.message})"
    except LipsyncError as exc:
        item.status, item.reason, item.hint = "failed", str(exc), exc.hint or ""
    except (OSError, ValueError, RuntimeError) as exc:
        # ffmpeg errors PyAV raises outside our wrappers (FFmpegError derives from these), file system
        # errors: this file fails, the batch goes on.
        item.status, item.reason = "failed", f"{item.input}: {type(exc).__name__}: {exc}"
    item.seconds = time.perf_counter() - started
    if item.status == "failed":
        progress.message(f"failed: {item.reason}")
    return item


# ------------------------------------------------------------------------------------------------
# The job

def prep(inputs: Sequence[str | Path], out_dir: str | Path, options: PrepOptions | None = None, *,
         force: bool = False, dry_run: bool = False, jobs: int = 1, start: float = 0.0,
         duration: float | None = None, scale: str | None = None) -> PrepResult:
    """Normalise every clip in ``inputs`` into ``out_dir`` (see the module doc).

    Args:
        inputs: files, directories (walked recursively for media extensions), glob patterns and
            ``%04d`` image-sequence patterns.
        out_dir: where outputs go; relative input paths are mirrored under it.
        options: the ``prep`` section of a resolved configuration (fps, audio rate/channels, codec,
            crf, encoder preset, pixel format, sidecar/mux switches, allow_no_audio, max_size).
        force: redo clips whose outputs are up to date.
        dry_run: probe and plan only; nothing is written.
        jobs: clips processed at once (threads; PyAV releases the GIL while coding).
        start, duration: seconds of each clip to keep (from ``start``; to the end if None).
        scale: ``"0.5"`` or ``"WxH"`` (``-1`` keeps the aspect), applied before ``max_size``.

    Returns:
        :class:`PrepResult` with one :class:`PrepItem` per clip; failed items carry their reason.
        Raises :class:`UsageError` for bad arguments (``out_dir`` an existing file included),
        :class:`MediaError` when a named input file does not exist, ``OSError``
        when ``out_dir`` cannot be written, :class:`Interrupted` on Ctrl-C (after removing partial
        outputs); per-file problems never raise. Folders it created (``out_dir`` included) that are still
        empty at the end (every clip failed, or Ctrl-C) are removed.
    """
    from lipsyncctl.pipeline.output import default_extension

    options = options or PrepOptions()
    check_count("--jobs", jobs, JOBS)
    if start < 0 or (duration is not None and duration <= 0):
        raise UsageError("--start must be >= 0 and --duration > 0")
    parse_scale(scale)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    others = LeftOut()
    pairs = collect_inputs(inputs, out_dir, unique_stems=True, others=others)
    if not pairs:
        raise UsageError("no media files in the inputs given",
                         hint=f"directories are searched for {', '.join(sorted(MEDIA_EXTS))}")
    skipped = others.note()
    if skipped:
        progress.warning(skipped)
    check_inputs_exist([src for src, _ in pairs])
    if out_dir.exists() and not out_dir.is_dir():  # a dry run says what the run would
        raise UsageError(f"-o {out_dir}: is a file, not a folder", hint="give the folder for the outputs")
    if not dry_run:  # a destination that cannot take the outputs fails once, not once per file
        from lipsyncctl.media.atomic import check_writable

        check_writable(out_dir / "probe", name=out_dir)
    ext = default_extension(options.codec)
    items = [PrepItem(input=src, output=out_dir / rel.parent / (rel.name + ext),
                      wav=out_dir / rel.parent / (rel.name + ".wav") if options.sidecar_wav else None,
                      manifest=out_dir / rel.parent / (rel.name + MANIFEST_SUFFIX)) for src, rel in pairs]
    _check_outputs(items, tuple(src for src, _ in pairs))
    job = _Job(options=options, fps=_parse_fps(options.fps), start=start, duration=duration, scale=scale,
               all_inputs=tuple(src for src, _ in pairs), cancel=threading.Event())
    key = _options_key(options, {"start": start, "duration": duration, "scale": scale})
    # Folders this run creates; those still empty at the end (every file failed, Ctrl-C) are removed.
    created = [] if dry_run else missing_folders(out_dir, *(item.output.parent for item in items))
    try:
        _run_all(items, job, key, force, dry_run, jobs)
    finally:
        remove_empty(created)
    return PrepResult(out_dir=out_dir, items=items, dry_run=dry_run, seconds=time.perf_counter() - t0,
                      warnings=[skipped] if skipped else [])


def _run_all(items: list[PrepItem], job: _Job, key: dict[str, Any], force: bool, dry_run: bool,
             jobs: int) -> None:
    """Process ``items`` one after another or on ``jobs`` threads; Ctrl-C cancels the rest and re-raises."""
    with progress.Task("prep", total=len(items)) as overall:
        def run(item: PrepItem) -> PrepItem:
            result = _run_item(item, job, key, force, dry_run)
            overall.advance(1)
            return result

        if jobs == 1 or len(items) <= 1:
            try:
                for item in items:
                    run(item)
            except KeyboardInterrupt:
                job.cancel.set()
                raise
        else:
            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="prep") as pool:
                # Each worker runs in a copy of this context, so its progress tasks nest under `overall`.
                futures = [pool.submit(contextvars.copy_context().run, run, item) for item in items]
                try:
                    for fut in futures:
                        fut.result()
                except BaseException:
                    job.cancel.set()
                    for fut in futures:
                        fut.cancel()
                    with contextlib.suppress(BaseException):
                        pool.shutdown(wait=True)
                    raise
