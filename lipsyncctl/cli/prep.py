"""`lipsyncctl prep`: normalise clips for the model (constant frame rate, 16 kHz mono audio)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

from lipsyncctl.cli import options as opt
from lipsyncctl.cli import state as st
from lipsyncctl.cli.flags import finite_number, limits
from lipsyncctl.config import JOBS, PrepOptions, codec_help
from lipsyncctl.errors import JobFailedError

if TYPE_CHECKING:
    from lipsyncctl.api import PrepResult

HELP = """Normalise media for the model: constant frame rate video and 16 kHz mono audio.

\b
Examples:
  lipsyncctl prep raw/ 'shots/*.mov' take3.mp4 -o prepped/     # 25 fps CFR + 16 kHz mono
  lipsyncctl prep raw/ -o prepped/ --fps source                  # keep the rate, make it constant
  lipsyncctl prep raw/ -o prepped/ --fps 30000/1001 --codec h265 --crf 20 --jobs 2
  lipsyncctl prep 'frames/%04d.png' -o prepped/ --allow-no-audio # an image sequence (read at 25 fps;
                                       # --set prep.sequence_fps=24 --fps source keeps it at 24)
  lipsyncctl prep raw/ -o prepped/ --dry-run --json              # the plan, for scripts

\b
INPUTS are files, directories (searched recursively for video files; hidden files skipped) and glob
patterns ('**' recurses; quote them). Outputs mirror each input's path relative to the directory or
glob prefix given: NAME.mp4 (.mov for ProRes and DNxHR, .mkv for FFV1) with the audio muxed, NAME.wav (the
sidecar audio) and NAME.prep.json (a manifest). Inputs are never modified or overwritten.
Variable frame rate footage is conformed: output frame k shows the last source frame at or before
time k/fps. Rotation metadata is applied to the pixels and cleared. Resolution is kept unless
--max-size or --scale. Files without audio fail unless --allow-no-audio (video-only output, no WAV).
Clips whose outputs are up to date (same input size/mtime and options) are skipped; --force redoes them.
Broken, truncated, empty or non-media files are reported with their reason and the rest carry on;
the exit code is then 1. Exit codes: 0 ok, 1 some files failed, 2 usage (two inputs that would
get one output, an output on an input), 3 bad config/preset, 5 a missing input, 130 interrupted.
"""


def _default(name: str) -> object:
    """The schema's default of ``prep.NAME`` (the help says it; the schema declares it)."""
    return PrepOptions.model_fields[name].default


def _on(name: str) -> str:
    return "on" if _default(name) else "off"


def prep_cmd(
    inputs: list[str] = typer.Argument(..., help="Files, directories and glob patterns.", show_default=False),
    out_dir: Path = typer.Option(..., "--output", "-o", help="Output directory (created if needed)."),
    preset: str | None = opt.PresetOpt,
    sets: list[str] | None = opt.SetOpt,
    print_config: bool = opt.PrintConfigOpt,
    fps: str | None = typer.Option(None, "--fps", help=f"Output rate: {_default('fps')} (default), 30000/1001, 29.97, or 'source' (prep.fps)."),
    codec: str | None = typer.Option(None, "--codec", help=f"{codec_help()}; default {_default('codec')} (prep.codec)."),
    crf: int | None = typer.Option(None, "--crf", help=f"H.264/H.265 quality, lower = better (prep.crf, default {_default('crf')})."),
    encoder_preset: str | None = typer.Option(
        None, "--encoder-preset", help="x264/x265 speed preset, e.g. veryfast (prep.encoder_preset)."),
    pix_fmt: str | None = typer.Option(None, "--pix-fmt", help=f"Output pixel format (prep.pix_fmt, default {_default('pix_fmt')})."),
    audio_rate: int | None = typer.Option(None, "--audio-rate", help=f"Audio sample rate in Hz (prep.audio_rate, default {_default('audio_rate')})."),
    audio_channels: int | None = typer.Option(None, "--audio-channels", help=f"Audio channels (prep.audio_channels, default {_default('audio_channels')})."),
    wav: bool | None = typer.Option(None, "--wav/--no-wav", help=f"Write the NAME.wav sidecar (prep.sidecar_wav, default {_on('sidecar_wav')})."),
    mux: bool | None = typer.Option(None, "--mux-audio/--no-mux-audio", help=f"Mux the audio into the video (prep.mux_audio, default {_on('mux_audio')})."),
    allow_no_audio: bool | None = typer.Option(
        None, "--allow-no-audio/--require-audio", help="Files without audio give video-only output instead of failing."),
    max_size: int | None = typer.Option(None, "--max-size", help="Downscale so the long side is at most this (even sides: an odd cap gives one less)."),
    deinterlace: str | None = typer.Option(
        None, "--deinterlace", help="Interlaced sources: auto (bwdif, one frame per frame; default) or off (keep "
        "the fields) (prep.deinterlace)."),
    scale: str | None = typer.Option(None, "--scale", help="Scale factor (0.5) or WxH (1280x720; -1x720 keeps aspect)."),
    start: float = typer.Option(0.0, "--start", min=0, callback=finite_number,
                                help="Seconds to skip at the start of each clip."),
    duration: float | None = typer.Option(None, "--duration", min=0.001, callback=finite_number,
                                          help="Seconds to keep from --start."),
    force: bool = typer.Option(False, "--force", "-f", help="Redo clips whose outputs are up to date."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Probe and plan only; write nothing."),
    jobs: int = typer.Option(1, "--jobs", "-j", **limits(bounds=JOBS), help="Clips processed at once."),
) -> None:
    flags = {
        "prep.fps": fps, "prep.codec": codec, "prep.crf": crf, "prep.encoder_preset": encoder_preset,
        "prep.pix_fmt": pix_fmt, "prep.audio_rate": audio_rate, "prep.audio_channels": audio_channels,
        "prep.sidecar_wav": wav, "prep.mux_audio": mux, "prep.allow_no_audio": allow_no_audio,
        "prep.max_size": max_size, "prep.deinterlace": deinterlace,
    }
    config = opt.resolve(preset, sets, flags, print_config)
    from lipsyncctl import api

    result = api.prep(inputs, out_dir, config.prep, force=force, dry_run=dry_run, jobs=jobs, start=start,
                  duration=duration, scale=scale)
    st.result(result.to_dict, lambda console: _render(console, result), ok=result.ok)
    failed = result.failed
    if failed:
        raise JobFailedError(
            f"{len(failed)} of {len(result.items)} file(s) failed: "
            + "; ".join(str(i.input) for i in failed[:3]) + (" ..." if len(failed) > 3 else ""),
            hint="the table (or --json) gives each reason; fix or drop those files and rerun "
                 "(finished outputs are skipped)",
        )


_STYLE = {"done": "green", "skipped": "dim", "planned": "cyan", "failed": "bold red"}


def _note(item) -> str:  # type: ignore[no-untyped-def]
    from lipsyncctl.errors import MediaError

    if item.status != "failed":
        return "; ".join(item.warnings) or item.reason
    reason = item.reason
    prefix = f"{item.input}: "
    if reason.startswith(prefix):  # the input column already names the file
        reason = reason[len(prefix):]
    if item.hint and item.hint != MediaError.default_hint:
        reason += f" ({item.hint})"
    return reason


def _render(console: Console, result: PrepResult) -> None:
    table = st.table(f"prep -> {result.out_dir}" + (" (dry run)" if result.dry_run else ""),
                     ["input", "status", "frames", "fps", "size", "note"], [])
    for item in result.items:
        table.add_row(
            Text(str(item.input)), Text(item.status, style=_STYLE[item.status]),
            "" if item.frames is None else str(item.frames),
            "" if item.fps is None else f"{float(item.fps):.3f}".rstrip("0").rstrip("."),
            "" if not item.width else f"{item.width}x{item.height}", Text(_note(item)),
        )
    console.print(table)
    counts = ", ".join(f"{n} {k}" for k, n in result.counts().items() if n)
    console.print(f"{len(result.items)} file(s): {counts} in {result.seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("prep", help=HELP)(prep_cmd)
