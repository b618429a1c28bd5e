"""`lipsyncctl score`: LSE-C / LSE-D of clips (how well each mouth matches a sound track)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from lipsyncctl.cli import options as opt
from lipsyncctl.cli import state as st
from lipsyncctl.cli.flags import schema_bounds
from lipsyncctl.errors import JobFailedError

if TYPE_CHECKING:
    from lipsyncctl.api import ScoreResult

HELP = """Measure how well the mouth of each clip matches a sound track: LSE-C (sync confidence, higher = better)
and LSE-D (distance, lower = better), as LatentSync's evaluation does, with the audio-video offset found.

\b
Examples:
  lipsyncctl score out.mp4                          # a sync's output against its own sound
  lipsyncctl score in.mp4 out.mp4 --audio de.wav    # before and after, against the dub
  lipsyncctl score out/*.mp4 --min-sync 3 --json    # a QC gate: exit 1 if one is under 3

\b
Needs the evaluation SyncNet (`lipsyncctl models fetch syncnet-v2`, exit 4 without it). With sfd-face installed
too the scores are on the official scale (S3FD face tracks, the official crop; the official data filter keeps
LSE-C >= 3); otherwise on a labelled approximate scale (a crop around the faces --detector finds), not
comparable with published numbers. The offset is in 25 fps frames (positive: the sound is early). A clip
without a face track of 50 frames (2 s) is not measured on the official scale. Exit codes: 0 ok, 1 a clip
failed, or was under --min-sync or not measured with --min-sync (one clip: a bad file is exit 5), 2 usage,
3 bad config, 4 syncnet-v2 or the face detector missing, 5 --audio or the one clip given not found (of several
clips, a missing one fails alone: 1), 130 interrupted.
"""

_MIN_SYNC_LOW, _MIN_SYNC_HIGH = schema_bounds("timeline.min_sync")


def score_cmd(
    videos: list[Path] = typer.Argument(..., help="The clips to measure.", show_default=False),
    audio: Path | None = typer.Option(None, "--audio", "-a", help="The sound to measure every clip against "
                                      "(default: each clip's own)."),
    start: float | None = typer.Option(None, "--start", min=0, help="First second of each clip to measure."),
    end: float | None = typer.Option(None, "--end", min=0, help="Last second of each clip to measure."),
    min_sync: float | None = typer.Option(None, "--min-sync", min=_MIN_SYNC_LOW, max=_MIN_SYNC_HIGH,
                                          help="A clip whose LSE-C is under this, or that cannot be measured, "
                                          "fails (exit 1)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (inference.device)."),
    detector: str | None = typer.Option(None, "--detector", help="The approximate scale's face detector: auto, "
                                        "dlib, face-alignment, insightface (faces.backend)."),
    preset: str | None = opt.PresetOpt,
    sets: list[str] | None = opt.SetOpt,
    print_config: bool = opt.PrintConfigOpt,
) -> None:
    from lipsyncctl import api

    config = opt.resolve(preset, sets, {"inference.device": device, "faces.backend": detector}, print_config)
    result = api.score(videos, config, audio=audio, start=start, end=end, min_sync=min_sync)
    failed = result.failed
    if len(result.clips) == 1 and failed and failed[0].error is not None:
        raise failed[0].error  # one clip that cannot be read: its own exit code (5: bad media)
    st.result(result.to_dict, lambda console: _render(console, result), ok=result.ok)
    if failed:
        names = "; ".join(f"{c.video}: {c.reason}" for c in failed[:3]) + (" ..." if len(failed) > 3 else "")
        raise JobFailedError(f"{len(failed)} of {len(result.clips)} clip(s) did not pass: {names}",
                             hint="the table (or --json) gives each clip's scores and reason")


def _render(console: Console, result: ScoreResult) -> None:
    def num(value: float | int | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [(str(c.video), str(c.audio) if c.audio != c.video else "(its own)", c.status, num(c.lse_c, ".2f"),
             num(c.lse_d, ".2f"), num(c.offset, "+d"), str(c.frames), "; ".join(filter(None, [c.reason, *c.warnings])) or "-")
            for c in result.clips]
    console.print(st.table(f"sync scores ({result.scale} scale)", ["clip", "sound", "status", "LSE-C", "LSE-D",
                                                                  "offset", "frames", "note"], rows))
    if not result.model.get("verified") and result.model.get("note"):  # a note: stderr (-q drops it; --json has it)
        st.note(result.model["note"])


def register(app: typer.Typer) -> None:
    app.command("score", help=HELP)(score_cmd)
