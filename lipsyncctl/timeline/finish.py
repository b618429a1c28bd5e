"""Step 5 of the timeline job, per language: shot table, relinked timeline(s), conform, QC report.

Outputs are written only when every shot of the language is settled (rendered, reused, failed, or
left alone for a reason), so shards of an array job never write a half-finished timeline: the shard
that settles the last shot writes them (and a plain rerun, which renders nothing new, does too).
They are written as one new version, ``OUT/<lang>/vNNN/``, renamed into place when every language of the run is
complete (:mod:`~lipsyncctl.timeline.delivery`). A language with failed shots is delivered with them reported,
as long as one shot has a render; one whose every render failed (a full disk, a broken model) is a failed
run: no version, and ``current`` stays on the last good one. (Only a shard's own failures are known to it: the
job store records finished shots, so another shard's failed shot is pending here, and the language waits for
the rerun that renders it.)
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import progress
from lipsyncctl.errors import LipsyncError
from lipsyncctl.media import timecode as tb
from lipsyncctl.media.thumbnails import thumbnail_uri
from lipsyncctl.scoring.evaluator import EvalSyncNet, load_eval_syncnet
from lipsyncctl.scoring.meter import SyncMeter
from lipsyncctl.scoring.official import SCALE_APPROXIMATE, load_official_scorer
from lipsyncctl.timeline import gates, qc
from lipsyncctl.timeline.delivery import CURRENT, Deliveries, Delivery, building, current_version
from lipsyncctl.timeline.mediaio import read_frames
from lipsyncctl.timeline.outputs import conform, relinked_timeline, shot_extension, write_timelines
from lipsyncctl.timeline.report import relative_href, write_html, write_json
from lipsyncctl.timeline.types import LanguageCounts, LanguageResult, ShotResult, ShotStatus

#: the report's warning when the official measurement's detector is missing
APPROXIMATE_NOTE = (f"sync scores are on the {SCALE_APPROXIMATE} scale (a centred 1.3x face box): not comparable "
                    "with the official LSE-C/LSE-D or the official LSE-C >= 3 threshold; install sfd-face "
                    "(`lipsyncctl models fetch sfd-face`) for the official scale")

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.segments import TimelinePlan
    from lipsyncctl.timeline.source import MediaResolver
    from lipsyncctl.timeline.types import ShotState, TimelineJob


def me_warning(me: Path, plan: TimelinePlan, dub: DubTrack) -> str | None:
    """What to say of the conform's M&E ``me``: shorter than the edit (silent past its end: the dub's shortness is
    said, the bed's was not), or mixed at the dub's lower rate (what is above its Nyquist frequency is lost)."""
    from lipsyncctl.media.probe import probe

    try:
        streams = probe(me).audio
    except LipsyncError:
        return None
    if not streams:
        return None
    audio = streams[0]  # (the conform mixes the first)
    said = []
    edit = float(plan.duration / plan.fps)
    if audio.duration is not None and audio.duration + 1 / float(plan.fps) < edit:
        said.append(f"it ends at {audio.duration:.2f} s of the {edit:.2f} s edit (silent after)")
    if audio.sample_rate > dub.rate:
        said.append(f"it is mixed at the dub's {dub.rate} Hz (the M&E is {audio.sample_rate} Hz: its sound above "
                    f"{dub.rate // 2} Hz is lost; give a dub at {audio.sample_rate} Hz to keep it)")
    return f"--conform-me {me.name}: " + "; ".join(said) if said else None


def shot_row(s: ShotState, plan: TimelinePlan) -> ShotResult:
    """One shot of the report / ``--json`` result."""
    seg, oc = s.segment, s.outcome
    status = s.status
    frames = (oc.frames if oc is not None else None) or seg.render_frames
    faces = oc.faces_found if oc is not None else None
    done = status == ShotStatus.DONE
    return ShotResult(
        id=seg.id, name=seg.name, status=status, reused=s.reused, rendered=s.rendered, key=s.key,
        output=oc.output if oc is not None else None,
        record_in=plan.timecode(seg.record_start), record_out=plan.timecode(seg.record_start + seg.record_frames),
        record_start=seg.record_start, frames=seg.record_frames, rendered_frames=seg.render_frames,
        source_start=seg.source_start, handles=[seg.handle_in, seg.handle_out],
        face_coverage=None if faces is None or not done else round(faces / max(frames, 1), 4),
        no_face_frames=oc.no_face_frames if oc is not None and done else None,
        speech_coverage=round(s.speech_coverage, 4),
        warnings=list(seg.warnings) + list(oc.warnings if oc is not None else []),
        error=oc.error if oc is not None else None, to_render=s.task is not None and not s.rendered,
    )


def finish_language(job: TimelineJob, config: Config, timeline: Any, resolver: MediaResolver, plan: TimelinePlan,
                    dub: DubTrack, shots: list[ShotState], mine: list[ShotState],
                    warnings: list[str], together: Deliveries | None = None) -> LanguageResult:
    """Settle one language: rows, counts and, once no shot is pending, its timelines, conform and QC report
    (``resolver`` finds the input's media, for the files a bundle output embeds); ``together``: its version is
    delivered with the other languages' (:func:`~lipsyncctl.timeline.delivery.delivering`)."""
    rows = [shot_row(s, plan) for s in shots]

    def count(status: ShotStatus) -> int:
        return sum(1 for r in rows if r.status == status)

    counts = LanguageCounts(
        shots=len(rows),
        rendered=sum(1 for s in shots if s.rendered and s.status == ShotStatus.DONE),
        reused=sum(1 for s in shots if s.reused),
        failed=count(ShotStatus.FAILED), no_face=count(ShotStatus.NO_FACE), no_dialogue=count(ShotStatus.NO_DIALOGUE),
        pending=count(ShotStatus.PENDING),
        # what is left: a dry run's whole part, none once this run rendered its part
        to_render=sum(1 for s in mine if s.language == dub.language and s.task is not None and not s.rendered),
        done=count(ShotStatus.DONE), skipped=len(plan.skipped),
    )
    result = LanguageResult(dub=dub.source, counts=counts, shots=rows)
    if job.dry_run or counts.pending:
        return result
    if counts.failed and not counts.done:  # a failed run: no version, `current` stays on the last good one
        last = current_version(job.output / dub.language)
        kept = f"{job.output / dub.language / CURRENT} still names {last}" if last else "no earlier version"
        result.not_delivered = f"no version delivered: no shot was lip-synced, {counts.failed} failed; {kept}"
        return result
    with building(job.output / dub.language, together=together) as delivery:  # OUT/<lang>/vNNN/, when complete
        return _write_outputs(job, config, timeline, resolver, plan, dub, shots, rows, counts, result, warnings,
                              delivery)


def _write_outputs(job: TimelineJob, config: Config, timeline: Any, resolver: MediaResolver, plan: TimelinePlan,
                   dub: DubTrack, shots: list[ShotState], rows: list[ShotResult], counts: LanguageCounts,
                   result: LanguageResult, warnings: list[str], delivery: Delivery) -> LanguageResult:
    """The files of one finished language, written into ``delivery`` (:mod:`~lipsyncctl.timeline.delivery`):
    the renders (linked from the render cache), relinked timeline(s), conform and QC report. Every path
    they hold or ``result`` gets is the version's final one."""

    def count(status: ShotStatus) -> int:
        return sum(1 for r in rows if r.status == status)

    folder = delivery.tmp
    lang_warnings: list[str] = []
    outcomes = {s.segment.id: replace(s.outcome, key=s.key) for s in shots if s.outcome is not None}
    # the renders, linked from the render cache: the timelines and the report name these copies
    delivered = {sid: delivery.add_link(Path(oc.output), f"shots/{sid}{Path(oc.output).suffix}")
                 for sid, oc in outcomes.items() if oc.status == ShotStatus.DONE and oc.output}
    linked = {sid: replace(oc, output=str(delivered[sid])) if sid in delivered else oc
              for sid, oc in outcomes.items()}
    # timelines (a bundle output embeds the renders, found in the folder being built)
    progress.message(f"writing the relinked timeline(s) and the QC report ({dub.language}, {delivery.version})")
    relinked, w = relinked_timeline(timeline, plan, linked, dub.language, dub=dub)
    lang_warnings += w
    building_resolver = replace(resolver, relink={**resolver.relink,
                                                     str(delivery.final.resolve()): str(folder.resolve())})
    written, w = write_timelines(relinked, job.timeline, folder, at=delivery.final, resolver=building_resolver,
                                 inputs=(*{seg.media for seg in plan.segments}, *(p for _, p in job.audio)))
    lang_warnings += w
    result.timelines = [str(delivery.final_path(p)) for p in written]
    # conform
    if config.timeline.conform:
        ext = f".{shot_extension(config)}"  # the renders' (the first shot may have none: no face, a title)
        inputs = (job.timeline, *{seg.media for seg in plan.segments}, *(p for _, p in job.audio))
        out = conform(plan, outcomes, dub, folder / f"{job.timeline.stem}.conform{ext}", config, inputs,
                      me=job.conform_me)
        result.conform = str(delivery.final_path(out))
        if job.conform_me is not None and (short := me_warning(job.conform_me, plan, dub)):
            lang_warnings.append(short)
    # QC: mouth strips, sync scores, min-sync
    strips, notes, syncnet, scale = _qc(shots, rows, dub, plan, config, lang_warnings)
    for r in rows:  # the QC read the cache's files; the report names their copies in the version
        if r.id in delivered:
            r.output = str(delivered[r.id])
    scored = syncnet is not None
    if syncnet is not None and not syncnet.verified:
        lang_warnings.append(f"sync scores: {syncnet.note()}")
    if scale == SCALE_APPROXIMATE:
        lang_warnings.append(APPROXIMATE_NOTE)
    min_sync = config.timeline.min_sync  # a shot not measured fails it too, unless unchecked_gates=warn
    lang_warnings += gates.apply_min_sync(rows, min_sync, config.timeline.unchecked_gates, scored, scale)
    counts.under_min_sync = count(ShotStatus.UNDER_MIN_SYNC)
    summary = counts.to_dict()
    report = {
        "language": dub.language, "timeline": str(job.timeline), "timeline_name": plan.name, "dub": dub.source,
        "fps": tb.fraction_str(plan.fps), "start": plan.timecode(0),
        "summary": {k: summary.get(k, 0) for k in ("shots", "done", "rendered", "reused", "failed", "no_face",
                                                   "no_dialogue", "pending", "skipped", "under_min_sync")},
        "ok": counts.failed == 0 and counts.under_min_sync == 0,
        "sync_scores": scored, "sync_scale": scale, "sync_model": syncnet.to_dict() if syncnet is not None else None,
        "min_sync": min_sync, "shots": [r.to_dict() for r in rows],
        "skipped": [k.to_dict() for k in plan.skipped], "warnings": warnings + lang_warnings,
        "timelines": result.timelines, "conform": result.conform,
    }
    thumbs = _add_qc(report, shots, strips, notes, delivery.final, config,
                     zipped=job.timeline if job.timeline.suffix.lower() == ".otioz" else None)  # provenance, links, flags, verdict
    report["version"], report["files"] = delivery.version, sorted([*delivery.files(), "report.json", "report.html"])
    result.report = str(delivery.final_path(write_json(report, folder / "report.json")))
    result.report_html = str(delivery.final_path(write_html(report, thumbs, folder / "report.html")))
    result.warnings = lang_warnings
    result.version, result.folder = delivery.version, str(delivery.final)
    return result


def _qc(shots: list[ShotState], rows: list[ShotResult], dub: DubTrack, plan: TimelinePlan, config: Config,
        warnings: list[str]) -> tuple[dict[str, qc.MouthStrips], dict[str, str], EvalSyncNet | None, str | None]:
    """Mouth strips of every shot (source above, render below: :func:`qc.mouth_strips`) and, with the
    evaluation SyncNet installed, LSE-C / LSE-D before (the source picture with the dub) and after (the
    render) over each shot's visible frames; second, why a shot has no score (its ``sync_note``).

    Scale (returned fourth, None when nothing is scored): the official measurement when ``sfd-face`` is
    installed too (S3FD tracks, 2.8x crop; shots under 50 frames get no score, as officially), else the
    labelled approximate centred crop."""
    from lipsyncctl.errors import MissingModelError
    from lipsyncctl.faces.detect import give_back_detector, take_detector
    from lipsyncctl.runner.devices import resolve_device

    device = resolve_device(config.inference.device)
    syncnet = load_eval_syncnet(device)
    scorer = None
    if syncnet is not None:
        scorer = load_official_scorer(syncnet.model, device)
    try:  # the strips' detector (the renders were tracked with it; the shots' spare) and the approximate scale's
        detector = take_detector(config.faces.backend, "cpu")
    except MissingModelError:
        if syncnet is not None and scorer is None:
            raise
        detector = None
    meter = SyncMeter(syncnet, scorer, detector) if syncnet is not None else None
    scale = meter.scale if meter is not None else None
    # interlaced media are measured on progressive pictures, as their faces were found and rendered (a combed face
    # can go unfound: no score, a false --min-sync failure)
    deinterlace = config.sync.deinterlace == "auto"
    strips: dict[str, qc.MouthStrips] = {}
    notes: dict[str, str] = {}
    for s, row in progress.track(list(zip(shots, rows, strict=True)), "QC"):
        seg = s.segment
        rendered = row.status == ShotStatus.DONE and bool(row.output)
        speech = [(lo - seg.handle_in, hi - seg.handle_in) for lo, hi in s.speech]  # visible-frame indices
        strips[seg.id] = qc.mouth_strips(seg.media, seg.source_start, Path(row.output) if rendered else None,
                                         seg.handle_in, qc.sample_frames(seg.source_frames, speech), detector,
                                         deinterlace=deinterlace, source_fps=seg.media_fps)
        if not rendered:
            notes[seg.id] = f"no render ({row.status.value})"
            continue
        if meter is None:
            notes[seg.id] = "the evaluation SyncNet (syncnet-v2) is not installed: lipsyncctl models fetch syncnet-v2"
            continue
        from lipsyncctl.timeline.dub import record_cut, to_vad_rate

        cut = record_cut(dub, seg, plan.fps)  # what the render was synced to (a shot's audio_offset applied)
        audio16 = to_vad_rate(cut, dub.rate)
        n = seg.source_frames  # each side is decoded twice, never held: memory flat in the shot's length
        sides = (("before", seg.media, seg.source_start, seg.media_fps), ("after", Path(row.output), seg.handle_in, None))
        reasons = []
        for when, path, first, rate in sides:
            frames = functools.partial(read_frames, path, first, n, deinterlace=deinterlace, fps=rate)
            result = meter.score(frames, audio16, seg.media_fps, count=n)
            if result.measured:
                setattr(row, f"sync_{when}", round(result.lse_c, 4))
                setattr(row, f"lse_d_{when}", round(result.lse_d, 4))
            else:
                reasons.append(f"{when}: {result.reason}")
        if reasons:
            notes[seg.id] = f"not measured on the {scale} scale ({'; '.join(reasons)})"
        if row.sync_after is None:
            warnings.append(f"{seg.id}: sync confidence not measured on the {scale} scale ({'; '.join(reasons)})")
    if detector is not None:
        give_back_detector(config.faces.backend, "cpu", detector)
    return strips, notes, syncnet, scale


def _add_qc(report: dict[str, Any], shots: list[ShotState], strips: dict[str, qc.MouthStrips], notes: dict[str, str],
            here: Path, config: Config, zipped: Path | None = None) -> dict[str, tuple[str, str]]:
    """Complete ``report`` with what judging the lip sync needs: the run's provenance (:func:`qc.run_info`:
    preset, version, model fingerprints, ``lip_synced``), per shot links to the render and the source
    relative to the report's folder ``here``, its mouth strip's frames, why a score is missing
    (``sync_note``) and its ``review`` flags (:func:`qc.review_flags`); then the ids to review and the
    ``verdict``. Returns the strips as data URIs for the page: shot id -> (source, render). ``zipped``: the
    ``.otioz`` the sources came from (extracted for the run only): a source is named inside it, without a link (it
    linked into the run's extraction folder, removed at its end)."""
    report.update(qc.run_info(config))
    media = {s.segment.id: s.segment.media for s in shots}
    urls = {s.segment.id: s.segment.media_url for s in shots}
    uris: dict[str, tuple[str, str]] = {}
    for shot in report["shots"]:
        sid, strip = shot["id"], strips.get(shot["id"])
        shot["render_href"] = relative_href(Path(shot["output"]), here) if shot.get("output") else None
        shot["source"] = str(media[sid]) if zipped is None else f"{zipped}: {urls[sid]}"
        shot["source_href"] = relative_href(media[sid], here) if zipped is None else None
        shot["mouth_strip"] = strip.to_dict() if strip is not None else None
        shot["sync_note"] = notes.get(sid)
        shot["review"] = qc.review_flags(shot, lip_synced=report["lip_synced"], scale=report["sync_scale"],
                                         min_sync=report["min_sync"])
        if strip is not None:
            after = strip.after
            uris[sid] = (thumbnail_uri(strip.before, height=strip.before.shape[0], quality=88),
                         thumbnail_uri(after, height=after.shape[0], quality=88) if after is not None else "")
    # the shots flagged, then the clips whose media is missing (black in the conform: they were in no list)
    report["review"] = [s["id"] for s in report["shots"] if s["review"]] + qc.media_holes(report)
    report["verdict"] = qc.verdict(report)
    return uris
