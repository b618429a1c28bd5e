"""`lipsyncctl sync --timeline`: the dubbing mode of the sync command.

``lipsyncctl/cli/sync.py`` registers its clip command through :func:`with_timeline_mode`, which adds
the timeline flags to the same command and dispatches: without ``--timeline`` the clip command runs
unchanged (with exactly one ``--audio`` file); with it, :func:`timeline_cmd` runs the job.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from lipsyncctl.cli import options as opt
from lipsyncctl.cli import state as st
from lipsyncctl.errors import JobFailedError, UsageError

HELP = """

\b
Timeline mode (dubbing an edit; OpenTimelineIO: .otio/.otioz/.otiod, EDL and FCP XML with the adapters):
  lipsyncctl sync --timeline edit.otio --audio de=de.wav --audio fr=fr.wav -o out/ --preset latentsync-1.5
  lipsyncctl sync --timeline cut.edl --audio de.wav --audio-offset 01:00:00:00 -o out/ --dry-run --json
  lipsyncctl sync --timeline edit.otio --audio-track "DE dub" -o out/ --jobs 2 --gpus 0,1
  lipsyncctl sync --timeline edit.otio --audio de=de.wav -o out/ --shard auto   # in a SLURM array job

\b
Each visible clip of the picture is a shot, rendered with --handles extra frames to OUT/LANG/shots/;
OUT/LANG/ gets the relinked timeline (.otio, plus the input's format where an adapter writes it), the QC
report (report.json, report.html) and with --conform the full-length video. Finished shots are kept by
content key in OUT/.lipsyncctl/: rerun the same command after a crash to render only what is missing
or changed. Clip metadata or markers `lipsync: false` leave a shot alone. Exit 1 when a shot failed or
is under --min-sync.
"""

#: name -> (annotation, typer option) of the flags only the timeline mode has
TIMELINE_PARAMS: dict[str, tuple[Any, Any]] = {
    "timeline": (Path | None, typer.Option(None, "--timeline", "-t", help="Dub an edit (OTIO, EDL, FCP XML) instead of one clip.")),
    "audio_offset": (str | None, typer.Option(None, "--audio-offset", help="Timeline: where the --audio files start: seconds after the first frame, or a timecode HH:MM:SS:FF.")),
    "audio_track": (list[str] | None, typer.Option(None, "--audio-track", help="Timeline: use the timeline's audio track NAME (or LANG=NAME) as a dub (repeatable).")),
    "media_root": (Path | None, typer.Option(None, "--media-root", help="Timeline: folder to find media that is not where the edit says.")),
    "relink": (list[str] | None, typer.Option(None, "--relink", help="Timeline: replace a media path prefix, OLD=NEW (repeatable).")),
    "edl_rate": (float | None, typer.Option(None, "--edl-rate", help="Timeline: frame rate of an EDL (it stores none), e.g. 23.976.")),
    "handles": (int | None, typer.Option(None, "--handles", min=0, max=1000, help="Timeline: extra frames rendered before/after each shot (timeline.handles).")),
    "non_dialogue": (str | None, typer.Option(None, "--non-dialogue", help="Timeline: render, passthrough (keep source pixels) or close (closed mouth) where nobody speaks (timeline.non_dialogue).")),
    "conform": (bool | None, typer.Option(None, "--conform/--no-conform", help="Timeline: also write the full-length video with the dub (timeline.conform).")),
    "min_sync": (float | None, typer.Option(None, "--min-sync", help="Timeline: fail shots whose SyncNet confidence is below this (needs syncnet-v2).")),
    "jobs": (int, typer.Option(1, "--jobs", "-j", min=1, max=256, help="Timeline: shots rendered at once by local worker processes.")),
    "gpus": (str | None, typer.Option(None, "--gpus", help="Timeline: one worker per listed GPU, e.g. 0,1.")),
    "shard": (str | None, typer.Option(None, "--shard", help="Timeline: render only part I/N of the shots (0-based), or 'auto' from SLURM_ARRAY_TASK_ID/COUNT.")),
    "backend": (str, typer.Option("local", "--backend", help="Timeline: local or ray (Ray: the optional extra named ray).")),
    "dry_run": (bool, typer.Option(False, "--dry-run", help="Timeline: print the plan (shots, frames, languages, work) and stop.")),
}

#: clip-command flags that mean nothing for a timeline
_CLIP_ONLY = {"start": "--start", "end": "--end", "fps": "--fps", "face": "--face", "face_at": "--face-at"}

_VIDEO = typer.Option(None, "--video", "-i", help="The clip whose mouth is re-rendered (not with --timeline).")
_AUDIO = typer.Option(None, "--audio", "-a", help="The new dialogue (WAV, FLAC, AAC, or a file with sound). "
                      "With --timeline: FILE or LANG=FILE, repeatable, aligned to the timeline's first frame.")


def with_timeline_mode(clip_cmd: Callable[..., None]) -> Callable[..., None]:
    """``clip_cmd`` with the timeline flags added; dispatches on ``--timeline``."""
    hints = typing.get_type_hints(clip_cmd)
    params = []
    for name, p in inspect.signature(clip_cmd).parameters.items():
        ann, default = hints[name], p.default
        if name == "video":
            ann, default = Path | None, _VIDEO
        elif name == "audio":
            ann, default = list[str] | None, _AUDIO
        params.append(p.replace(annotation=ann, default=default))
    for name, (ann, default) in TIMELINE_PARAMS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ann, default=default))

    def command(**kwargs: Any) -> None:
        tl = {k: kwargs.pop(k) for k in TIMELINE_PARAMS}
        if tl["timeline"] is not None:
            return timeline_cmd(kwargs, tl)
        given = [f"--{k.replace('_', '-')}" for k, v in tl.items() if v not in (None, False, 1, "local", [])]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --timeline")
        if kwargs["video"] is None:
            raise UsageError("Missing option '--video' (or give --timeline)")
        audio = kwargs["audio"] or []
        if len(audio) != 1:
            raise UsageError("give exactly one --audio file for a clip (LANG=FILE lists are for --timeline)")
        kwargs["audio"] = Path(audio[0])
        return clip_cmd(**kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = clip_cmd.__name__
    command.__doc__ = clip_cmd.__doc__
    return command


def timeline_cmd(clip: dict[str, Any], tl: dict[str, Any]) -> None:
    """Run the timeline job from the sync command's flags."""
    from lipsyncctl.runner.devices import parse_gpus
    from lipsyncctl.runner.shards import parse_shard
    from lipsyncctl.timeline import dub as dubs
    from lipsyncctl.timeline.source import parse_relink

    if clip["video"] is not None:
        raise UsageError("--video and --timeline are exclusive")
    bad = [flag for k, flag in _CLIP_ONLY.items() if clip.get(k) is not None]
    if bad:
        raise UsageError(f"{', '.join(bad)}: not with --timeline",
                         hint="per-shot options go in the clip's metadata: {'lipsync': {'face': 1}}")
    flags = {
        "inference.steps": clip["steps"], "inference.guidance": clip["guidance"], "inference.seed": clip["seed"],
        "inference.dtype": clip["dtype"], "inference.device": clip["device"],
        "inference.deepcache": clip["deepcache"], "sync.length_policy": clip["length_policy"],
        "output.codec": clip["codec"], "output.crf": clip["crf"], "output.matte": clip["matte"],
        "faces.backend": clip["detector"], "timeline.handles": tl["handles"],
        "timeline.non_dialogue": tl["non_dialogue"], "timeline.conform": tl["conform"],
        "timeline.min_sync": tl["min_sync"],
    }
    config = opt.resolve(clip["preset"], clip["sets"], flags, clip["print_config"])
    from lipsyncctl import api
    from lipsyncctl.timeline.job import TimelineJob

    job = TimelineJob(
        timeline=tl["timeline"], output=clip["output"], audio=dubs.parse_audio_specs(clip["audio"] or []),
        audio_tracks=dubs.parse_track_specs(tl["audio_track"] or []), audio_offset=tl["audio_offset"],
        media_root=tl["media_root"], relink=parse_relink(tl["relink"]), edl_rate=tl["edl_rate"],
        jobs=tl["jobs"], gpus=parse_gpus(tl["gpus"]), shard=parse_shard(tl["shard"]), backend=tl["backend"],
        dry_run=tl["dry_run"],
    )
    result = api.sync_timeline(job, config)
    for w in result.warnings:
        st.warn(w)
    st.result(result.to_dict(), lambda console: _human(console, result), ok=not result.failed)
    if result.failed:
        raise JobFailedError(f"{len(result.failed)} shot(s) failed or are under --min-sync: "
                             f"{', '.join(result.failed[:8])}", hint="see OUT/LANG/report.html")


def _human(console: Any, result: Any) -> None:
    d = result.to_dict()
    plan = d["plan"]
    console.print(st.kv_table("timeline", {
        "edit": f"{plan['name']} at {plan['fps']} fps from {plan['start']} ({plan['duration_frames']} frames)",
        "shots": len(plan["segments"]), "skipped": "; ".join(f"{k['name']}: {k['reason']}" for k in plan["skipped"]) or "-",
        "shard": d["shard"], **{k: v for k, v in d["counts"].items()},
    }))
    for lang, info in d["languages"].items():
        console.print(st.table(f"{lang}{' (dry run)' if d['dry_run'] else ''}",
                               ["shot", "record", "frames", "render", "status", "output"],
                               [(s["id"], f"{s['record_in']}-{s['record_out']}", s["frames"], s["rendered_frames"],
                                 s["status"] + (" (reused)" if s["reused"] else ""), s["output"] or "")
                                for s in info["shots"]]))
        if info.get("report"):
            console.print(f"report: {info['report_html']}  timeline: {', '.join(info['timelines'])}")
