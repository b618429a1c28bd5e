"""`lipsyncctl curate`'s report.html: thumbnails of rejected spans. A small corpus (a face shot cut to a
1.6 s grey shot, rejected ``shots/too-short``; a dark clip, rejected by a clip stage of the test's own
``brightness/too-dark``) is curated; the page shows each rejected span's first frame as an inline JPEG
with its stage, reason and value, stays self-contained, and is rebuilt by ``curate report`` without the
thumbnails of a source that is gone."""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation.job import run_curation
from tests.curate_media import write_talking_clip
from tests.sync_media import sample_frames

FACE, GREY, DARK = 60, 40, 60  # frames: the face shot, the grey shot after the cut, the dark clip
FIGURE = re.compile(r'<figure><img src="data:image/jpeg;base64,([^"]+)" alt="([^"]+)">'
                    r"<figcaption><b>([^<]+)</b>")


@pytest.fixture(scope="module", autouse=True)
def _brightness_stage() -> Iterator[None]:
    """One clip stage of the test's own (the mean brightness of the span's first frame; below 60 is
    ``too-dark``) instead of the network stages: rejections at a clip stage without any network."""
    from lipsyncctl.curation import clipstages, job
    from lipsyncctl.curation.records import Decision
    from lipsyncctl.media.reader import IndexedReader

    def measure(ctx: clipstages.ClipContext) -> dict[str, float]:
        with IndexedReader(ctx.source, Fraction(25)) as reader:
            return {"brightness": float(reader.read([ctx.first])[ctx.first].mean())}

    stage = clipstages.ClipStage(
        "brightness", 1, measure,
        decide=lambda data, options: Decision.rejected("brightness", "too-dark", round(data["brightness"], 1))
        if data["brightness"] < 60 else None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clipstages, "CLIP_STAGES", (stage,))
        mp.setattr(job, "CLIP_STAGES", (stage,))
        yield


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    return write_talking_clip(path, frames)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("report") / "raw"
    raw.mkdir()
    faces = sample_frames(FACE, scale=0.25)
    h, w = faces[0].shape[:2]
    _write(raw / "cut.mp4", faces + [np.full((h, w, 3), 40, np.uint8)] * GREY)
    _write(raw / "dark.mp4", [np.full((h, w, 3), 25, np.uint8)] * DARK)
    return raw


@pytest.fixture(scope="module")
def curated(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data") / "data"
    assert run_curation([corpus], data, cfg.resolve("tiny")).ok
    return data


def _figures(page: str) -> dict[str, tuple[str, np.ndarray]]:
    """Span id -> (caption, decoded RGB thumbnail) of every thumbnail on the page."""
    import cv2

    out = {}
    for b64, span, caption in FIGURE.findall(page):
        bgr = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert bgr is not None, span
        out[span] = (caption, bgr[..., ::-1])
    return out


def test_report_shows_each_rejected_span_first_frame_with_its_reason(curated: Path) -> None:
    page = (curated / "report.html").read_text()
    figures = _figures(page)
    by_name = {span.split("-", 1)[0]: (span, caption, rgb) for span, (caption, rgb) in figures.items()}
    assert sorted(by_name) == ["cut", "dark"] and len(figures) == 2  # the rejected spans only, not the kept one
    span, caption, rgb = by_name["cut"]
    assert span.endswith(f"_{FACE:06d}-{FACE + GREY:06d}") and caption == "shots/too-short = 1.6"
    assert abs(float(rgb.mean()) - 40) < 4  # frame 60 (the span's first: grey), not the source's frame 0 (a face)
    span, caption, rgb = by_name["dark"]
    assert caption.startswith("brightness/too-dark = ") and abs(float(rgb.mean()) - 25) < 4
    assert all(max(rgb.shape[:2]) <= 160 for _, rgb in figures.values())  # small: at most 160 px
    assert "Rejected spans (2 shown of 2, by id)" in page
    assert page.startswith("<!doctype html>") and "http" not in page.replace("http-equiv", "")
    assert not re.search(r'src="(?!data:)', page)  # every image inline: the page stands alone


def test_curate_report_leaves_out_a_source_that_is_gone(corpus: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(corpus / "dark.mp4", raw / "gone.mp4")
    data = tmp_path / "data"
    assert run_curation([raw, corpus / "cut.mp4"], data, cfg.resolve("tiny")).ok
    assert sorted(s.split("-", 1)[0] for s in _figures((data / "report.html").read_text())) == ["cut", "gone"]
    (raw / "gone.mp4").unlink()
    assert main(["-q", "curate", "report", str(data), "--json"]) == 0
    capsys.readouterr()
    page = (data / "report.html").read_text()
    assert [s.split("-", 1)[0] for s in _figures(page)] == ["cut"]       # silently without the gone one
    assert "Rejected spans (1 shown of 2, by id)" in page and "brightness/too-dark" in page  # still counted


def test_thumbnails_are_the_first_rejected_spans_by_id(curated: Path) -> None:
    import json

    from lipsyncctl.curation import views

    lines = [json.loads(line) for line in (curated / "manifest.jsonl").read_text().splitlines()]
    paths = {s["id"]: s["path"] for s in json.loads((curated / "report.json").read_text())["sources"]}
    rejected = [line["id"] for line in lines if line["decision"]["verdict"] == "rejected"]
    assert [t["id"] for t in views.reject_thumbnails(lines, paths, 25, limit=1)] == rejected[:1]
    assert views.reject_thumbnails(lines, {}, 25) == []  # no source known: no thumbnail, no error


def test_the_views_are_written_a_line_at_a_time_and_replaced_together(curated: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The six views are streamed to temporary files and renamed together: a failure while the report is made
    (after the manifest's lines were written) leaves every view of before as it was, and no temporary file."""
    import json

    from lipsyncctl.curation import job, views

    data = tmp_path / "copy"
    shutil.copytree(curated, data)
    names = ("manifest.jsonl", "train.txt", "val.txt", "report.json", "report.html", "curate.yaml")
    before = {n: (data / n).read_bytes() for n in names}
    report = json.loads(before["report.json"])
    lines = [json.loads(line) for line in before["manifest.jsonl"].decode().splitlines()]
    assert report["histograms"] == views.histograms(lines)  # gathered while the lines were written: the same
    made = [{"id": "a", "first": 0, "lse_c": 7.5, "quality": 40}, {"id": "b", "first": 9, "lse_c": 2.5, "ok": True}]
    assert views.histograms(made, bins=2) == views.histograms({"lse_c": [7.5, 2.5], "quality": [40.0]}, bins=2) == {
        "lse_c": {"min": 2.5, "max": 7.5, "counts": [1, 1]}, "quality": {"min": 40.0, "max": 40.0, "counts": [1, 0]}}
    assert report["split"] == {k: len(before[f"{k}.txt"].decode().splitlines()) for k in ("train", "val")}

    def broken(*_: object, **__: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(views, "report_html", broken)
    with pytest.raises(OSError, match="No space"):
        job.report_curation(data, cfg.resolve("tiny"))
    assert {n: (data / n).read_bytes() for n in names} == before
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(".") and p.is_file()) == []
    monkeypatch.undo()
    job.report_curation(data, cfg.resolve("tiny"))  # the same views again, from the records
    assert (data / "manifest.jsonl").read_bytes() == before["manifest.jsonl"]
    assert json.loads((data / "report.json").read_text())["histograms"] == report["histograms"]


def _dataset(curated: Path, data: Path, sources: int, per_source: int) -> Path:
    """``sources`` copies of the fixture's ``cut`` source record under ``data``, each with ``per_source`` kept 5 s
    spans (copies of its first clip record); the source files are gone."""
    from lipsyncctl.curation.decide import clip_id
    from lipsyncctl.curation.records import RecordStore

    store = RecordStore.of(curated)
    (cut,) = [store.load("sources", s) for s in store.ids("sources") if s.startswith("cut-")]
    assert cut is not None
    kept = next(c for c in store.clip_records(cut["id"]).values() if c.first == 0).to_dict()
    out = RecordStore.of(data)
    for i in range(sources):
        sid = f"s{i:05d}"
        pieces = [[k * 125, (k + 1) * 125, 0, per_source * 125] for k in range(per_source)]
        rec = {**cut, "id": sid, "path": str(data.parent / "gone" / f"{sid}.mp4")}
        rec["stages"] = {**cut["stages"], "segments": {**cut["stages"]["segments"],
                                                       "data": {**cut["stages"]["segments"]["data"], "pieces": pieces}}}
        out.save("sources", sid, rec)
        for a, b, *_ in pieces:
            cid = clip_id(sid, a, b)
            out.save(f"clips/{sid}", cid, {**kept, "id": cid, "source": sid, "first": a, "stop": b})
    return data


def _peak(data: Path) -> int:
    """The traced peak of ``curate report`` of ``data``, whose spans are all kept."""
    import tracemalloc

    from lipsyncctl.curation.job import report_curation
    from lipsyncctl.curation.records import RecordStore

    tracemalloc.start()
    try:
        result = report_curation(data, cfg.resolve("tiny"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        store = RecordStore.of(data)
        assert result.counts()["clips"] == {"kept": sum(len(store.ids(f"clips/{s}")) for s in store.ids("sources"))}


def test_the_views_of_a_dataset_take_memory_flat_in_its_spans(curated: Path, tmp_path: Path) -> None:
    """Steps 3 and 4 decide, write and count a source's spans, then drop them: rebuilding the views of 10 times as
    many spans (more sources of the same length) takes a few dozen bytes more per span (its histogram value, a
    share of its source's id), where holding the spans took ~1.6 KB each; every span is in the views."""
    import json

    from lipsyncctl.curation.decide import clip_id
    from lipsyncctl.curation.job import report_curation

    per_source = 20
    small = _dataset(curated, tmp_path / "d10", 10, per_source)
    large = _dataset(curated, tmp_path / "d100", 100, per_source)
    # imports, first-call caches and tables that only grow (Python 3.11's pathlib interns each path part: the
    # interpreter's table of interned strings doubles, once, at a size that depends on the process's past) at
    # their size before the measure
    report_curation(large, cfg.resolve("tiny"))
    growth = (_peak(large) - _peak(small)) / (90 * per_source)
    assert growth < 250, f"{growth:.0f} B a span"
    lines = (large / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 2000 and [json.loads(line)["id"] for line in lines] == sorted(
        clip_id(f"s{i:05d}", k * 125, (k + 1) * 125) for i in range(100) for k in range(per_source))
    report = json.loads((large / "report.json").read_text())
    assert len(report["sources"]) == 100 and report["counts"]["kept_seconds"] == 2000 * 5


def test_the_views_of_a_dataset_take_memory_flat_in_its_sources(curated: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A source's outcome is spooled to a temporary file, not held (~0.8 KB a source before: a million sources
    took ~0.8 GB at the end of a run): 10 times as many sources of one span each take a few dozen bytes more a
    source (its id, listed and sorted, its histogram values); report.json and the result still list every one."""
    import json

    from lipsyncctl.curation.job import report_curation

    small, large = _dataset(curated, tmp_path / "d100", 100, 1), _dataset(curated, tmp_path / "d1000", 1000, 1)
    from lipsyncctl.curation import outcome

    monkeypatch.setattr(outcome, "SPOOL_MEMORY", 1)  # on disk from the first (a spool holds 1 MiB in memory)
    report_curation(large, cfg.resolve("tiny"))  # (see the test above)
    growth = (_peak(large) - _peak(small)) / 900
    assert growth < 300, f"{growth:.0f} B a source"
    result = report_curation(large, cfg.resolve("tiny"))
    assert len(result.sources) == 1000 and [s.id for s in result.sources] == [f"s{i:05d}" for i in range(1000)]
    report = json.loads((large / "report.json").read_text())
    assert [s["id"] for s in report["sources"]] == [f"s{i:05d}" for i in range(1000)]
    assert report["sources"][0] == [*result.sources][0].to_dict()


def test_json_of_a_curate_lists_every_source_read_back_from_disk(curated: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``--json`` writes the sources as it reads them back from their spool (on disk past its memory share): the
    text is json.dumps(indent=2)'s, byte for byte, of the same result made into lists."""
    import json

    from lipsyncctl.cli.state import _chunks
    from lipsyncctl.curation import outcome
    from lipsyncctl.curation.job import report_curation

    monkeypatch.setattr(outcome, "SPOOL_MEMORY", 4096)
    data = _dataset(curated, tmp_path / "d", 60, 1)
    assert main(["curate", "report", str(data), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in doc["sources"]] == [f"s{i:05d}" for i in range(60)] and doc["failures"] == 0
    result = report_curation(data, cfg.resolve("tiny"))
    assert "".join(_chunks(result.to_dict(lazy=True))) == json.dumps(result.to_dict(), indent=2)
    odd = {"a": iter([{"é": [1, {"b\n": None}]}, []]), "none": iter([]), "n": {"deep": [1, [2, {}]]}, "s": "x\ny"}
    assert "".join(_chunks(odd)) == json.dumps({**odd, "a": [{"é": [1, {"b\n": None}]}, []], "none": []}, indent=2)


def test_a_spool_reads_back_what_it_holds_in_memory_and_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items past its memory share go to a temporary file; each iteration reads from the first, two may interleave,
    and an item appended after an iteration is read by the next."""
    from lipsyncctl.curation import outcome

    monkeypatch.setattr(outcome, "SPOOL_MEMORY", 100)
    spool: outcome.Spool[int] = outcome.Spool(lambda n: {"n": n, "pad": "é" * (n % 7)}, lambda d: d["n"])
    assert len(spool) == 0 and list(spool) == []
    for n in range(5000):
        spool.append(n)
    assert spool._file._rolled and len(spool) == 5000  # type: ignore[attr-defined]
    one, two = iter(spool), iter(spool)
    assert [next(one) for _ in range(3)] == [0, 1, 2] and list(two) == list(range(5000)) and next(one) == 3
    spool.append(5000)
    assert list(spool)[-2:] == [4999, 5000] and sum(1 for _ in spool.lines()) == 5001


def test_a_curate_result_pickles_with_its_spools(corpus: Path, curated: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A result's sources (and a dry run's plan) are in temporary files: pickled (a result returned from a worker
    process, a deep copy) they travel as their lines."""
    import copy
    import pickle

    from lipsyncctl.curation import outcome
    from lipsyncctl.curation.job import report_curation, run_curation

    monkeypatch.setattr(outcome, "SPOOL_MEMORY", 100)  # on disk
    result = report_curation(_dataset(curated, tmp_path / "d", 30, 2), cfg.resolve("tiny"))
    again, copied = pickle.loads(pickle.dumps(result)), copy.deepcopy(result)
    assert [s.to_dict() for s in again.sources] == [s.to_dict() for s in result.sources] == [
        s.to_dict() for s in copied.sources] and len(again.sources) == 30
    assert again.counts() == result.counts()
    plan = run_curation([corpus], curated, cfg.resolve("tiny"), dry_run=True)  # its spans: a spool too
    assert len(list(plan.spans())) > 2
    assert [c.id for c in pickle.loads(pickle.dumps(plan)).spans()] == [c.id for c in plan.spans()]


def test_kept_spans_a_demo_measured_or_of_another_resolution_are_said(tmp_path: Path) -> None:
    """A dataset whose kept spans the tiny preset's random networks "measured" (sync not measured, quality
    meaningless), or that holds spans aligned at another resolution (a 256 px run beside a 512 px one): the views
    listed them beside real ones without a word. Said in the run's warnings, report.json and the page."""
    from lipsyncctl.curation.decide import ClipSpan
    from lipsyncctl.curation.outcome import CurateResult, SourceOutcome
    from lipsyncctl.curation.rebuild import warn_decisions
    from lipsyncctl.curation.records import Decision
    from lipsyncctl.curation.views import report_html

    options = cfg.resolve("tiny").curate
    result = CurateResult(tmp_path, "report", (0, 1))
    tiny = {"sync_scale": "tiny", "resolution": 256}
    for i, summary in enumerate((tiny, {"resolution": 512}, {"resolution": 256})):
        spans = [ClipSpan(f"s{i}", 0, 125, Decision.kept(), summary)]
        result.add(SourceOutcome(f"s{i}", f"/raw/s{i}.mp4", Decision.kept(), clips=1, kept=1), spans, options)
    warn_decisions(result, options)
    said = " | ".join(result.warnings)
    assert "1 kept span(s) were measured by the tiny preset's random networks" in said
    assert "1 kept span(s) are aligned at another resolution than curate.resolution 256 (1 at 512)" in said
    page = report_html({"counts": result.counts(), "until": "report", "sources": [], "warnings": result.warnings})
    assert page.count('<p class="warning"><b>Warning:</b>') == len(result.warnings) >= 2


def test_report_json_and_the_page_hold_the_runs_warnings(curated: Path, tmp_path: Path) -> None:
    """The warnings a run gives (here: thresholds that keep nothing) were on the console and in --json only."""
    import json

    from lipsyncctl.curation.job import report_curation

    data = tmp_path / "copy"
    shutil.copytree(curated, data)
    result = report_curation(data, cfg.resolve("tiny", ["curate.min_seconds=60"]))
    assert any(w.startswith("no span of the") for w in result.warnings)
    assert json.loads((data / "report.json").read_text())["warnings"] == result.warnings
    assert (data / "report.html").read_text().count('<p class="warning">') == len(result.warnings)


def test_nothing_kept_because_spans_failed_says_so_not_loosen_a_threshold(tmp_path: Path) -> None:
    from lipsyncctl.curation.decide import ClipSpan
    from lipsyncctl.curation.outcome import CurateResult, SourceOutcome
    from lipsyncctl.curation.rebuild import warn_decisions
    from lipsyncctl.curation.records import Decision

    options = cfg.resolve("tiny").curate
    result = CurateResult(tmp_path, "report", (0, 1))
    spans = [ClipSpan("s", 0, 125, Decision.failed("quality", "cannot read checkpoint"))]
    result.add(SourceOutcome("s", "/raw/s.mp4", Decision.kept(), clips=1, kept=0), spans, options)
    warn_decisions(result, options)
    (said,) = [w for w in result.warnings if w.startswith("no span of the")]
    assert "1 failed (manifest.jsonl gives each span's error, report.json each source's" in said and "loosen a threshold" not in said
    # sources rejected whole (an unreadable file: no span at all): no threshold loosens that (it said to)
    result = CurateResult(tmp_path, "report", (0, 1))
    result.add(SourceOutcome("u", "/raw/u.mp4", Decision.rejected("probe", "unreadable"), clips=0, kept=0), [], options)
    warn_decisions(result, options)
    (said,) = [w for w in result.warnings if w.startswith("no span of the")]
    assert "no source gave a span: report.json says why each was rejected" in said and "loosen" not in said


def test_a_report_with_other_settings_than_the_views_says_which_and_how_to_keep_them(tmp_path: Path) -> None:
    import json

    import yaml

    from lipsyncctl.curation.rebuild import settings_changed

    options = cfg.resolve("tiny").curate
    views_yaml = tmp_path / "curate.yaml"
    assert settings_changed(views_yaml, options) is None  # no views yet
    written = options.model_dump()  # as rebuild writes it
    views_yaml.write_text(yaml.safe_dump({"tool": "lipsyncctl", "curate": written}))
    assert settings_changed(views_yaml, options) is None  # the same settings
    assert options.min_seconds == 2.0  # an integer written by hand (or an older version) is the same value
    views_yaml.write_text(yaml.safe_dump({"curate": {**written, "min_seconds": 2}}))
    assert settings_changed(views_yaml, options) is None
    earlier = {"quality_min": 50.0, "split_by": "grandparent", "min_seconds": 3.0, "sync_min_conf": 1.5,
               "val_fraction": 0.25}
    views_yaml.write_text(yaml.safe_dump({"curate": {**written, **earlier}}))
    said = settings_changed(views_yaml, options)
    assert said is not None and said.startswith("settings differ from those the views were last written with "
                                                "(curate.yaml): ")
    assert f"curate.quality_min 50.0 -> {json.dumps(options.quality_min)}" in said
    assert f'curate.split_by "grandparent" -> "{options.split_by}"' in said
    keep = said[said.index("(to keep the earlier ones: "):]
    assert all(f"--set curate.{k}={json.dumps(v)}" in keep for k, v in earlier.items())  # every one, not three
    # a value this version refuses (an older choice) is said as written and hides no other change
    views_yaml.write_text(yaml.safe_dump({"curate": {**written, "quality_min": 50.0, "split_by": "old-choice"}}))
    said = settings_changed(views_yaml, options)
    assert said is not None and "curate.quality_min 50.0 ->" in said and 'curate.split_by "old-choice" ->' in said
    views_yaml.write_text("curate: [not, a, mapping")  # unreadable views: nothing to compare
    assert settings_changed(views_yaml, options) is None


def test_a_report_keeps_how_far_the_runs_went(curated: Path, tmp_path: Path) -> None:
    """`curate report` runs no stage: report.json and the page said the stages ran "up to report"; they keep the
    last run's (curate.yaml says it)."""
    import json

    import yaml

    from lipsyncctl.curation.job import report_curation

    data = tmp_path / "copy"
    shutil.copytree(curated, data)
    ran = json.loads((data / "report.json").read_text())["until"]
    assert ran != "report" and yaml.safe_load((data / "curate.yaml").read_text())["until"] == ran
    report_curation(data, cfg.resolve("tiny", ["curate.quality_min=50"]))
    assert json.loads((data / "report.json").read_text())["until"] == ran
    assert f"up to\n<code>{ran}</code>" in (data / "report.html").read_text()
