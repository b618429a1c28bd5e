"""What a sync run writes: the encoder settings for ``output.*``, the file names beside the output, run.yaml.

The encoding itself is :class:`lipsyncctl.media.writer.VideoWriter` and muxing is
:func:`lipsyncctl.media.mux.mux_audio`; this module only maps the run configuration onto them.

Codecs (``output.codec``): :data:`lipsyncctl.media.writer.OUTPUT_CODECS`, the names users give, onto the
writer's one table :data:`~lipsyncctl.media.writer.CODECS` (encoder, default pixel format and profile, the
containers that hold it: the first is the extension written when the caller names none). H.264 and H.265 keep the
source's pixel format where x264 codes it (4:2:0/4:2:2/4:4:4 in 8 or 10 bit), else 4:2:0; FFV1 is written as RGB
(lossless: every untouched pixel is exact).

{codecs}

Reproducible: the same inputs, seed and settings give the same file, byte for byte. The encoder runs
:data:`ENCODER_THREADS` threads whatever the machine (x264's output depends on its thread count, which
would otherwise follow the CPUs the process may use) and containers are written bitexact
(:mod:`lipsyncctl.media.writer`). torch's numerics depend on its own thread count (1 in 10^6 pixels
moved by one level between 1 and 2 threads on the tiny model), so run.yaml records it.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.errors import ConfigError, MediaError, UsageError
from lipsyncctl.media.writer import KEEP_PIX, OUTPUT_CODECS, codec_table, output_spec

__doc__ = (__doc__ or "").format(codecs=codec_table())

#: encoder threads of every sync output (fixed: the bytes must not depend on the CPUs the process may use;
#: a render encodes far faster than it denoises, so more would not make it finish sooner)
ENCODER_THREADS = 4

if TYPE_CHECKING:
    from lipsyncctl.config import Config, OutputOptions, PrepOptions
    from lipsyncctl.media.probe import ColorInfo
    from lipsyncctl.media.writer import VideoWriter


def containers(codec: str) -> tuple[str, ...]:
    """The extensions that can hold ``output.codec`` ``codec``, the default first (from the writer's
    one table, :data:`lipsyncctl.media.writer.CODECS`)."""
    return output_spec(codec)[1].containers


def takes_crf(codec: str) -> bool:
    """Whether ``output.codec`` ``codec`` has a CRF (x264/x265); ProRes and DNxHR are sized by their profile,
    FFV1 is lossless (from the writer's one table)."""
    return output_spec(codec)[1].crf is not None


def default_extension(codec: str) -> str:
    """The extension written for ``output.codec`` ``codec`` when the caller names none, e.g. ``.mov``."""
    return containers(codec)[0]


def check_output(output: Path, options: OutputOptions) -> None:
    """Fail fast (before any work) when the container of ``output`` cannot hold the chosen codecs.

    Raises:
        UsageError: ``output`` is an existing folder, or has no extension or one no codec is written in.
        ConfigError: e.g. ProRes into .mp4, FFV1 into .mov, PCM audio into .mp4.
    """
    from lipsyncctl.media.container import names_a_sequence

    if output.is_dir():
        raise UsageError(f"{output}: is a folder; sync writes one file",
                         hint=f"give a file name, e.g. -o {output / 'out.mp4'}")
    # one image a frame, in its extension's format (output.codec is a video's); `plate.%04d.mp4` refused
    if names_a_sequence(output):
        from lipsyncctl.media.writer import sequence_format

        try:
            sequence_format(output)
        except MediaError as exc:
            raise UsageError(exc.message, hint=exc.hint) from None
        return
    allowed = containers(options.codec)
    ext = output.suffix.lower()
    written = {e for codec in OUTPUT_CODECS for e in containers(codec)}
    if ext not in written:  # no extension (a folder meant, -o newdir/), or one no codec goes in: the name's fault
        from lipsyncctl.media.writer import SEQUENCE_FORMATS

        what = f"'{ext}' is not a video file extension written" if ext else "no file extension (it picks the container)"
        named = output.with_suffix(allowed[0]) if ext else f"{output.with_suffix(allowed[0])} or {output / 'out'}{allowed[0]}"
        raise UsageError(f"{output}: {what}", hint=f"name a file such as {named} (video: {', '.join(sorted(written))}; "
                         f"image sequences: 'shot.%04d{next(iter(SEQUENCE_FORMATS))}' and "
                         f"{', '.join(list(SEQUENCE_FORMATS)[1:])})")
    if ext not in allowed:
        raise ConfigError(f"{output}: output.codec {options.codec} cannot be stored in a '{ext or '(none)'}' file",
                          hint=f"use one of {', '.join(allowed)} for {options.codec}, or choose --codec")
    from lipsyncctl.media.mux import FIXED_AUDIO, PCM_CONTAINERS

    pcm_ok = [e for e in allowed if e in PCM_CONTAINERS]
    if options.audio_codec in ("pcm", "pcm24") and ext not in pcm_ok:
        raise ConfigError(f"{output}: PCM audio (output.audio_codec) cannot be stored in a '{ext or '(none)'}' file",
                          hint=f"use output.audio_codec=aac, or one of {', '.join(pcm_ok)} for {options.codec} with PCM")
    if options.audio_codec == "aac" and ext in FIXED_AUDIO:
        raise ConfigError(f"{output}: AAC audio (output.audio_codec) cannot be stored in a '{ext}' file (PCM only)",
                          hint="use output.audio_codec=pcm24 (or auto), or a .mov for AAC")


def audio_rate_warning(output: Path, options: OutputOptions, rate: int) -> str | None:
    """A warning when the dub's sample ``rate`` is more (or other) than the output's audio codec holds (AAC: at
    most 96 kHz) or its container (MXF: 48 kHz): its sound is resampled (:func:`~lipsyncctl.media.mux.encodable_rate`);
    else None."""
    from lipsyncctl.media.container import is_image_sequence
    from lipsyncctl.media.mux import AUDIO_CODECS, FIXED_AUDIO, auto_audio_codec, encodable_rate

    if is_image_sequence(output):  # no sound written (sequence_warnings)
        return None
    codec = options.audio_codec
    if codec == "auto":
        writer = OUTPUT_CODECS[options.codec].codec
        codec = auto_audio_codec("dnxhd" if writer == "dnxhr" else writer, output)  # the stream's codec name
    kept = encodable_rate(AUDIO_CODECS[codec][0], rate, output)
    if kept == rate:
        return None
    if output.suffix.lower() in FIXED_AUDIO:
        return (f"the dub's {rate} Hz: {output.suffix.lower()[1:].upper()} holds {kept} Hz sound only, the output's "
                f"sound is resampled to {kept} Hz (a .mov keeps the dub's rate)")
    return (f"the dub's {rate} Hz is more than {codec.upper()} holds: the output's sound is resampled to {kept} Hz "
            "(output.audio_codec=pcm24 in a .mov or .mkv keeps it)")


def carries_hdr10(options: OutputOptions | PrepOptions) -> bool:
    """Whether ``options.codec`` writes a source's HDR10 static metadata (H.264, H.265: their SEI)."""
    from lipsyncctl.media.writer import keeps_hdr10

    return keeps_hdr10(OUTPUT_CODECS[options.codec].codec)


def hdr10_warning(options: OutputOptions | PrepOptions, color: ColorInfo | None, sequence: bool = False) -> str | None:
    """What becomes of a source's HDR10 static metadata (:attr:`ColorInfo.hdr10`): said when ``options.codec``
    writes the file without it (:func:`carries_hdr10`), and always for an image ``sequence`` (whatever the codec)."""
    from lipsyncctl.media.writer import keeps_hdr10

    if color is None or not color.hdr10 or (carries_hdr10(options) and not sequence):
        return None
    kept = ", ".join(name for name, c in OUTPUT_CODECS.items() if keeps_hdr10(c.codec))
    if sequence:
        return ("the source carries HDR10 metadata (mastering display, content light level): an image sequence is "
                f"written without it, its pictures the source's values as decoded ({kept} in a video file carry it)")
    return (f"the source carries HDR10 metadata (mastering display, content light level): {options.codec} is written "
            f"with its colour tags but without that metadata here ({kept} carry it)")


def float_picture_warning(pix_fmt: str | None) -> str | None:
    """What becomes of floating-point pictures (an EXR plate, ``gbrpf32le``): they are read as display values in
    0..1, clipped outside it, and written at the output codec's integer depth; said for such a source only."""
    if pix_fmt is None or not any(tag in pix_fmt for tag in ("f32", "f16")):
        return None
    return (f"the pictures are floating point ({pix_fmt}, as EXR): they are read as display values in 0-1 (values "
            "outside are clipped, no colour transform is applied) and written at the output codec's integer depth; "
            "convert a linear-light plate to its display transform first")


def dropped_streams_warning(others: tuple[str, ...]) -> str | None:
    """The source's streams an output made of its picture and one sound does not hold (subtitles, a second picture,
    cover art, data: :attr:`~lipsyncctl.media.probe.MediaInfo.others`); None when there are none."""
    if not others:
        return None
    return (f"not carried into the output: {', '.join(others)} (it holds the picture, one sound and the timecode; "
            "mux them back from the source, e.g. with ffmpeg -map, where they are needed)")


def alpha_warning(pix_fmt: str | None) -> str | None:
    """A source with an alpha channel (ProRes 4444 ``yuva444p12le``, PNG ``rgba``): the output is opaque."""
    import av

    try:
        alpha = pix_fmt is not None and any(c.is_alpha for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return None
    if not alpha:
        return None
    return f"the source's alpha channel ({pix_fmt}) is not carried: the output is opaque"


def depth_warning(options: OutputOptions, source_pix_fmt: str | None, *, turned: bool = False) -> str | None:
    """An integer source deeper than the picture written (a 10-bit ProRes master into FFV1's 8-bit RGB or DNxHR HQ's
    8-bit 4:2:2): the whole picture loses its low bits, outside the face too; said with the settings that keep them
    (those whose frames the splice writes from the source's own samples: :func:`~lipsyncctl.media.splice.keeps_samples`,
    ``turned``: a source its rotation tag turns). A float source is :func:`float_picture_warning`'s."""
    from lipsyncctl.media.splice import keeps_samples
    from lipsyncctl.media.writer import encoder_formats
    from lipsyncctl.media.writer import pix_bits as bits

    written = output_pix_fmt(options, source_pix_fmt)
    try:
        if source_pix_fmt is None or float_picture_warning(source_pix_fmt) or bits(source_pix_fmt) <= 8:
            return None
        if keeps_samples(written, source_pix_fmt, turned=turned) and bits(written) >= bits(source_pix_fmt):
            return None
    except (ValueError, TypeError):  # a format FFmpeg does not know
        return None

    def keeps(codec: str, pix_fmt: str) -> bool:  # (a codec with a profile codes the profile's format: DNxHR HQ 8-bit)
        named, spec = output_spec(codec)
        fixed = named.profile or spec.profile
        return (pix_fmt in encoder_formats(spec.encoder) and (fixed is None or pix_fmt == (named.pix_fmt or spec.pix_fmt))
                and keeps_samples(pix_fmt, source_pix_fmt, turned=turned) and bits(pix_fmt) >= bits(source_pix_fmt))

    depth = bits(source_pix_fmt)
    if keeps(options.codec, source_pix_fmt):
        keep = f"--set output.pix_fmt={source_pix_fmt}, which {options.codec} codes, keeps them"
    else:
        ways = [f"--codec {c}" for c in ("prores_hq", "prores_4444")
                if c != options.codec and keeps(c, output_spec(c)[0].pix_fmt or output_spec(c)[1].pix_fmt)]
        ways += [f"--codec ffv1 --set output.pix_fmt={f}" for f in dict.fromkeys(
            (source_pix_fmt, f"gbrp{depth}le")) if keeps("ffv1", f)][:1]  # (deep RGB: any integer source)
        keep = f"{' or '.join(ways[:2])} keeps them" if ways else "no output codec here keeps them"
    if bits(written) < depth:
        return (f"the output is {bits(written)}-bit ({written}) and the source {depth}-bit ({source_pix_fmt}): the "
                f"whole picture loses its low bits, outside the face too ({keep})")
    return (f"the output ({written}) is written from the render's 8-bit picture, not from the source's {depth}-bit "
            f"samples ({source_pix_fmt}{', turned' if turned else ''}): the whole picture loses its low bits, outside "
            f"the face too ({keep})")


def aspect_warning(output: Path, options: OutputOptions, sample_aspect: Fraction) -> str | None:
    """An anamorphic source (pixels not square) written where its pixel aspect cannot be stored
    (:func:`~lipsyncctl.media.writer.keeps_sample_aspect`: ProRes in .mkv, DNxHR in .mxf): it plays square."""
    from lipsyncctl.media.writer import keeps_sample_aspect

    if sample_aspect == 1 or keeps_sample_aspect(OUTPUT_CODECS[options.codec].codec, output):
        return None
    return (f"{options.codec} in {output.suffix.lower()} stores no pixel aspect: the source's {sample_aspect} is "
            f"lost and the output plays square (write a .mov, or h264/h265/ffv1, to keep it)")


#: a dub whose loudest sample stays below this (dBFS) is taken for silence: the wrong file or stream, most likely
SILENT_DBFS = -60.0


def vfr_warning(mean: Fraction, grid: Fraction) -> str:
    """What a sync and a prep do with a variable-frame-rate source (``mean``: its mean rate): it is conformed to a
    constant ``grid``, each output frame the source frame shown at that frame's time, so frames repeat or drop where
    the source's spacing varies (not re-timed: the picture stays in step with its sound)."""
    return (f"variable frame rate (mean {float(mean):.3f} fps) conformed to a constant {float(grid):.3f} fps: each "
            "output frame is the source frame shown at its time (frames repeat or drop where the spacing varies; "
            "the picture stays in step with the sound)")


def level_warning(codec: str, samples: np.ndarray, several: bool = False, silent: bool = True,
                  channel_peak: Callable[[], float] | None = None) -> str | None:
    """What the dub's level tells (``samples``: its 16 kHz mono copy, read a block at a time: a long one is mapped
    from disk; ``codec``: the dub's own; ``several``: its file has several sound streams): a silent dub (its peak
    below :data:`SILENT_DBFS`: every mouth is rendered to silence; not with ``silent`` False: a timeline's shot
    without dialogue is no mistake) or a floating-point one above full scale (a PCM
    output clips it; AAC keeps it above full scale, which a player clips; half a decibel over is needed: a resampled
    sound of an exactly full-scale file may overshoot by less). ``channel_peak``: the peak of the dub's loudest
    channel on its own, asked for when the mono mix is silent (channels that cancel in the mix: one polarity-inverted)."""
    import math

    step = 1 << 20
    peak = max((float(np.abs(samples[i:i + step]).max()) for i in range(0, len(samples), step)), default=0.0)
    level = 20 * math.log10(peak) if peak > 0 else -math.inf
    if level < SILENT_DBFS and silent:
        own = channel_peak() if channel_peak is not None else 0.0
        if own > 0 and 20 * math.log10(own) >= SILENT_DBFS:  # the file plays: only the mix the model hears is silent
            return (f"the dub's channels cancel in the mono mix the model hears (one is polarity-inverted? each peaks "
                    f"at {20 * math.log10(own):.0f} dBFS on its own): every mouth is rendered to silence; give a mono "
                    "file of one channel (ffmpeg -i DUB -af 'pan=mono|c0=c0' dub_mono.wav)")
        said = "digital silence" if peak == 0 else f"peak {level:.0f} dBFS"
        other = " or another of its sound streams (--set sync.audio_stream=N)" if several else ""
        return (f"the dub is silent ({said}): every mouth is rendered to silence; check that it is the right file"
                f"{other}")
    if codec.startswith("pcm_f") and peak > 10 ** (0.5 / 20):
        return (f"the dub goes above full scale (peak +{level:.1f} dBFS, a floating-point file): a PCM output clips "
                "its loud parts, and an AAC one keeps them above full scale, which players clip; lower its level "
                "before the sync")
    return None


def interlace_warning(options: OutputOptions, fields: str, field_order: str | None, deinterlace: str = "auto",
                      sequence: bool = False) -> str:
    """What a sync does with an interlaced source (``fields``: its order in words): the face is found and rendered
    from deinterlaced pictures (``deinterlace`` auto, ``sync.deinterlace``) or from whole frames (off), and the
    output keeps the field order where ``options.codec`` can and the source says which field comes first (else it
    is progressive; an image ``sequence`` always is: each image holds both fields, untagged)."""
    from lipsyncctl.media.writer import keeps_fields

    if deinterlace == "auto":
        said = (f"the source is {fields}: the face is found and rendered from deinterlaced pictures (bwdif) and "
                "pasted onto the source's own frames; ")
    else:
        said = f"the source is {fields}: the face is rendered from whole frames (both fields at once); "
    if sequence:
        return said + "an image sequence stores no field order: each image holds both fields, as a progressive picture"
    codec = OUTPUT_CODECS[options.codec].codec
    if keeps_fields(codec, field_order):
        return said + "the output keeps the field order, with the source's own fields outside the face"
    if keeps_fields(codec, "tt"):  # the codec keeps fields, but the source does not say in which order
        return (said + f"its field order is not known, so {options.codec} is written progressive here; "
                "deinterlace it first (e.g. ffmpeg -vf bwdif) for a progressive delivery")
    # (the codecs that keep fields are those that keep a known order: ``tt`` stands for any)
    kept = ", ".join(name for name, c in OUTPUT_CODECS.items() if keeps_fields(c.codec, "tt"))
    return (said + f"{options.codec} is written progressive here ({kept} keep the fields); deinterlace it first "
            "(e.g. ffmpeg -vf bwdif) for a progressive delivery")


def check_frame_size(output: Path, options: OutputOptions, source_pix_fmt: str | None,
                     size: tuple[int, int]) -> None:
    """Fail fast (before any work) when the pixel format written cannot store ``size`` (width, height): 4:2:0 needs
    even sides, and an odd-sized source keeps its size (nothing is cropped or scaled); or the encoder cannot code it
    (DNxHR under 256x120).

    Raises:
        MediaError: e.g. a 539x959 RGB or 4:4:4 source into the default 4:2:0 H.264.
    """
    from lipsyncctl.media.container import is_image_sequence
    from lipsyncctl.media.writer import size_refused

    if is_image_sequence(output):  # RGB, any size
        return
    pix_fmt = output_pix_fmt(options, source_pix_fmt)
    width, height = size
    if why := size_refused(OUTPUT_CODECS[options.codec].codec, width, height):
        raise MediaError(f"{output}: the picture is {width}x{height}; {why}",
                         hint="use --codec prores_hq or ffv1 for it (or scale it up first: `lipsyncctl prep --scale`)")
    if pix_fmt.startswith(("yuv420", "yuvj420", "nv12")) and (width % 2 or height % 2):
        raise MediaError(f"{output}: the picture is {width}x{height}; {options.codec} in {pix_fmt} cannot store an odd side",
                         hint="use --set output.pix_fmt=yuv444p or --codec ffv1, or make the sides even first "
                         "(`lipsyncctl prep` does)")


def output_pix_fmt(options: OutputOptions, source_pix_fmt: str | None) -> str:
    """The pixel format written: ``output.pix_fmt`` if set, else the codec's (see module doc)."""
    if options.pix_fmt:
        return options.pix_fmt
    named, spec = output_spec(options.codec)
    if named.keeps_source and source_pix_fmt in KEEP_PIX:
        return source_pix_fmt
    return named.pix_fmt or spec.pix_fmt


def open_writer(path: Path, fps: Fraction, options: OutputOptions, *, color: ColorInfo | None = None,
                source_pix_fmt: str | None = None, inputs: tuple | list = (),
                sample_aspect: Fraction | None = None, field_order: str | None = None,
                start_number: int = 1) -> VideoWriter:
    """A :class:`~lipsyncctl.media.writer.VideoWriter` for ``output.*`` (written under a temporary name,
    renamed on ``close()``; use it as a context manager so an exception leaves nothing). ``color``,
    ``sample_aspect`` and ``field_order``: the source's, so that the output looks and plays like it (an interlaced
    source's fields kept where the codec can: :func:`~lipsyncctl.media.writer.keeps_fields`). An image sequence
    ``path`` (``shot.%04d.png``) is written in its extension's format from frame ``start_number``, in
    ``output.pix_fmt`` where set, else an RGB source's own format where it can be
    (:func:`~lipsyncctl.media.writer.sequence_pix_fmt`), a PNG at zlib level ``output.png_level``."""
    from lipsyncctl.media.container import is_image_sequence
    from lipsyncctl.media.writer import VideoWriter, sequence_format, sequence_pix_fmt

    codec = OUTPUT_CODECS[options.codec]
    sequence = is_image_sequence(path)
    pix_fmt = (options.pix_fmt or sequence_pix_fmt(path, source_pix_fmt)) if sequence \
        else output_pix_fmt(options, source_pix_fmt)
    png = sequence and sequence_format(path)[0] == "png"
    return VideoWriter(path, fps, codec=codec.codec, crf=options.crf, preset=options.encoder_preset,
                       profile=codec.profile, pix_fmt=pix_fmt, color=color, inputs=inputs, threads=ENCODER_THREADS,
                       sample_aspect=sample_aspect, field_order=field_order, start_number=start_number,
                       options={"compression_level": str(options.png_level)} if png else None)


def sequence_warnings(output: Path, options: OutputOptions) -> list[str]:
    """What is said when ``output`` is an image sequence: it holds no sound (the dub is ``--audio``, from its first
    frame), and an ``output.codec`` other than the default is not used (the extension's format is; ``output.crf``
    is not used either, not said: presets set their own, and the frames are written whole). (Its HDR10 and field
    order: :func:`hdr10_warning`, :func:`interlace_warning`.)"""
    from lipsyncctl.config import OutputOptions
    from lipsyncctl.media.container import is_image_sequence
    from lipsyncctl.media.writer import sequence_format

    if not is_image_sequence(output):
        return []
    said = ["an image sequence holds no sound: the dub is not written with it (it plays from the first image)"]
    if options.codec != OutputOptions.model_fields["codec"].default:
        encoder, pix_fmt = sequence_format(output)
        said.append(f"output.codec {options.codec} is not used: the image sequence is written as its extension's "
                    f"format ({encoder}, {pix_fmt})")
    return said


def matte_path(output: Path) -> Path:
    """``out.mp4`` -> ``out.matte.mp4`` (the changed region, white = generated); ``shot.%04d.png`` ->
    ``shot.matte.%04d.png``."""
    from lipsyncctl.media.container import is_image_sequence, sequence_tagged

    if is_image_sequence(output):
        return sequence_tagged(output, "matte")
    return output.with_name(f"{output.stem}.matte{output.suffix}")


def record_sharers(output: Path) -> str:
    """Which outputs share ``output``'s record (:func:`run_yaml_path`), as a refusal's hint says it."""
    from lipsyncctl.media.container import sequence_stem

    stem = sequence_stem(output)
    return (f"the outputs named {stem} with any extension share it" if stem
            else "the outputs of this folder without a name before the frame number share it")


def run_yaml_path(output: Path) -> Path:
    """``out.mp4`` -> ``out.run.yaml`` (the resolved configuration of the run); ``shot.%04d.png`` ->
    ``shot.run.yaml``."""
    from lipsyncctl.media.container import sequence_stem

    stem = sequence_stem(output)
    return output.with_name(f"{stem}.run.yaml" if stem else "run.yaml")


def read_record(output: Path) -> dict[str, Any] | None:
    """``output``'s record (:func:`run_yaml_path`) as written, or None where there is none that can be read: the one
    reader of it (a record may be another output's of the same stem: its ``output`` says)."""
    import yaml

    try:
        doc = yaml.safe_load(run_yaml_path(output).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def sequence_rate(video: Path, setting: str) -> Fraction:
    """The rate an image-sequence input plays at (its files state none): ``setting`` (``sync.sequence_fps``,
    ``prep.sequence_fps``) when it is a number; ``auto``: the output rate its ``STEM.run.yaml`` records when a
    lipsyncctl run wrote this pattern, else 25 (FFmpeg's default). Unused for a video file (it states its own)."""
    from lipsyncctl.media.container import DEFAULT_SEQUENCE_FPS, is_image_sequence
    from lipsyncctl.media.rates import parse_rate

    if setting != "auto":
        return parse_rate(setting)
    if not is_image_sequence(video):
        return DEFAULT_SEQUENCE_FPS
    made = read_record(video)
    try:  # (the record this pattern's: not shot.%04d.dpx's)
        if made is not None and Path(str(made["output"])).name == video.name:
            rate = parse_rate(made["plan"]["fps"])
            if rate > 0:
                return rate
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass  # not one of ours: FFmpeg's default
    return DEFAULT_SEQUENCE_FPS


def check_record(output: Path) -> None:
    """``OUT.run.yaml`` is this output's record or nobody's: ``x.mov`` and ``x.mkv`` share ``x.run.yaml``, and the
    record of the other one, while it is there, is not replaced (that output would be left without its record).

    Raises:
        UsageError: the record names another output that exists (exit 2).
    """
    from lipsyncctl.media.container import exists

    path = run_yaml_path(output)
    doc = read_record(output)
    named = doc.get("output") if doc is not None else None
    if not isinstance(named, str) or Path(named).name == output.name:
        return
    other = path.parent / Path(named).name
    if exists(other):
        raise UsageError(f"{path} is the record of {other}, another output of this name: it is not replaced",
                         hint="write this output under another name (-o), or move that one away first")


def write_run_yaml(output: Path, config: Config, plan: dict[str, Any], inputs: dict[str, str],
                   models: dict[str, str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``OUT.run.yaml`` (version, inputs, output, frame plan, model files, resolved config) atomically."""
    import yaml

    from lipsyncctl import __version__
    from lipsyncctl.media.atomic import atomic_output

    doc = {"lipsyncctl": __version__, "inputs": inputs, "output": str(output), "plan": plan,
           "models": models, **(extra or {}), "config": config.to_dict()}
    path = run_yaml_path(output)
    with atomic_output(path, inputs=list(inputs.values())) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path
