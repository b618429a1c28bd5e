"""`lipsyncctl sync --timeline`: the dubbing mode of the sync command.

``lipsyncctl/cli/sync.py`` declares every flag of both modes in one table (``FLAGS``), resolves the
configuration from it and, with ``--timeline``, hands the values to :func:`run_timeline`.
"""

from __future__ import annotations

from typing import Any

from lipsyncctl.cli import state as st
from lipsyncctl.errors import JobFailedError, UsageError

HELP = """

\b
Timeline mode (dubbing an edit; OpenTimelineIO: .otio/.otioz/.otiod, EDL, FCP XML and AAF with the adapters):
  lipsyncctl sync --timeline edit.otio --audio de=de.wav --audio fr=fr.wav -o out/ --preset latentsync-1.5
  lipsyncctl sync --timeline cut.edl --audio de.wav --audio-offset 01:00:00:00 -o out/ --dry-run --json
  lipsyncctl sync --timeline edit.otio --audio-track "DE dub" -o out/ --jobs 2 --gpus 0,1
  lipsyncctl sync --timeline edit.otio --audio de=de.wav -o out/ --shard auto   # in a SLURM array job
  lipsyncctl sync --video master.mov --audio de.wav --split-scenes -o out/   # no edit list: cut the master
  lipsyncctl sync --video in.mov --audio de.wav --segments ranges.yaml -o out/  # per-range options

\b
Each visible clip of the picture is a shot, rendered with --handles extra frames. Each run that finishes
a language delivers a new version, OUT/LANG/v001/, v002/...: the renders (shots/), the relinked timeline
(.otio, plus the input's format where an adapter writes it), the QC report (report.json, report.html)
and with --conform the full-length video, renamed into place when complete (OUT/LANG/current points at
the newest; an interrupted run, or one whose every render failed, leaves none; `lipsyncctl prune OUT` removes old ones). Finished shots are kept by
content key in OUT/.lipsyncctl/: rerun the same command after a crash to render only what is missing
or changed. One run writes to OUT at a time: a second one exits 6 naming it, or waits with --wait
(shards of one job share OUT). Clip metadata or markers `lipsync: false` leave a shot alone. Exit 1 when a shot failed or
is under --min-sync (or could not be scored, unless --unchecked-gates warn); exit 4 before any render when
--min-sync needs syncnet-v2 and it is not installed; exit 5 when no clip of the edit can be rendered.
"""

def run_timeline(values: dict[str, Any], config: Any) -> None:
    """Run the timeline job from the sync command's flags (``values``: parameter name -> value, see
    ``FLAGS`` in lipsyncctl/cli/sync.py) and the resolved ``config``."""
    from lipsyncctl import api

    # options left out keep the job's defaults (an explicit --jobs 1 is passed like any other value)
    given = {k: values[k] for k in ("audio_offset", "media_root", "edl_rate", "jobs", "backend", "conform_me")
             if values[k] is not None}
    if (values["video"] is None) == (values["timeline"] is None):  # --split-scenes/--segments take a --video
        what = "--split-scenes" if values["split_scenes"] else "--segments"
        raise UsageError(f"{what}: give the picture once, as --video CLIP (or --timeline EDIT)",
                         hint="e.g. lipsyncctl sync --video master.mov --audio de.wav --split-scenes -o out/")
    job = api.timeline_job(values["video"] or values["timeline"], values["output"],
                           split_scenes=values["split_scenes"], segments=values["segments"],
                           audio=values["audio"] or [],
                           audio_tracks=values["audio_track"] or [], relink=values["relink"] or [],
                           gpus=values["gpus"], shard=values["shard"], dry_run=values["dry_run"],
                           wait=values["wait"], **given)
    result = api.sync_timeline(job, config)
    for w in result.all_warnings():
        st.warn(w)
    st.result(result.to_dict, lambda console: _human(console, result), ok=not result.failed)
    if result.failed:
        raise JobFailedError(*result.failure(config.timeline.min_sync))


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
