"""`lipsyncctl curate`, stages 1-4 (probe, normalize, shots, segments) on a corpus built from the real
fixture and generated clips: each source's decision and reason, the exact cut frame, the spans, inputs
unchanged, reruns that compute nothing, thresholds that re-decide without recomputing, shards, workers,
and a kill -9 in the middle of a run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation.job import run_curation
from lipsyncctl.curation.spans import exact_segments, official_segments, shot_spans
from tests.conftest import REPO, shared_path
from tests.curate_media import grey_frames, write_talking_clip
from tests.mediagen import make_clip
from tests.sync_media import sample_frames

CUT = 100  # the cut clip: 100 frames of a face, then 80 of a flat grey picture


@pytest.fixture(scope="module", autouse=True)
def _source_stages_only():  # type: ignore[no-untyped-def]
    """These tests pin the per-source stages and the job's machinery: the clip stages (align, features...)
    have their own test files, so here the job runs none (a test may plug in its own)."""
    from lipsyncctl.curation import clipstages, job

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clipstages, "CLIP_STAGES", ())
        mp.setattr(job, "CLIP_STAGES", ())
        yield


def _cut_clip(path: Path) -> Path:
    faces = sample_frames(CUT, scale=0.25)
    return write_talking_clip(path, faces + grey_frames(faces[0], 80))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("curate") / "raw"
    (raw / "sub dir").mkdir(parents=True)
    fixture = shared_path("fixtures", "demo1_video.mp4")
    shutil.copy(fixture, raw / "sub dir" / "talk ü one.mp4")           # 10 s, 25 fps, 1080x1920 HEVC
    make_clip(raw / "retimed.mp4", fps=Fraction(30000, 1001), frames=180, audio_rate=48000)  # 6.006 s
    _cut_clip(raw / "cut.mp4")
    make_clip(raw / "short.mp4", fps=25, frames=37, audio_rate=48000)   # 1.48 s
    make_clip(raw / "silent.mp4", fps=25, frames=100, audio_rate=None)
    (raw / "empty.mp4").write_bytes(b"")
    data = fixture.read_bytes()
    (raw / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (raw / "notes.mov").write_text("not a video\n")
    return raw


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(data: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    before = _hashes(corpus)
    data = tmp_path_factory.mktemp("data") / "data"
    result = run_curation([corpus], data, cfg.resolve("tiny"))
    # its spans as it wrote them (the result reads them from the manifest, which later tests' runs rewrite)
    return {"data": data, "result": result, "spans": list(result.spans()), "before": before}


def _by_name(result) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {Path(s.path).name: s for s in result.sources}


def test_every_source_has_its_decision_and_reason(corpus: Path, first_run) -> None:  # type: ignore[no-untyped-def]
    got = {name: (s.decision.verdict, s.decision.stage, s.decision.reason) for name, s in _by_name(first_run["result"]).items()}
    assert got == {
        "talk ü one.mp4": ("kept", None, None),
        "retimed.mp4": ("kept", None, None),
        "cut.mp4": ("kept", None, None),
        "short.mp4": ("rejected", "probe", "too-short"),
        "silent.mp4": ("rejected", "probe", "no-audio"),
        "empty.mp4": ("rejected", "probe", "unreadable"),
        "truncated.mp4": ("rejected", "probe", "unreadable"),
        "notes.mov": ("rejected", "probe", "unreadable"),
    }
    assert _by_name(first_run["result"])["short.mp4"].decision.value == pytest.approx(1.48, abs=0.03)
    assert first_run["result"].ok  # rejections are outcomes, not failures
    assert _hashes(corpus) == first_run["before"]  # inputs never modified, moved or deleted


def test_shots_and_segments_are_frame_exact(first_run) -> None:  # type: ignore[no-untyped-def]
    spans = {}
    for c in first_run["spans"]:
        name = c.source.rsplit("-", 1)[0]
        spans.setdefault(name, []).append((c.first, c.stop, c.decision.verdict))
    assert spans["cut"] == [(0, CUT, "kept"), (CUT, 180, "kept")]        # the cut at exactly frame 100
    assert spans["talk_one"] == [(0, 125, "kept"), (125, 250, "kept")]  # 10 s: two 5 s pieces
    assert spans["retimed"] == [(0, 150, "kept")]                        # 6.006 s at 29.97 -> 150 frames at 25
    lines = _manifest(first_run["data"])
    assert len(lines) == 5 and lines[0]["start_seconds"] == lines[0]["first"] / 25
    report = json.loads((first_run["data"] / "report.json").read_text())
    assert report["counts"]["rejected"] == {"probe/no-audio": 1, "probe/too-short": 1, "probe/unreadable": 3}
    assert report["counts"]["kept_seconds"] == pytest.approx((250 + 150 + 180) / 25)
    assert (first_run["data"] / "audio").is_dir() and len(list((first_run["data"] / "audio").glob("*.wav"))) == 3


def test_a_rerun_computes_nothing_and_a_threshold_re_decides(corpus: Path, first_run) -> None:  # type: ignore[no-untyped-def]
    again = run_curation([corpus], first_run["data"], cfg.resolve("tiny"))
    assert all(s.computed == [] for s in again.sources)
    assert [{k: v for k, v in line.items() if k != "split"} for line in _manifest(first_run["data"])] == [
        c.to_dict(25) for c in sorted(first_run["spans"], key=lambda c: c.id)]
    stricter = run_curation([corpus], first_run["data"], cfg.resolve("tiny", ["curate.min_seconds=3.5"]))
    assert all(s.computed == [] for s in stricter.sources)  # decided from stored measurements
    cut = [c for c in stricter.spans() if c.source.startswith("cut-")]
    assert [(c.decision.verdict, c.decision.stage, c.decision.reason, c.decision.value) for c in cut] == [
        ("kept", None, None, None), ("rejected", "shots", "too-short", 3.2)]
    run_curation([corpus], first_run["data"], cfg.resolve("tiny"))  # back to the defaults for later tests


def test_force_recomputes_a_stage_and_the_later_ones(corpus: Path, first_run) -> None:  # type: ignore[no-untyped-def]
    res = run_curation([corpus / "cut.mp4"], first_run["data"], cfg.resolve("tiny"), force=("shots",))
    assert [s.computed for s in res.sources if s.path.endswith("cut.mp4")] == [["shots", "segments"]]


def test_official_segment_lengths_option(first_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert exact_segments((0, 300), 125) == [(0, 125), (125, 300)]
    assert exact_segments((10, 100), 125) == [(10, 100)]
    assert exact_segments((0, 249), 125) == [(0, 124 + 125)]  # remainder merged: 5 <= piece < 10 s
    # ffmpeg's segment muxer with a stream copy: cut at the first key frame >= k * 5 s
    assert official_segments((0, 300), 125, [0, 100, 130, 250, 260]) == [(0, 130), (130, 250), (250, 300)]
    assert official_segments((0, 300), 125, [0]) == [(0, 300)]
    assert shot_spans([50, 0, 300, 50], 300) == [(0, 50), (50, 300)] and shot_spans([], 10) == [(0, 10)]


def test_shards_and_workers_give_the_same_manifest(corpus: Path, first_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sources = [corpus / "cut.mp4", corpus / "retimed.mp4", corpus / "short.mp4"]
    one = tmp_path / "one"
    run_curation(sources, one, cfg.resolve("tiny"))
    sharded = tmp_path / "sharded"
    run_curation(sources, sharded, cfg.resolve("tiny"), shard=(0, 2))
    run_curation(sources, sharded, cfg.resolve("tiny"), shard=(1, 2))
    assert _manifest(sharded) == _manifest(one)
    pooled = tmp_path / "pooled"
    run_curation(sources, pooled, cfg.resolve("tiny"), jobs=2)
    assert _manifest(pooled) == _manifest(one)


def test_kill_9_then_rerun_gives_the_uninterrupted_manifest(corpus: Path, first_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lipsyncctl", "-q", "curate", str(corpus), "-o", str(data), "--until", "segments"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    records = data / ".lipsyncctl" / "records" / "sources"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert main(["-q", "curate", str(corpus), "-o", str(data)]) == 0
    assert _manifest(data) == _manifest(first_run["data"])
    assert not list(data.rglob(".*.part"))  # no half-written record left behind after the rerun


def test_a_source_whose_worker_died_fails_alone_naming_it_and_the_others_go_on(  # type: ignore[no-untyped-def]
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # a worker killed for memory stopped the whole --jobs run (the other worker's nearly finished source lost too),
    # and which source killed it was said nowhere
    from lipsyncctl.runner import workers

    real = workers.run_tasks

    def one_dies(tasks, execute, on_done, **kwargs):  # type: ignore[no-untyped-def]
        first, *rest = tasks
        on_done(first, kwargs["lost"](first, "its worker process died (killed from outside, often for memory)"))
        kwargs.pop("lost")
        real(rest, execute, on_done, **kwargs)

    monkeypatch.setattr(workers, "run_tasks", one_dies)
    sources = [corpus / "short.mp4", corpus / "silent.mp4"]
    code = main(["curate", *map(str, sources), "-o", str(tmp_path / "d"), "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 1 and doc["failures"] == 1
    assert f"the first: {corpus / 'short.mp4'} at worker: its worker process died" in err
    died, other = sorted(doc["sources"], key=lambda s: s["path"])
    assert died["decision"] == {"verdict": "failed", "stage": "worker", "error": "its worker process died (killed "
                                "from outside, often for memory); the next run retries it"}
    assert other["decision"]["verdict"] == "rejected"  # (silent.mp4: no audio) decided as ever
    monkeypatch.setattr(workers, "run_tasks", real)  # the rerun computes the one that died
    assert main(["curate", *map(str, sources), "-o", str(tmp_path / "d"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(s["decision"]["reason"] for s in doc["sources"]) == ["no-audio", "too-short"]


def test_a_source_with_source_stages_left_stands_apart_and_is_said(corpus: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # a source an interrupted shard (or --until) left before its shots counted as kept with no span, no warning
    code = main(["curate", str(corpus / "retimed.mp4"), "-o", str(tmp_path / "d"), "--until", "normalize", "--json"])
    doc = json.loads(capsys.readouterr().out)
    (source,) = doc["sources"]
    assert code == 0 and source["standing"] == "stages left" and source["stages_left"] == ["shots", "segments"]
    assert doc["counts"]["sources"] == {"stages left": 1}
    assert any("1 source(s) have source stages left" in w and "without --until" in w for w in doc["warnings"])
    dry = main(["curate", str(corpus / "retimed.mp4"), "-o", str(tmp_path / "d"), "--until", "normalize", "--dry-run",
                "--json"])  # the plan says as the run does
    assert dry == 0 and json.loads(capsys.readouterr().out)["sources"][0]["standing"] == "stages left"
    assert main(["curate", str(corpus / "retimed.mp4"), "-o", str(tmp_path / "d"), "--json"]) == 0  # the rest
    doc = json.loads(capsys.readouterr().out)
    assert doc["sources"][0]["standing"] == "kept" and not any("stages left" in w for w in doc["warnings"])


def test_an_interrupted_run_says_how_far_it_got_and_that_the_views_are_the_last_runs(  # type: ignore[no-untyped-def]
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # an interrupted rerun with new settings left views listing clips it had rewritten; nothing said so
    from lipsyncctl.runner import workers

    real = workers.run_tasks

    def stopped(tasks, execute, on_done, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.pop("lost")
        real(tasks[:1], execute, on_done, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(workers, "run_tasks", stopped)
    sources = [corpus / "short.mp4", corpus / "silent.mp4"]
    code = main(["curate", *map(str, sources), "-o", str(tmp_path / "d"), "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 130 and doc["error"]["message"] == "curate interrupted: 1 of 2 source(s) finished, 1 with stages " \
        "computed" and doc["finished"] == 1
    assert "lipsyncctl curate report DATA" in doc["error"]["hint"]


def test_cli_exit_codes_and_json(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["curate", str(corpus / "short.mp4"), "-o", str(tmp_path / "d"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["sources"][0]["decision"]["reason"] == "too-short"
    # the spans are the manifest's lines, not listed (a million of them would be one document of gigabytes)
    assert doc["manifest"] == str(tmp_path / "d" / "manifest.jsonl") and "clips" not in doc
    assert main(["curate", str(corpus), "-o", str(tmp_path / "d"), "--until", "faces"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["curate", str(corpus), "-o", str(tmp_path / "file")]) == 2
    # a stage that cannot run on a source is a failure (exit 1), unlike a rejection
    from lipsyncctl.curation import stages
    from lipsyncctl.errors import MediaError

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MediaError("disk full while writing the audio")

    monkeypatch.setattr(stages, "normalize_audio", broken)
    capsys.readouterr()
    assert main(["curate", str(corpus / "cut.mp4"), "-o", str(tmp_path / "e"), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["sources"][0]["decision"] == {
        "verdict": "failed", "stage": "normalize", "error": "disk full while writing the audio"}


def test_clip_stages_plug_in_store_resume_and_decide(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip stage (here a test one measuring the span's mean brightness) runs once per kept span,
    is stored in the clip's record, reused on a rerun, and its rejection lands in the manifest."""
    from lipsyncctl.curation import clipstages, job
    from lipsyncctl.curation.records import Decision

    calls = []

    def measure(ctx: clipstages.ClipContext) -> dict:  # type: ignore[type-arg]
        from lipsyncctl.media.reader import IndexedReader

        calls.append(ctx.clip_id)
        with IndexedReader(ctx.source, Fraction(25)) as reader:
            frame = reader.read([ctx.first])[ctx.first]
        return {"brightness": float(frame.mean())}

    stage = clipstages.ClipStage(
        "brightness", 1, measure,
        decide=lambda data, options: Decision.rejected("brightness", "too-dark", data["brightness"])
        if data["brightness"] < 60 else None,
        summary=lambda data: {"brightness": round(data["brightness"], 1)},
        models=lambda model: {"net": corpus / "retimed.mp4"})  # any file stands in for a network here
    monkeypatch.setattr(clipstages, "CLIP_STAGES", (stage,))
    monkeypatch.setattr(job, "CLIP_STAGES", (stage,))
    assert job.stage_names()[-1] == "brightness"
    data = tmp_path / "d"
    res = run_curation([corpus / "cut.mp4"], data, cfg.resolve("tiny"))
    assert sorted(calls) == ["cut-378bfce5_000000-000100", "cut-378bfce5_000100-000180"]
    verdicts = [(c.first, c.decision.verdict, c.decision.reason) for c in res.spans()]
    assert verdicts == [(0, "kept", None), (100, "rejected", "too-dark")]  # the flat grey shot is dark
    import yaml

    recorded = yaml.safe_load((data / "curate.yaml").read_text())["models"]["brightness"]["net"]
    assert recorded["path"] == str(corpus / "retimed.mp4") and len(recorded["fingerprint"]) == 64
    lines = _manifest(data)
    assert lines[1]["decision"]["stage"] == "brightness" and lines[1]["brightness"] == pytest.approx(40, abs=2)
    calls.clear()
    run_curation([corpus / "cut.mp4"], data, cfg.resolve("tiny"))
    assert calls == []  # stored and reused
    run_curation([corpus / "cut.mp4"], data, cfg.resolve("tiny"), force=("brightness",))
    assert len(calls) == 2
    assert [c.decision.verdict for c in run_curation([corpus / "cut.mp4"], data, cfg.resolve("tiny"),
                                                     until="segments").spans()] == ["kept", "rejected"]


def test_a_failed_span_fails_the_run_and_is_retried_and_a_loosened_threshold_says_what_is_pending(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A span whose clip stage fails (a full disk here) fails the run (exit 1; counted as a failure, not a
    rejection) and is retried by the rerun, which finds it fixed. A span rejected by its first stage is not
    measured by the second; a threshold loosened later keeps it, and the run says it is not measured yet."""
    from lipsyncctl.curation import clipstages, job
    from lipsyncctl.curation.job import report_curation
    from lipsyncctl.curation.records import Decision
    from lipsyncctl.errors import WriteError

    calls: list[tuple[str, int]] = []
    full_disk = [True]

    def brightness(ctx: clipstages.ClipContext) -> dict:  # type: ignore[type-arg]
        from lipsyncctl.media.reader import IndexedReader

        calls.append(("brightness", ctx.first))
        if ctx.first == 0 and full_disk[0]:
            raise WriteError("no space left on device", "free some space")
        with IndexedReader(ctx.source, Fraction(25)) as reader:
            return {"brightness": float(reader.read([ctx.first])[ctx.first].mean())}

    second_fails = [False]

    def second(ctx: clipstages.ClipContext) -> dict:  # type: ignore[type-arg]
        calls.append(("second", ctx.first))
        if second_fails[0]:
            raise WriteError("no space left on device", "free some space")
        return {}

    stages = (clipstages.ClipStage(  # the threshold: curate.quality_min stands in for one here
        "brightness", 1, brightness, lambda data, o: Decision.rejected("brightness", "too-dark", data["brightness"])
        if data["brightness"] < o.quality_min else None),
        clipstages.ClipStage("second", 1, second, lambda data, o: None))
    monkeypatch.setattr(clipstages, "CLIP_STAGES", stages)
    monkeypatch.setattr(job, "CLIP_STAGES", stages)
    data, strict = tmp_path / "d", ["curate.quality_min=60"]
    assert main(["-q", "curate", str(corpus / "cut.mp4"), "-o", str(data), "--json", *(["--set"] + strict)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["counts"]["failed"] == {"brightness": 1}
    assert doc["counts"]["rejected"] == {"brightness/too-dark": 1}  # the grey shot; the failure is not one
    assert sorted(calls) == [("brightness", 0), ("brightness", 100)]
    calls.clear()
    full_disk[0] = False
    res = run_curation([corpus / "cut.mp4"], data, cfg.resolve("tiny", strict))
    assert sorted(calls) == [("brightness", 0), ("second", 0)]  # the failure retried, nothing else redone
    assert res.ok and [c.decision.verdict for c in res.spans()] == ["kept", "rejected"] and not res.warnings
    loose = report_curation(data, cfg.resolve("tiny", ["curate.quality_min=10"]))
    assert [c.decision.verdict for c in loose.spans()] == ["kept", "kept"]
    assert loose.counts()["pending"] == 1 and list(loose.spans())[1].summary["pending"] == ["second"]
    assert loose.warnings[0].startswith("settings differ from those the views were last written with (curate.yaml): "
                                        "curate.quality_min 60.0 -> 10.0;")  # the run's --set, not the preset's
    assert "1 kept span(s) are not measured by second yet" in loose.warnings[1]
    # a shard that ends first sees another shard's spans unmeasured yet: not told to rerun them as if they were lost
    from lipsyncctl.curation.rebuild import warn_decisions

    loose.shard, loose.warnings = (0, 2), []
    warn_decisions(loose, cfg.resolve("tiny").curate)
    assert "the other shards' sources among them are measured by their shards" in loose.warnings[-1]
    assert _manifest(data)[1]["pending"] == ["second"] and "pending" not in _manifest(data)[0]
    calls.clear()
    res = run_curation([corpus / "cut.mp4"], data, cfg.resolve("tiny", ["curate.quality_min=10"]))
    assert calls == [("second", 100)] and res.counts()["pending"] == 0 and not res.warnings
    # a later stage's failure is retried too (the walk stopped at the first stage, reading the whole record's
    # decision: the span failed for good, even with --force of that stage); a dry run lists it
    calls.clear()
    second_fails[0] = True
    loose = cfg.resolve("tiny", ["curate.quality_min=10"])
    assert not run_curation([corpus / "cut.mp4"], data, loose, force=("second",)).ok
    assert sorted(calls) == [("second", 0), ("second", 100)]
    plan = run_curation([corpus / "cut.mp4"], data, loose, dry_run=True)
    assert [s.to_compute for s in plan.sources] == [["second:0-100", "second:100-180"]]
    calls.clear()
    second_fails[0] = False
    res = run_curation([corpus / "cut.mp4"], data, loose)
    assert sorted(calls) == [("second", 0), ("second", 100)] and res.ok


def test_failures_of_sources_outside_the_run_do_not_set_its_exit_code(first_run) -> None:  # type: ignore[no-untyped-def]
    """Shards share DATA: a run's exit code counts only the sources it was given (``scope``)."""

    from lipsyncctl.curation.decide import ClipSpan
    from lipsyncctl.curation.outcome import CurateResult
    from lipsyncctl.curation.records import Decision

    res = first_run["result"]
    assert res.ok and res.failures == 0
    kept = next(s for s in res.sources if s.decision.verdict == "kept")
    broken = ClipSpan(kept.id, 0, 50, Decision.failed("align", "no space left on device"))
    options = cfg.resolve("tiny").curate

    def run(scope: frozenset[str] | None) -> CurateResult:
        out = CurateResult(res.data, res.until, res.shard, scope=scope)
        for s in res.sources:
            out.add(s, [broken] if s.id == kept.id else [], options)
        return out

    everything = run(None)
    assert [s.id for s in everything.failed] == [kept.id] and everything.failures == 1 and not everything.ok
    assert [*everything.sources][[s.id for s in res.sources].index(kept.id)].failed_spans == 1
    assert not run(frozenset({kept.id})).ok
    assert run(frozenset(s.id for s in res.sources if s.id != kept.id)).ok


def test_an_unusable_face_detector_stops_the_run_before_any_work(corpus: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.curation import align, clipstages, job
    from lipsyncctl.errors import MissingModelError
    from lipsyncctl.faces import detect_dlib

    stage = clipstages.ClipStage(align.NAME, 1, lambda ctx: {}, lambda data, o: None)
    monkeypatch.setattr(clipstages, "CLIP_STAGES", (stage,))
    monkeypatch.setattr(job, "CLIP_STAGES", (stage,))
    monkeypatch.setattr(detect_dlib, "unavailable_reason", lambda models_dir=None: "not installed here")
    with pytest.raises(MissingModelError, match="face detector 'dlib' is not usable: not installed here"):
        run_curation([corpus / "cut.mp4"], tmp_path / "d", cfg.resolve("tiny", ["curate.detector=dlib"]))
    assert not (tmp_path / "d").exists()
    run_curation([corpus / "cut.mp4"], tmp_path / "d", cfg.resolve("tiny", ["curate.detector=dlib"]),
                 until="segments")  # no face needed before align


def test_gpus_this_machine_lacks_are_exit_4_before_any_work(corpus: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gpus`` on a machine without them ran the CPU stages in the workers, then the sync stage's network load
    failed as an internal error (exit 1); now exit 4 before any source is touched, and a dry run says it."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc = main(["curate", str(corpus / "cut.mp4"), "-o", str(tmp_path / "d"), "--preset", "tiny", "--gpus", "0,1",
               "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 4 and doc["error"]["message"] == "--gpus 0: this machine has 0 CUDA GPU(s) visible"
    assert "leave --gpus out" in doc["error"]["hint"] and not (tmp_path / "d").exists()
    assert main(["curate", str(corpus / "cut.mp4"), "-o", str(tmp_path / "d"), "--preset", "tiny", "--gpus", "0",
                 "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert ("a run would stop (exit 4): --gpus 0: this machine has 0 CUDA GPU(s) visible (leave --gpus out to run "
            "on the CPU (--jobs N: N worker processes); check CUDA_VISIBLE_DEVICES and `lipsyncctl doctor`)"
            in plan["warnings"])  # (with its hint, as the dry run says a missing model)
    # Ray's workers have GPUs of their own (--gpus asks Ray for one a task): not checked here
    from lipsyncctl.runner import workers

    calls: list[dict] = []  # type: ignore[type-arg]
    monkeypatch.setattr(workers, "run_tasks", lambda tasks, execute, done, **kw: calls.append(kw))
    run_curation([corpus / "cut.mp4"], tmp_path / "r", cfg.resolve("tiny"), backend="ray", gpus=["cuda:0"])
    assert calls[-1]["backend"] == "ray" and calls[-1]["gpus"] == ["cuda:0"]


def test_the_audio_starts_where_the_picture_starts(tmp_path: Path) -> None:
    """Grid frame 0 is the picture's first frame at its start time (MPEG-TS: late); the normalized audio's
    sample 0 is the sound at that time too (prep's rule), and the probe records it."""
    import numpy as np

    from lipsyncctl.media.audio import read_audio
    from lipsyncctl.media.probe import probe

    source = make_clip(tmp_path / "broadcast.ts", fps=25, frames=150, audio_rate=48000)
    start = probe(source).video.start_time
    assert start > 0.05
    data = tmp_path / "d"
    res = run_curation([source], data, cfg.resolve("tiny"), until="normalize")
    record = json.loads(next((data / ".lipsyncctl" / "records" / "sources").glob("*.json")).read_text())
    assert record["stages"]["probe"]["data"]["start_time"] == start and res.ok
    wav = read_audio(data / "audio" / f"{[*res.sources][0].id}.wav", 16000, 1)
    expected = read_audio(source, 16000, 1, start=start)
    assert len(wav) == pytest.approx(len(expected), abs=1)
    n = min(len(wav), len(expected))
    assert np.abs(wav[:n] - expected[:n]).max() < 1e-3  # 16-bit rounding
    unshifted = read_audio(source, 16000, 1)
    assert np.abs(wav[:n] - unshifted[:n]).max() > 0.05  # the old origin (time 0) was another sound


def test_inputs_name_each_source_once_and_a_rerun_from_elsewhere_reuses_the_records(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.errors import MediaError, UsageError

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(corpus / "retimed.mp4", tmp_path / folder / "00001.mp4")  # 6 s: normalized
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="a/00001.mp4 and .*b/00001.mp4: one source id") as err:
        run_curation(["a/00001.mp4", "b/00001.mp4"], "d", cfg.resolve("tiny"), until="normalize")
    assert "'raw/*/*.mp4'" in err.value.hint and not (tmp_path / "d").exists()
    first = run_curation(["."], "d", cfg.resolve("tiny"), until="normalize")  # ids from a/..., b/...
    assert len(first.sources) == 2 and first.data == tmp_path / "d"
    assert [s.computed for s in first.sources] == [["probe", "normalize"]] * 2
    with pytest.raises(UsageError, match=r"a/00001.mp4 is in .*d already, as source 00001-"):
        run_curation(["a"], "d", cfg.resolve("tiny"), until="normalize")  # would be a second copy
    with pytest.raises(MediaError, match="gone.mp4: file not found") as missing:
        run_curation([".", "gone.mp4"], "d", cfg.resolve("tiny"), until="normalize")
    assert missing.value.exit_code == 5
    # sources whose own records name them are known: DATA's other records are not read for the check (a million
    # of them on every rerun and in every shard); a shard checks its own sources
    from lipsyncctl.curation import job
    from lipsyncctl.curation.records import RecordStore

    listed: list[str] = []
    each_id = RecordStore.each_id  # (DATA's record ids, walked in folder order)
    monkeypatch.setattr(RecordStore, "each_id", lambda self, kind: listed.append(kind) or each_id(self, kind))  # type: ignore[func-returns-value]
    import dataclasses

    tasks = [job.CurateTask(s.path, s.id, str(first.data), cfg.resolve("tiny").curate, "normalize")
             for s in first.sources]
    store = RecordStore.of(first.data)
    job._check_ids(tasks, tasks, store, first.data)
    assert listed == []
    moved = dataclasses.replace(tasks[0], id="00001-other")  # the file of another id's record: DATA is read
    with pytest.raises(UsageError, match="as source"):
        job._check_ids([moved], [moved], store, first.data)
    assert listed == ["sources"]
    job._check_ids([moved, tasks[1]], [tasks[1]], store, first.data)  # another shard's source: its own check
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path / "a")  # another working folder, the same DATA and sources
    given: list[str] = []  # another spelling of the same paths (`..`): the tasks name them as the records do, so
    real_check = job._check_ids  # DATA's records are not all read for the check
    monkeypatch.setattr(job, "_check_ids", lambda tasks, mine, store, data: given.extend(t.path for t in tasks)
                        or real_check(tasks, mine, store, data))
    again = run_curation([".."], "../d", cfg.resolve("tiny"), until="normalize")
    assert [s.computed for s in again.sources] == [[], []]
    assert given and not any(".." in p for p in given), given
    monkeypatch.undo()
    # a file renamed (or moved into another folder) was curated again under a new id: its clips twice in DATA, maybe
    # on both sides of the split; it is refused (what a source whose file is gone held); a file deleted beside a new one
    # (raw footage let go after curation) is not
    os.rename(tmp_path / "a" / "00001.mp4", tmp_path / "a" / "take1.mp4")
    with pytest.raises(UsageError, match=r"a/take1.mp4 holds what source 00001-\w+ of .*d held, whose file "
                                         r".*a/00001.mp4 is gone \(moved or renamed\)") as err:
        run_curation([tmp_path], tmp_path / "d", cfg.resolve("tiny"), until="normalize")
    assert "put the file back" in err.value.hint
    # another batch's file of the same name inside its folder (a/00001.mp4 and, a run later, b/00001.mp4 given as
    # b/): one id, and b's replaced a's clips in silence; refused while a's file is there
    os.rename(tmp_path / "a" / "take1.mp4", tmp_path / "a" / "00001.mp4")
    run_curation([tmp_path / "a"], tmp_path / "batches", cfg.resolve("tiny"), until="probe")
    with pytest.raises(UsageError, match=r"b/00001.mp4 and .*a/00001.mp4 \(in .*batches from an earlier run\): one "
                                         r"source id") as err:
        run_curation([tmp_path / "b"], tmp_path / "batches", cfg.resolve("tiny"), until="probe")
    assert "rename one of them" in err.value.hint
    os.remove(tmp_path / "a" / "00001.mp4")
    shutil.copy(corpus / "cut.mp4", tmp_path / "b" / "00002.mp4")
    added = run_curation([tmp_path], tmp_path / "d", cfg.resolve("tiny"), until="normalize")
    assert sorted(Path(s.path).name for s in added.sources if s.computed) == ["00002.mp4"]


def test_split_is_deterministic_by_group_and_the_report_is_self_contained(first_run) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl.curation.views import split_group, split_of

    options = cfg.resolve("tiny", ["curate.val_fraction=0.5"]).curate
    groups = [f"speaker{i:03d}" for i in range(200)]
    splits = [split_of(g, options) for g in groups]
    assert splits == [split_of(g, options) for g in groups]  # deterministic
    assert 60 < splits.count("val") < 140                    # about half
    other_seed = cfg.resolve("tiny", ["curate.val_fraction=0.5", "curate.split_seed=1"]).curate
    assert splits != [split_of(g, other_seed) for g in groups]
    by_parent = cfg.resolve("tiny", ["curate.split_by=parent"]).curate
    assert split_group("a-1", "/vox/id00017/x/00001.mp4", by_parent) == "x"
    by_speaker = cfg.resolve("tiny", ["curate.split_by=grandparent"]).curate  # VoxCeleb2: idNNNNN/VIDEO/clip
    assert split_group("a-1", "/vox/id00017/x/00001.mp4", by_speaker) == "id00017"
    assert split_group("a-2", "/vox/id00017/y/00002.mp4", by_speaker) == "id00017"
    assert split_group("a-3", "clip.mp4", by_speaker) == "a-3"  # no such folder: the source
    assert split_group("a-1", "/vox/id00017/x/00001.mp4", options) == "a-1"
    # a split per source of sources that share folders (VoxCeleb2's utterances) is said, with the way out
    from lipsyncctl.curation.views import split_warning

    def folders(paths: list[str]) -> Counter[str]:
        return Counter(str(Path(p).parent) for p in paths)

    vox = [f"/vox/id0001{s}/{v}/0000{u}.mp4" for s in range(2) for v in "xy" for u in range(3)]
    said = split_warning(folders(vox), options)
    assert said is not None and said.startswith("12 of 12 sources share their folder") and "split_by=parent" in said
    assert split_warning(folders(vox), by_parent) is None and split_warning(folders(vox), by_speaker) is None
    assert split_warning(folders([f"/raw/clip{i}.mp4" for i in range(3)] + [f"/other{i}/a.mp4" for i in range(5)]),
                         options) is None  # 3 of 8 share a folder: less than half
    assert split_warning(folders(vox), cfg.resolve("tiny", ["curate.val_fraction=0"]).curate) is None  # no val split
    assert split_warning(folders([f"/hdtf/WDA_{i}.mp4" for i in range(10)]), options) is None  # one flat folder
    # said by a run stopped early too (`--until segments`: the split is known), without the warnings of decisions
    # still to come (no span kept yet)
    from lipsyncctl.curation.outcome import CurateResult, SourceOutcome
    from lipsyncctl.curation.rebuild import warn_decisions
    from lipsyncctl.curation.records import Decision

    early = CurateResult(Path("d"), "segments", (0, 1))
    for i, p in enumerate(vox):
        early.add(SourceOutcome(f"s{i}", p, Decision.kept()), [], options)
    warn_decisions(early, options, complete=False)
    assert early.warnings == [said]
    lines = _manifest(first_run["data"])
    by_source: dict[str, set[str]] = {}
    for line in lines:
        by_source.setdefault(line["source"], set()).add(line["split"])
    assert all(len(s) == 1 for s in by_source.values())  # no source in both sets
    page = (first_run["data"] / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "http" not in page.replace("http-equiv", "")
    assert "probe/unreadable" in page and 'id="kept-hours"' in page
    assert (first_run["data"] / "train.txt").exists() and (first_run["data"] / "val.txt").exists()


def test_a_table_of_many_sources_lists_the_failed_and_the_not_kept_first(first_run, monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         tmp_path: Path) -> None:
    """Over ``TABLE_ROWS`` sources (a VoxCeleb2 run has a million: rendering them took minutes), the table lists that
    many, the failed and the not kept first, each by path, and says how many there are and where all are."""
    from lipsyncctl.cli import curate as cli_curate

    monkeypatch.setattr(cli_curate, "TABLE_ROWS", 4)
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["curate", "report", str(first_run["data"])]) == 0
    out = capsys.readouterr().out
    assert "(4 of 8 sources: failed first, then not kept; report.json lists every one)" in out
    listed = [name for name in ("empty.mp4", "notes.mov", "short.mp4", "silent.mp4", "truncated.mp4", "cut.mp4",
                                "retimed.mp4", "talk ü one.mp4") if name in out]
    assert listed == ["empty.mp4", "notes.mov", "short.mp4", "silent.mp4"]  # rejected ones, by path
    # a kept source with a failed span (exit 1) is among the failed, first
    import io

    from rich.console import Console

    from lipsyncctl.curation.decide import ClipSpan
    from lipsyncctl.curation.outcome import CurateResult, SourceOutcome
    from lipsyncctl.curation.records import Decision

    result = CurateResult(tmp_path, "features", (0, 1))
    for i in range(6):
        result.add(SourceOutcome(f"s{i}", f"/raw/{'z' if i == 3 else 'a'}{i}.mp4", Decision.kept()),
                   [ClipSpan(f"s{i}", 0, 125, Decision.failed("align", "disk full") if i == 3 else Decision.kept())],
                   cfg.resolve("tiny").curate)
    console = Console(file=io.StringIO(), width=200)
    cli_curate._render(console, result)
    assert "/raw/z3.mp4" in console.file.getvalue() and "/raw/a5.mp4" not in console.file.getvalue()
    assert "kept, 1 span failed" in console.file.getvalue()  # (it read "kept, no span kept")
    # report.html too lists the first sources not kept (by id), saying how many there are
    from lipsyncctl.curation import views

    monkeypatch.setattr(views, "SOURCE_ROWS", 2)
    assert main(["-q", "curate", "report", str(first_run["data"])]) == 0
    page = (first_run["data"] / "report.html").read_text()
    assert "Sources not kept (2 shown of 5, by id; report.json lists every one)" in page
    assert page.split("Sources not kept")[1].count("<td>rejected</td>") == 2
    capsys.readouterr()
    monkeypatch.setattr(cli_curate, "TABLE_ROWS", 8)
    assert main(["curate", "report", str(first_run["data"])]) == 0
    out = capsys.readouterr().out
    assert "sources:" not in out and all(name in out for name in ("cut.mp4", "talk ü one.mp4", "truncated.mp4"))


def test_curate_report_re_decides_without_the_sources(corpus: Path, first_run, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "copy"
    shutil.copytree(first_run["data"], data)
    assert main(["-q", "curate", "report", str(data), "--set", "curate.min_seconds=3.5", "--json"]) == 0
    doc = decided = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["counts"]["rejected"]["shots/too-short"] == 1  # the cut clip's 3.2 s shot
    assert all(s["computed"] == [] for s in doc["sources"])
    assert sum(1 for line in _manifest(data) if line["decision"]["verdict"] == "rejected") == 1
    assert not any("is kept" in w for w in doc["warnings"])
    # thresholds that reject every span: said (it exited 0 in silence; training would find nothing)
    assert main(["-q", "curate", "report", str(data), "--set", "curate.min_seconds=60", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any(w.startswith("no span of the") and "is kept" in w for w in doc["warnings"]), doc["warnings"]
    # --dry-run tries thresholds: the same decisions and counts, every span listed, nothing written (it was ignored
    # and the views rebuilt: train.txt emptied by a threshold being tried); the stages' options are refused
    views = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    assert main(["-q", "curate", "report", str(data), "--set", "curate.min_seconds=3.5", "--json", "--dry-run"]) == 0
    tried = json.loads(capsys.readouterr().out)
    def decisions(warnings: list[str]) -> list[str]:  # the warnings of the decisions (not of the settings changed)
        return [w for w in warnings if not w.startswith("settings differ")]

    assert tried["dry_run"] and tried["counts"] == decided["counts"]
    assert decisions(tried["warnings"]) == decisions(decided["warnings"])
    assert "curate.min_seconds 60.0 -> 3.5" in tried["warnings"][0]  # the views' settings are the last report's
    assert sum(c["decision"]["verdict"] == "rejected" for c in tried["clips"]) == 1 and len(tried["clips"]) == 5
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == views
    from lipsyncctl.curation import (
        rebuild as rebuild_mod,  # its outcomes spool outside DATA (a colleague's, read-only)
    )

    folders: list[object] = []
    real_spool = rebuild_mod.spool_sources
    monkeypatch.setattr(rebuild_mod, "spool_sources", lambda folder=None: folders.append(folder) or real_spool(folder))
    assert main(["-q", "curate", "report", str(data), "--dry-run", "--json"]) == 0
    assert folders == [None]
    capsys.readouterr()
    monkeypatch.undo()
    for flag in (["--until", "segments"], ["--force", "shots"], ["--jobs", "2"], ["--shard", "1/2"], ["--gpus", "0"],
                 ["--backend", "ray"]):
        assert main(["curate", "report", str(data), *flag]) == 2, flag
        assert f"{flag[0]} does not apply to `curate report`" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == views
    assert main(["curate", "report", str(tmp_path / "nothing")]) == 5  # a missing DATA: bad input
    (tmp_path / "empty").mkdir()
    assert main(["curate", "report", str(tmp_path / "empty")]) == 2  # a folder without records: usage
    assert main(["curate", str(corpus / "short.mp4")]) == 2  # -o is required outside `report`
    # a folder named report where the command runs: `curate report DATA` of a curated DATA is still the report verb
    # (it became a curate run of ./report that wanted -o); of another path, the error says why
    here = tmp_path / "here"
    (here / "report").mkdir(parents=True)
    monkeypatch.chdir(here)
    capsys.readouterr()
    assert main(["-q", "curate", "report", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
    assert main(["curate", "report", str(tmp_path / "empty")]) == 2
    assert "a path named report is here" in capsys.readouterr().err


def test_gpus_reach_the_runner_and_a_bad_list_is_a_usage_error(corpus: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gpus 0,1``: one worker per GPU (the runner hands each its device; the clip stages get it as
    ``ClipContext.device``)."""
    from lipsyncctl import api
    from lipsyncctl.runner import devices, workers

    calls = []
    monkeypatch.setattr(workers, "run_tasks", lambda tasks, execute, done, **kw: calls.append(kw))
    monkeypatch.setattr(devices, "check_gpus", lambda gpus: None)  # as on a machine with two GPUs
    assert main(["-q", "curate", str(corpus / "cut.mp4"), "-o", str(tmp_path / "d"), "--gpus", "0,1"]) == 0
    assert calls[-1]["gpus"] == ["cuda:0", "cuda:1"] and calls[-1]["jobs"] == 1
    api.curate([corpus / "cut.mp4"], tmp_path / "e", cfg.resolve("tiny"), gpus=["cuda:1"])
    assert calls[-1]["gpus"] == ["cuda:1"]
    assert main(["curate", str(corpus / "cut.mp4"), "-o", str(tmp_path / "f"), "--gpus", "x"]) == 2
    assert len(calls) == 2  # refused before any work


def test_each_clip_stage_loads_its_networks_on_the_worker_device(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.checkpoints import loaders, sfd
    from lipsyncctl.curation import align, features, quality, sync
    from lipsyncctl.curation.clipstages import ClipContext
    from lipsyncctl.faces import detect

    seen = {}

    class Net:  # stands in for a loaded network
        name = "stub"

        def eval(self) -> Net:
            return self

    def loader(role: str):  # type: ignore[no-untyped-def]
        def load(*args, device: str, **kwargs) -> Net:  # type: ignore[no-untyped-def]
            seen[role] = device
            return Net()
        return load

    monkeypatch.setattr(detect, "create_detector", loader("align detector"))
    monkeypatch.setattr(sfd, "load_sfd_face", loader("sync S3FD"))
    for name, role in (("load_syncnet_eval", "sync SyncNet"), ("load_hyperiqa", "quality hyperIQA"),
                       ("load_whisper_encoder", "features whisper")):
        monkeypatch.setattr(loaders, name, loader(role))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x")
    ctx = ClipContext("c", "s", tmp_path / "s.mp4", 0, 50, tmp_path / "s.wav", tmp_path, cfg.Config().curate, {},
                      {}, "cuda:1", {"syncnet-v2": weights, "sfd-face": weights})
    align._detector(ctx), sync._scorer(ctx), quality._network(ctx, weights), features._encoder(ctx, weights)
    assert seen == dict.fromkeys(["align detector", "sync S3FD", "sync SyncNet", "quality hyperIQA",
                                  "features whisper"], "cuda:1")


def test_the_ray_backend_gives_the_same_manifest(corpus: Path, first_run, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sources = [corpus / "cut.mp4", corpus / "short.mp4"]
    local = tmp_path / "local"
    run_curation(sources, local, cfg.resolve("tiny"), until="segments")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = tmp_path / "ray"
        run_curation(sources, remote, cfg.resolve("tiny"), until="segments", backend="ray")
    finally:
        ray.shutdown()
    assert _manifest(remote) == _manifest(local)


def test_a_source_with_several_audio_streams_uses_the_chosen_one_and_says_so(tmp_path: Path) -> None:
    """The first stream by default (the keys of sources curated before the setting stand), ``curate.audio_stream``
    another (its probe, normalize and every later stage again); the run lists such sources; a source without that
    stream is rejected alone (no-audio)."""
    import imageio_ffmpeg
    import numpy as np

    from lipsyncctl.media.audio import read_audio
    from tests.sync_media import write_wav

    picture = make_clip(tmp_path / "p.mkv", fps=25, frames=75, audio_rate=None)
    me, dx = write_wav(tmp_path / "me.wav", 3.0, channels=2, freq=440.0), write_wav(tmp_path / "dx.wav", 3.0)
    raw = tmp_path / "raw"
    raw.mkdir()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(picture), "-i", str(me), "-i", str(dx),
                    "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c", "copy", str(raw / "stems.mkv")], check=True)
    make_clip(raw / "plain.mp4", fps=25, frames=75)

    def pitch(res) -> float:  # type: ignore[no-untyped-def]
        (sid,) = [s.id for s in res.sources if s.path.endswith("stems.mkv")]
        sound = read_audio(res.data / "audio" / f"{sid}.wav", 16000, 1)
        return float(np.argmax(np.abs(np.fft.rfft(sound))) * 16000 / len(sound))

    data = tmp_path / "d"
    first = run_curation([raw], data, cfg.resolve("tiny"), until="normalize")
    assert first.ok and abs(pitch(first) - 440) < 5
    assert [w for w in first.warnings if "audio streams" in w] == [
        "1 source(s) have several audio streams; the one used is given: stems.mkv (2, stream 0) "
        "(--set curate.audio_stream=N picks another)"]
    again = run_curation([raw], data, cfg.resolve("tiny", ["curate.audio_stream=0"]), until="normalize")
    assert [s.computed for s in again.sources] == [[], []]  # the default's keys: nothing redone
    dialogue = run_curation([raw], data, cfg.resolve("tiny", ["curate.audio_stream=1"]), until="normalize")
    by_name = {Path(s.path).name: s for s in dialogue.sources}
    assert by_name["stems.mkv"].computed == ["probe", "normalize"] and abs(pitch(dialogue) - 220) < 5
    rejected = by_name["plain.mp4"].decision  # one stream only: no stream 1 (the file's own fact)
    assert (rejected.verdict, rejected.reason, rejected.value) == (
        "rejected", "no-audio", "no stream 1 (curate.audio_stream): 1 audio stream(s)")
    assert "stems.mkv (2, stream 1)" in " ".join(dialogue.warnings)


def test_a_dataset_whose_val_split_came_out_empty_is_said(tmp_path: Path) -> None:
    """20 sources at val_fraction 0.05 whose groups all fell on train's side: train's held-out loss and validation
    then have nothing, said with the ways out; a handful of sources (val not to be expected) says nothing."""
    from lipsyncctl.curation import rebuild
    from lipsyncctl.curation.decide import ClipSpan
    from lipsyncctl.curation.outcome import CurateResult, SourceOutcome
    from lipsyncctl.curation.records import Decision

    none_in_val = cfg.resolve("tiny", ["curate.split_seed=1"]).curate  # s0..s19 all train with this seed

    def result(n: int, options: cfg.CurateOptions = none_in_val) -> CurateResult:
        out = CurateResult(tmp_path, "features", (0, 1))
        for i in range(n):
            out.add(SourceOutcome(f"s{i}", f"/raw/s{i}.mp4", Decision.kept()),
                    [ClipSpan(f"s{i}", 0, 125, Decision.kept())], options)
        return out

    many = result(20)
    rebuild.warn_decisions(many, none_in_val)
    assert any(w.startswith("no kept span is in val (20 split groups at curate.val_fraction 0.05)") for w in
               many.warnings), many.warnings
    few = result(6)
    rebuild.warn_decisions(few, none_in_val)
    assert not [w for w in few.warnings if "in val" in w]
    half = cfg.resolve("tiny", ["curate.val_fraction=0.5"]).curate
    some_in_val = result(20, half)
    assert some_in_val.tally.kept_in_val and not some_in_val.tally.kept_groups  # the groups let go
    rebuild.warn_decisions(some_in_val, half)
    assert not [w for w in some_in_val.warnings if "in val" in w]


def test_a_shard_whose_records_a_later_rebuild_read_does_not_rebuild_the_views(corpus: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shard rebuilt the views of the whole DATA, one after another (a hundred shards ending together: a hundred
    rebuilds of minutes each at a million sources). A rebuild numbered above the one running when a shard's stages
    ended read its records: that shard decides its own sources and leaves the views as they are."""
    import contextlib

    from lipsyncctl.curation.rebuild import set_views_generation, views_generation
    from lipsyncctl.runner import lock

    data = tmp_path / "d"
    first = run_curation([corpus], data, cfg.resolve("tiny"), shard=(0, 2))
    assert first.views_written and views_generation(data) == (1, 1)
    manifest = (data / "manifest.jsonl").read_bytes()
    steps = lock.one_at_a_time

    @contextlib.contextmanager
    def another_shard_rebuilt_meanwhile(folder, name):  # type: ignore[no-untyped-def]
        with steps(folder, name):
            started, _ = views_generation(data)
            set_views_generation(data, started + 1, started + 1)  # (its views: those written above)
            yield

    monkeypatch.setattr(lock, "one_at_a_time", another_shard_rebuilt_meanwhile)
    second = run_curation([corpus], data, cfg.resolve("tiny"), shard=(1, 2))
    assert not second.views_written and second.ok and views_generation(data) == (2, 2)
    assert (data / "manifest.jsonl").read_bytes() == manifest  # not rebuilt
    assert {s.id for s in second.sources} == second.scope and len(second.sources) == sum(second.counts()["sources"].values())
    assert 0 < len(second.sources) < 8 and second.to_dict()["views_written"] is False
    monkeypatch.undo()
    third = run_curation([corpus], data, cfg.resolve("tiny"), shard=(1, 2))  # nobody rebuilt since: it does
    assert third.views_written and views_generation(data) == (3, 3) and len(third.sources) == 8
    assert len((data / "manifest.jsonl").read_bytes()) > len(manifest)  # now with the second shard's spans


def test_a_source_whose_name_is_not_utf8_is_curated(corpus: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A file name that is not UTF-8 (read with surrogates) stopped the whole run with an internal error (its id's
    hash, then report.html): it is a source like the others, its name written as its own bytes."""
    import os

    raw = tmp_path / "raw"
    raw.mkdir()
    odd = os.fsdecode(os.path.join(os.fsencode(raw), b"bad\xff.mp4"))
    shutil.copy(corpus / "short.mp4", odd)
    shutil.copy(corpus / "short.mp4", raw / "ok.mp4")
    assert main(["curate", str(raw), "-o", str(tmp_path / "d"), "--preset", "tiny", "--until", "segments",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(s["path"] for s in doc["sources"]) == sorted([odd, str(raw / "ok.mp4")])
    assert b"bad\xff.mp4" in (tmp_path / "d" / "report.html").read_bytes()


def test_a_split_that_leaves_train_empty_is_said(first_run, corpus: Path,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    """Split by a folder every source shares (grandparent of a flat folder) puts the whole dataset on one side: when
    that is val, train had nothing and nothing said so (an empty val was warned about). A run given some of DATA's
    sources (a later batch) rebuilds the same views: it says so too (it said nothing)."""
    from lipsyncctl.curation.job import report_curation

    data = tmp_path / "copy"
    shutil.copytree(first_run["data"], data)
    said, seeds = {}, {}
    for seed in range(40):
        res = report_curation(data, cfg.resolve("tiny", ["curate.val_fraction=0.5", "curate.split_by=grandparent",
                                                         f"curate.split_seed={seed}"]))
        kept = [line["split"] for line in _manifest(data) if line["decision"]["verdict"] == "kept"]
        empty = bool(kept) and "train" not in kept
        said[empty] = [w for w in res.warnings if w.startswith("every kept span is in val")]
        seeds[empty] = seed
        if len(said) == 2:
            break
    assert said[True] and "split by grandparent" in said[True][0] and said[False] == []
    one = sorted(p for p in corpus.rglob("*.mp4"))[0]
    res = run_curation([one], data, cfg.resolve("tiny", ["curate.val_fraction=0.5", "curate.split_by=grandparent",
                                                         f"curate.split_seed={seeds[True]}"]))
    assert res.scope is not None and len(res.scope) < len(list(res.sources))
    assert any(w.startswith("every kept span is in val") for w in res.warnings)


def test_a_moved_tree_keeps_its_ids_and_is_not_taken_for_renamed_files(corpus: Path, tmp_path: Path) -> None:
    """`mv raw /mnt/big/raw`, then curate the new place into the same DATA: each source keeps its id (its path inside
    the folder given) and nothing is recomputed; the check for renamed files (a new id holding a gone source's
    content) took each moved file for a rename of itself and refused the run."""
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(corpus / "retimed.mp4", raw / "00001.mp4")
    shutil.copy(corpus / "cut.mp4", raw / "00002.mp4")
    first = run_curation([raw], tmp_path / "d", cfg.resolve("tiny"), until="normalize")
    os.rename(raw, tmp_path / "moved")
    again = run_curation([tmp_path / "moved"], tmp_path / "d", cfg.resolve("tiny"), until="normalize")
    assert sorted(s.id for s in again.sources) == sorted(s.id for s in first.sources)
    assert [s.computed for s in again.sources] == [[], []]


def test_a_shard_with_no_source_says_so(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["curate", str(corpus / "short.mp4"), "-o", str(tmp_path / "d"), "--shard", "5/8", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and "shard 5/8 has no source: the 1 source(s) go to the first 1 shard(s)" in doc["warnings"]
