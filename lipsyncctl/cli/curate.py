"""`lipsyncctl curate`: raw talking-head footage -> a LatentSync training set, with a reason for every clip."""

from __future__ import annotations

import heapq
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from lipsyncctl.cli import options as opt
from lipsyncctl.cli import state as st
from lipsyncctl.cli.flags import limits
from lipsyncctl.config import JOBS
from lipsyncctl.errors import JobFailedError

if TYPE_CHECKING:
    from lipsyncctl.api import CurateResult

HELP = """Curate training data: probe, normalise, cut into shots and 5-10 s segments, align the faces and cache
the audio features, with a reason for every rejected piece (the official LatentSync data pipeline,
resumable and without its defects).

\b
Examples:
  lipsyncctl models fetch latentsync-1.5 syncnet-v2 sfd-face hyperiqa   # what a full run needs
  lipsyncctl curate raw/ -o data/ --preset latentsync-1.5      # every stage (whisper, SyncNet, hyperIQA)
  lipsyncctl curate raw/ 'more/**/*.mp4' -o data/ --jobs 2
  lipsyncctl curate raw/ -o data/ --set curate.min_seconds=3    # re-decides from stored measurements
  lipsyncctl curate raw/ -o data/ --until segments             # only the per-source stages
  lipsyncctl curate raw/ -o data/ --shard auto                 # in a SLURM/SGE array job
  lipsyncctl curate raw/ -o data/ --gpus 0,1                   # one worker per GPU
  lipsyncctl curate raw/ -o data/ --preset tiny                # tiny random networks: a CPU demo, not data
  lipsyncctl curate report data/ --set curate.quality_min=50    # re-decide stored scores, rebuild the views
  lipsyncctl curate report data/ --set curate.quality_min=50 -n # the same decisions, nothing written
  lipsyncctl curate forget data/ raw/speaker7/                  # take sources out: records, files, views

\b
`curate report DATA` runs no stage: it takes --preset, --set, --dry-run, --wait (and the global --json).
`curate forget DATA SOURCE...` takes sources (an id or path as curated, or a folder of them) out of DATA: their
records and every file curate made of them (the source files are not touched: remove them from the inputs too),
then rebuilds the views with the settings they were written with (or --preset/--set); it takes report's options.

\b
Stages (each idempotent; its measurements are stored and reused while its inputs and settings are unchanged; a rerun after a crash or kill continues where it stopped):
  probe      PyAV probe (a truncated file is unreadable) and its first frame decoded: unreadable,
             no-video, no-audio, too-short (inputs are never modified, moved or deleted)
  normalize  16 kHz mono audio (DATA/audio/); the picture is read on the 25 fps grid, not re-encoded
  shots      PySceneDetect adaptive detector, threshold 2, min scene 0.6 s (spans, not split files);
             the full decode check: a frame that does not decode rejects the source (unreadable)
  segments   frame-exact 5-10 s spans (greedy 5 s, remainder merged; --set curate.segments=official
             for the official key-frame lengths); pieces too short for the sync stage rejected up front
  align      faces on every frame (no-face rejects the clip), the official affine to curate.resolution
             (in the shots stage's decode: curate.one_pass, the same clips as a pass of its own);
             DATA/aligned/ (the only lossy encode; curate.lossless for FFV1) + per-frame matrices
  sync       official-scale LSE-C / offset of the aligned clip (S3FD + SyncNet v2): keep conf >= 3 and
             |offset| <= 6 (curate.sync_min_conf / sync_max_offset); an offset is corrected by shifting
             the audio sample-accurately (DATA/synced/, video copied), then re-scored to confirm
             (models fetch syncnet-v2 sfd-face; curate.skip_sync to skip, said in the manifest)
  quality    hyperIQA on frames 0, n//2, n-1 of the aligned clip (official preprocessing), keep >= 40
             (curate.quality_min; models fetch hyperiqa; curate.skip_quality to skip, said in the manifest)
  features   whisper features and the Wav2Lip mel of each clip, cached by audio content key

\b
DATA gets manifest.jsonl (one line per span: source, exact frames and seconds, decision kept /
rejected(stage, reason, value) / failed(error), split), train.txt/val.txt (the official fileslist format,
split by source), report.json + report.html (counts per stage and reason, kept hours, histograms; the
page adds thumbnails of the first 24 rejected spans) and curate.yaml, rebuilt from every record each run.
Exit codes: 0 ok (rejections are normal), 1 a source failed, 2 usage, 3 bad config/preset, 4 a model the
stages need is not installed, 5 a missing input, 6 another run is writing to DATA (--wait waits for it; shards
share DATA), 130 interrupted (finished clips are kept: the next run resumes).
"""


def curate_cmd(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., help="Files, directories and glob patterns.", show_default=False),
    data: Path | None = typer.Option(None, "--output", "-o", help="The dataset folder (created if needed)."),
    preset: str | None = opt.PresetOpt,
    sets: list[str] | None = opt.SetOpt,
    print_config: bool = opt.PrintConfigOpt,
    until: str | None = typer.Option(None, "--until", help="Last stage to run (default: all; see the stages above)."),
    force: list[str] | None = typer.Option(
        None, "--force", help="Recompute this stage (and every later one) even when stored (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what a run would compute and decide, per "
                                 "source; run and write nothing."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", **limits(bounds=JOBS), help="Sources processed at once."),
    shard: str | None = typer.Option(None, "--shard", help="Process only part I/N of the sources, or 'auto'."),
    backend: str = typer.Option("local", "--backend", help="local or ray (Ray: the optional extra named ray)."),
    gpus: str | None = typer.Option(None, "--gpus", help="One worker per listed GPU, e.g. 0,1 (its clip stages "
                                    "load their networks there)."),
    wait: bool = typer.Option(False, "--wait", help="When another run is writing to DATA, wait for it to finish "
                              "(otherwise exit 6 naming it)."),
) -> None:
    from lipsyncctl import api
    from lipsyncctl.errors import UsageError

    stages = api.curate_stages()
    for name, values in (("--until", [until] if until else []), ("--force", force or [])):
        bad = [v for v in values if v not in stages]
        if bad:
            raise UsageError(f"{name} {bad[0]!r}: not a stage", hint=f"stages: {', '.join(stages)}")
    config = opt.resolve(preset, sets, {}, print_config)
    # `curate report DATA`: re-decide, rebuild views; a path named report here is an input only with -o (curating
    # ./report into DATA), or when what follows is not a curated folder
    here = Path("report").exists()
    curated = len(inputs) == 2 and api.is_curated(inputs[1])
    if inputs[0] == "report" and (not here or (data is None and curated)):
        if len(inputs) != 2 or data is not None:
            raise UsageError("give the dataset folder once: lipsyncctl curate report DATA")
        _refuse_stage_options(ctx, "report")
        result = api.curate_report(inputs[1], config, wait=wait, dry_run=dry_run)
    elif inputs[0] == "forget" and data is None and \
            (not Path("forget").exists() or (len(inputs) >= 2 and api.is_curated(inputs[1]))):
        if len(inputs) < 3:
            raise UsageError("give the dataset folder, then the sources to forget: lipsyncctl curate forget DATA "
                             "SOURCE...", hint="a source's id or path as curated (report.json lists both), or a "
                             "folder of them")
        _refuse_stage_options(ctx, "forget")
        # (no --preset/--set: the settings the views were written with; forgetting a source changes no other decision)
        result = api.curate_forget(inputs[1], inputs[2:], config if preset or sets else None, wait=wait,
                                   dry_run=dry_run)
    elif data is None:
        raise UsageError("Missing option '--output' / '-o'", hint="lipsyncctl curate RAW... -o DATA" + (
            " (a path named report is here, so `report` was read as an input; `curate report DATA` takes a "
            "curated DATA folder)" if inputs[0] == "report" and here else ""))
    else:
        result = api.curate(inputs, data, config, until=until, force=force or [], dry_run=dry_run,
                            jobs=jobs or 1, shard=shard, backend=backend, gpus=gpus, wait=wait)
    st.result(lambda: result.to_dict(lazy=True), lambda console: _render(console, result), ok=result.ok)
    if result.failures:
        names = ", ".join(s.path for s in result.failed[:3]) + (" ..." if result.failures > 3 else "")
        raise JobFailedError(f"{result.failures} source(s) failed, or some of their spans: {names}; the first: "
                             f"{result.first_error}", hint="the sources' errors are in report.json, the spans' in "
                             "manifest.jsonl; fix them and rerun (finished stages are kept)")


#: the options `curate report DATA` takes; every other one given is refused (they were accepted and ignored:
#: `--until align` looked like it did something)
REPORT_OPTIONS = ("inputs", "preset", "sets", "print_config", "dry_run", "wait")


def _refuse_stage_options(ctx: typer.Context, verb: str) -> None:
    from lipsyncctl.errors import UsageError

    args = "DATA" if verb == "report" else "DATA SOURCE..."
    for param in ctx.command.params:  # (the source's enum by name: Typer may bring a Click of its own)
        source = getattr(ctx.get_parameter_source(param.name or ""), "name", "DEFAULT")
        if param.name not in REPORT_OPTIONS and source != "DEFAULT":
            flag = param.opts[0]
            raise UsageError(f"{flag} does not apply to `curate {verb}`, which runs no stage",
                             hint=f"curate {verb} {args} [--set KEY=VALUE] [--preset P] [--dry-run] [--wait]; run "
                                  f"the stages with `lipsyncctl curate RAW... -o DATA {flag} ...`")


def _stages(names: list[str]) -> str:
    """``align:0-125, sync:0-125, sync:125-250`` as ``align (1 span), sync (2 spans)``; source stages as named."""
    counts: Counter[str] = Counter(n.split(":")[0] for n in names)
    spans = {n.split(":")[0] for n in names if ":" in n}
    return ", ".join(f"{n} ({c} span{'s' if c > 1 else ''})" if n in spans else n for n, c in counts.items()) or "-"


#: sources listed in the table: a VoxCeleb2-size run has a million (report.json and --json list every one)
TABLE_ROWS = 200


def _render(console: Console, result: CurateResult) -> None:
    rows = []
    many = len(result.sources) > TABLE_ROWS
    # failed first (a kept source with a failed span too), then not kept (rejected, undecided, no span kept), then
    # kept, each by path (the sources are read back from disk, TABLE_ROWS held)
    listed = (heapq.nsmallest(TABLE_ROWS, result.sources,
                              key=lambda s: (0 if s.failed else 1 if s.standing != "kept" else 2, s.path))
              if many else sorted(result.sources, key=lambda s: s.path))
    for s in listed:
        d = s.decision
        what = ((f"kept, {s.failed_spans} span{'s' * (s.failed_spans > 1)} failed" if s.failed_spans
                 else s.standing) if d.verdict == "kept"
                else f"to run from {d.stage} ({d.reason})" if d.verdict == "undecided"
                else f"{d.verdict} at {d.stage}: {d.reason or d.error}")
        spans = "-" if d.verdict == "undecided" else f"{s.kept}/{s.clips}"
        if result.dry_run and any(":" in n for n in s.to_compute or []):
            spans += " so far"  # clip stages still to measure some: a run may reject them
        rows.append((s.path, what, spans, _stages((s.to_compute or []) if result.dry_run else s.computed)))
    if result.forgotten is not None:  # `curate forget`: the sources taken out, then the views left
        console.print(st.table(f"forgotten{' (dry run: nothing removed)' if result.dry_run else ''}",
                               ["id", "source", "files of DATA"],
                               [(f["id"], f["path"], str(f["files"])) for f in result.forgotten]))
    title = f"curate -> {result.data}" + (" (dry run: nothing was run or written)" if result.dry_run else "")
    if not result.views_written and not result.dry_run:
        title += " (this shard's sources: the views were rebuilt by another shard since its stages ended)"
    if many:
        title += (f" ({TABLE_ROWS} of {len(result.sources)} sources: failed first, then not kept; "
                  f"{'--json' if result.dry_run else 'report.json'} lists every one)")
    console.print(st.table(title, ["source", "decision", "kept spans",
                                   "to compute" if result.dry_run else "computed"], rows))
    counts = result.counts()
    console.print(st.kv_table("counts", {
        "sources": ", ".join(f"{k} {v}" for k, v in counts["sources"].items()) or "-",
        "spans": ", ".join(f"{k} {v}" for k, v in counts["clips"].items()) or "-",
        "kept": f"{counts['kept_seconds']:.1f} s",
        **{f"rejected {k}": v for k, v in counts["rejected"].items()},
        **{f"failed at {k}": v for k, v in counts["failed"].items()},
        **({"kept, not measured yet": counts["pending"]} if counts["pending"] else {}),
    }))


def register(app: typer.Typer) -> None:
    app.command("curate", help=HELP)(curate_cmd)
