"""Steps 3 and 4 of the curation job: every stored source and span of DATA decided from its measurements and
``config.curate``, and the views (:mod:`lipsyncctl.curation.views`) rebuilt, a source at a time.

A source's spans are decided, written to the manifest and the split lists, and counted
(:class:`~lipsyncctl.curation.outcome.Tally`), then dropped, and its outcome is spooled to a temporary file on
DATA's disk (:class:`~lipsyncctl.curation.outcome.Spool`): memory holds one source's spans, the sorted list of the
source ids (~80 B a source), the tallies and 8 bytes per measured value for the histograms. The six views are
written under temporary names and renamed together at the end (:func:`~lipsyncctl.curation.views.text_files`).
"""

from __future__ import annotations

import contextlib
import json
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lipsyncctl import progress
from lipsyncctl.config import Config, CurateOptions
from lipsyncctl.curation import views
from lipsyncctl.curation.decide import decide_clips, decide_source, source_stages_left
from lipsyncctl.curation.outcome import STAGES_LEFT, CurateResult, SourceOutcome, Tally, spool_sources
from lipsyncctl.curation.records import Decision, RecordStore, SourceRecord, Stage, Verdict

VIEWS = ("manifest.jsonl", "train.txt", "val.txt", "report.json", "report.html", "curate.yaml")


def rebuild(data: Path, config: Config, *, until: str, shard: tuple[int, int] = (0, 1),
            done: dict[str, list[str]] | None = None, scope: frozenset[str] | None = None, complete: bool = True,
            warnings: Sequence[str] = (), models: dict[str, dict[str, str]] | None = None,
            write: bool = True, dry_run: bool = False, lost: dict[str, tuple[str, str]] | None = None,
            without: frozenset[str] = frozenset()) -> CurateResult:
    """Decide every source and span stored in ``data`` and write its views; the result's warnings are
    ``warnings`` (said before) and what the decisions leave ``train`` to know (:func:`warn_decisions`).
    ``done``: the stages each source computed this run; ``scope``: the sources this run was given;
    ``complete``: the run went through every stage; ``models``: the clip stages' network files (curate.yaml).
    Not ``write``: the sources of ``scope`` only, decided and counted, nothing written (a shard whose records a
    later rebuild has read: :func:`views_generation`); with ``dry_run`` too, every source decided, the spans listed as
    a dry run's plan and the decisions' warnings given (``curate report --dry-run``: thresholds tried, nothing
    written). ``lost``: id -> (path, why) of the sources whose worker process died on them (killed for memory): each
    failed in this result, saying so (nothing stored: the next run computes what it did not finish). ``without``: ids
    of sources left out (a dry run of ``curate forget``: the views as they would be without them)."""
    import yaml

    from lipsyncctl import __version__
    from lipsyncctl.curation.clipstages import CLIP_STAGES
    from lipsyncctl.curation.reuse import STAGE_VERSION

    options, fps = config.curate, config.curate.fps
    store = RecordStore.of(data)
    if until == "report":  # (no stage ran: the views say how far the last run that ran stages went)
        until = _last_until(data / "curate.yaml") or until
    # a source's span ids are its id, "_" and zero-padded frames: sources in this order give the spans by id
    ids = [rid for rid in (store.ids("sources") if write or scope is None else scope) if rid not in without]
    ids.sort(key=lambda rid: rid + "_")
    # (the outcomes spooled on DATA's disk: the system's temporary folder may be small, or memory; a dry run's in the
    # system's: it writes nothing in DATA, which may be a colleague's, read-only)
    spool = spool_sources(None if dry_run else store.root.parent)
    result = CurateResult(data, until, shard, Tally(fps), warnings=list(warnings), scope=scope, views_written=write,
                          sources=spool, dry_run=dry_run and not write)
    several, streams = [], 0
    if (write or result.dry_run) and (changed := settings_changed(data / "curate.yaml", options)):
        _warn(result, changed)
    if write:
        data.mkdir(parents=True, exist_ok=True)
        progress.message(f"writing the manifest and the report ({len(ids)} source{'s' * (len(ids) != 1)})")
        sinks = views.text_files([data / n for n in VIEWS])
    else:
        sinks = contextlib.nullcontext([_Nowhere()] * len(VIEWS))
    with sinks as (manifest, train, val, report_json, report_html, yaml_file):
        lists, listed = {"train": train, "val": val}, {"train": 0, "val": 0}
        values: dict[str, array[float]] = {}
        rejected: list[dict[str, Any]] = []  # the first ones, for the report's thumbnails
        paths: dict[str, str] = {}           # of their sources
        shown: list[SourceOutcome] = []      # the first sources not kept, for the report's page
        lost = lost or {}
        for rid in sorted({*ids, *lost}, key=lambda rid: rid + "_") if lost else ids:
            raw = store.load("sources", rid)
            if raw is None and rid in lost:  # (died before its first record)
                raw = SourceRecord(rid, lost[rid][0], "").to_dict()
            if raw is None:
                continue
            rec = SourceRecord.from_dict(raw)
            spans = decide_clips(rec, options, store.clip_records(rec.id))  # by first frame: by id
            decision = decide_source(rec, options) if rid not in lost else \
                Decision.failed("worker", f"{lost[rid][1]}; the next run retries it")
            outcome = SourceOutcome(rec.id, rec.path, decision, (done or {}).get(rec.id, []),
                                    len(spans), sum(c.decision.verdict == Verdict.KEPT for c in spans),
                                    stages_left=source_stages_left(rec))
            split = result.add(outcome, spans, options)
            if outcome.standing != Verdict.KEPT and len(shown) < views.SOURCE_ROWS:
                shown.append(outcome)
            for clip in spans:
                line = {**clip.to_dict(fps), "split": split}  # (its paths this DATA's: RecordStore.load)
                manifest.write(json.dumps(line) + "\n")
                if clip.decision.verdict == Verdict.KEPT and line.get("aligned"):
                    lists[split].write(str(line["aligned"]) + "\n")
                    listed[split] += 1
                elif clip.decision.verdict == Verdict.REJECTED and len(rejected) < views.THUMBNAILS:
                    rejected.append(line)
                    paths[rec.id] = rec.path
                for k, v in views.measured(line):
                    values.setdefault(k, array("d")).append(v)
            probe = rec.result(Stage.PROBE)
            if probe is not None and probe.error is None and probe.data.get("audio_streams"):
                streams += 1
                if len(several) < 5:
                    several.append(f"{Path(rec.path).name} ({probe.data['audio_streams']}, stream "
                                   f"{probe.data['audio_stream']})")
        if several:  # which stream is the speech is a guess the user should see (a dub's M&E first, say)
            more = f" and {streams - 5} more" if streams > 5 else ""
            _warn(result, f"{streams} source(s) have several audio streams; the one used is given: "
                          f"{', '.join(several[:5])}{more} (--set curate.audio_stream=N picks another)")
        if write or result.dry_run:
            warn_decisions(result, options, complete=complete)
        if not write:
            return result
        report = {"counts": result.counts(), "until": str(until), "split": listed,
                  "histograms": views.histograms(values), "warnings": list(result.warnings)}
        # the sources a line each, in the manifest's order (a VoxCeleb2-size dataset has a million: not held as
        # one text, read back from the spool); the page lists the first of those not kept
        report_json.write(json.dumps(report, indent=1).removesuffix("\n}") + ',\n "sources": [')
        for i, line in enumerate(result.sources.lines()):
            report_json.write(("," if i else "") + "\n  " + line)
        report_json.write("\n ]\n}\n")
        not_kept = sum(result.tally.sources.values()) - result.tally.sources[str(Verdict.KEPT)]
        report_html.write(views.report_html({**report, "sources": [s.to_dict() for s in shown]},
                                            views.reject_thumbnails(rejected, paths, fps), sources_not_kept=not_kept))
        doc = {"tool": f"lipsyncctl {__version__}", "until": str(until), "stages": stage_names(),
               "stage_versions": {**{str(k): v for k, v in STAGE_VERSION.items()},
                                  **{s.name: s.version for s in CLIP_STAGES}},
               "curate": options.model_dump(),
               # the network files of this run's clip stages and their fingerprints (size, mtime, sha256 of the
               # first and last MiB: lipsyncctl.runner.store.file_fingerprint)
               "models": {stage: {role: {"path": path, "fingerprint": _fingerprint(path)}
                                  for role, path in files.items()} for stage, files in (models or {}).items()}}
        yaml_file.write(yaml.safe_dump(doc, sort_keys=False))
    return result


class _Nowhere:
    """A text file that keeps nothing (the views of a rebuild that writes none)."""

    def write(self, text: str) -> int:
        return len(text)


def views_generation(data: Path) -> tuple[int, int] | None:
    """``(started, finished)``: how many rebuilds of ``data``'s views have started and the number of the last one
    that finished ((0, 0) before the first; None when its record is there but cannot be read)."""
    store = RecordStore.of(data)
    doc = store.load("views", "generation")
    if doc is None:
        return None if store.exists("views", "generation") else (0, 0)
    return int(doc.get("started", 0)), int(doc.get("finished", 0))


def set_views_generation(data: Path, started: int, finished: int) -> None:
    """Record a rebuild's start (its number) or its end (call while holding the ``views`` step of
    :func:`~lipsyncctl.runner.lock.one_at_a_time`)."""
    RecordStore.of(data).save("views", "generation", {"started": started, "finished": finished})


def stage_names() -> list[str]:
    """Every stage in order: the per-source ones, then the clip stages built so far."""
    from lipsyncctl.curation.clipstages import CLIP_STAGES
    from lipsyncctl.curation.records import STAGES

    return [str(s) for s in STAGES] + [s.name for s in CLIP_STAGES]


def warn_decisions(result: CurateResult, options: CurateOptions, *, complete: bool = True) -> None:
    """What the decisions of a whole dataset leave ``train`` that it should know: no span kept at all (thresholds
    that reject everything; a shard sees the others' sources unfinished, so not said there), or kept spans not
    measured yet (a loosened threshold keeps spans the later stages skipped, or DATA holds an earlier run's
    ``--until``): kept so far, and ``train`` needs their features; a split per source of sources that share
    folders (:func:`~lipsyncctl.curation.views.split_warning`). A run stopped early (``--until``; not ``complete``)
    gets the split warning only: the rest is not decided yet."""
    tally = result.tally
    # the views are the whole dataset's (every record), unless this is one shard of several: the others' sources
    # may still be being measured (a run over a later batch of sources said nothing of the views it rebuilt)
    whole = result.scope is None or result.shard[1] == 1
    split = views.split_warning(tally.folders, options) if whole else None
    if split:
        _warn(result, split)
    if tally.pending:
        stages = sorted(tally.pending_stages, key=stage_names().index)
        what = f"{tally.pending} kept span(s) are not measured by {', '.join(stages)} yet"
        if result.shard[1] > 1:  # the other shards' spans may still be being measured: their views come later
            _warn(result, f"{what}: the other shards' sources among them are measured by their shards, which rebuild "
                          "the views when they end; any that stay unmeasured: run `lipsyncctl curate` on their "
                          "sources again (without --until)")
        else:
            _warn(result, f"{what}: run `lipsyncctl curate` on their sources again (without --until) to measure them; "
                          "training needs their features")
    if left := tally.sources.get(STAGES_LEFT, 0):  # (said by an --until run too: its views list no span of them)
        what = f"{left} source(s) have source stages left (an interrupted run or shard, or --until): they give no span yet"
        _warn(result, f"{what}; the other shards' sources among them are computed by their shards, and any left after: "
                      "run `lipsyncctl curate` on them again" if result.shard[1] > 1 else
                      f"{what}; run `lipsyncctl curate` on them again" + (" (without --until)" if not complete else ""))
    if not complete:
        return
    if whole and result.sources and not tally.clips.get(str(Verdict.KEPT)):
        failed = sum(tally.failed.values())
        why = (f"{failed} failed (manifest.jsonl gives each span's error, report.json each source's: fix it and rerun "
               "`lipsyncctl curate`, which retries them)" if failed else
               "no source gave a span: report.json says why each was rejected (unreadable, no-audio, too-short...)"
               if not sum(tally.clips.values()) else
               "report.html says why each was rejected; loosen a threshold and rerun `lipsyncctl curate report`")
        _warn(result, f"no span of the {len(result.sources)} source(s) is kept: training has nothing to read ({why})")
    if whole and tally.clips.get(str(Verdict.KEPT)) and not tally.kept_in_train:
        _warn(result, f"every kept span is in val (curate.val_fraction {options.val_fraction:g}, split by "
                      f"{options.split_by}): train has nothing to read (a smaller val_fraction, another split_seed, "
                      "or curate.split_by=source where the sources share one folder)")
    groups = tally.kept_groups
    # said where val was to be expected (a group or more at val_fraction): a handful of sources often has none
    if whole and not tally.kept_in_val and len(groups) * options.val_fraction >= 1:
        _warn(result, f"no kept span is in val ({len(groups)} split groups at curate.val_fraction "
                      f"{options.val_fraction:g}): train's held-out loss and validation have nothing (a larger "
                      "val_fraction, another split_seed, or run.val_clip)")
    if tally.tiny_measured:  # (a demo's dataset, or a demo's clips kept beside real ones: train cannot tell them)
        _warn(result, f"{tally.tiny_measured} kept span(s) were measured by the tiny preset's random networks (sync "
                      "not measured, quality scores meaning nothing): their decisions are a demo's; curate them with "
                      "the real models (`lipsyncctl models fetch syncnet-v2 sfd-face hyperiqa`, then rerun curate "
                      "on their sources: their measurements are redone)")
    other = {r: n for r, n in tally.resolutions.items() if r != options.resolution}
    if other:
        _warn(result, f"{sum(other.values())} kept span(s) are aligned at another resolution than curate.resolution "
                      f"{options.resolution} ({', '.join(f'{n} at {r}' for r, n in sorted(other.items()))}): "
                      "train reads one resolution; rerun curate on their sources")


def views_record(views_yaml: Path) -> dict[str, Any]:
    """What a DATA's ``curate.yaml`` says of its views (the settings, how far the runs went...); empty where it is
    not there or cannot be read: the one reader of it."""
    import yaml

    try:
        doc = yaml.safe_load(views_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def views_config(data: Path) -> Config:
    """The configuration whose ``curate`` section is the one ``data``'s views were last written with (its
    ``curate.yaml``; the defaults where it cannot be read, or holds what this version refuses): what a change that
    is not about the settings (``curate forget``) decides with, and what a hint offers instead."""
    from lipsyncctl.config import resolve
    from lipsyncctl.errors import ConfigError

    before = views_record(data / "curate.yaml").get("curate")
    if isinstance(before, dict):
        with contextlib.suppress(ConfigError):
            return resolve({"curate": before})
    return resolve()


def _last_until(views_yaml: Path) -> str | None:
    """The last stage the runs behind the views went up to (their ``curate.yaml``), None where it does not say."""
    until = views_record(views_yaml).get("until")
    return until if isinstance(until, str) and until in stage_names() else None


def settings_changed(views_yaml: Path, options: CurateOptions) -> str | None:
    """What is said when ``options`` differ from the ``curate`` settings the views were last written with (their
    ``curate.yaml``): a plain ``curate report`` after ``report --set curate.quality_min=50`` decides with the preset's
    thresholds again, which the user should hear of (with the ``--set`` that keeps the earlier ones). The settings
    are compared as the schema reads them (``2`` and ``2.0`` are one value). None when they are the same, or there
    are no views yet (or none this version reads)."""
    from pydantic import ValidationError

    before = views_record(views_yaml).get("curate")
    if not isinstance(before, dict):
        return None
    now = options.model_dump(mode="json")
    then = dict(now)
    for k in (k for k in before if k in now):  # one key at a time: a value this version refuses hides no other
        try:
            then[k] = type(options).model_validate({**now, k: before[k]}).model_dump(mode="json")[k]
        except ValidationError:
            then[k] = before[k]
    changed = [k for k in now if then[k] != now[k]]
    if not changed:
        return None
    said = ", ".join(f"curate.{k} {json.dumps(then[k])} -> {json.dumps(now[k])}" for k in changed)
    keep = " ".join(f"--set curate.{k}={json.dumps(then[k], separators=(',', ':'))}" for k in changed)
    return (f"settings differ from those the views were last written with ({views_yaml.name}): {said}; "
            f"the views are decided anew with these (to keep the earlier ones: {keep})")


def _warn(result: CurateResult, text: str) -> None:
    result.warnings.append(text)
    progress.warning(text)


def _fingerprint(path: str) -> str | None:
    from lipsyncctl.runner.store import file_fingerprint

    return file_fingerprint(Path(path)) if Path(path).exists() else None
