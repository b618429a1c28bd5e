"""curate: shots and align in one decode of the source (lipsyncctl/curation/onepass.py) make exactly what the
two separate passes make (``curate.one_pass=false``): the same manifest, aligned clips and matrices, byte for
byte, where a clip is split at a segment boundary, where the remainder is merged into the clip before it,
where a frame without a face lies past a boundary that is still undecided, and in a faceless shot after a
cut. The source is decoded once; a rerun computes nothing; ``--force shots`` recomputes once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.curation.job import run_curation
from tests.curate_media import grey_frames, write_talking_clip
from tests.sync_media import sample_frames

#: segments of 25 frames so that short test clips cross several boundaries
SETS = ["curate.segment_seconds=1", "curate.min_sync_frames=10", "curate.min_seconds=0.5"]
HIDDEN = (35, 37)  # frames of the long shot whose face is covered


def _ping_pong(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    period = 2 * len(frames) - 2
    return [frames[i % period if i % period < len(frames) else period - i % period] for i in range(n)]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lipsyncctl.faces.detect import create_detector

    folder = tmp_path_factory.mktemp("onepass") / "raw"
    faces = sample_frames(45, scale=0.75)  # a real face, about 80 px wide
    long = [f.copy() for f in _ping_pong(faces, 90)]
    detector = create_detector("auto")
    for i in range(*HIDDEN):  # cover the face (a small patch: no shot cut)
        x0, y0, x1, y1 = (int(v) for v in max(detector.detect(long[i]), key=lambda f: f.area).box)
        long[i][max(y0 - 10, 0):y1 + 10, max(x0 - 10, 0):x1 + 10] = 0
    write_talking_clip(folder / "long.mp4", long)
    write_talking_clip(folder / "cut.mp4", faces[:45] + faces[:15][::-1] + grey_frames(faces[0], 55))
    return folder


def _files(data: Path) -> dict[str, str]:
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((data / "aligned").rglob("*")) if p.is_file()}


def _manifest(data: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


def _reader_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from lipsyncctl.media import reader

    opened: list[str] = []
    real = reader.IndexedReader.__init__

    def init(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        import inspect

        caller = inspect.stack()[1]
        opened.append(f"{Path(path).name} {Path(caller.filename).stem}.{caller.function}")
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(reader.IndexedReader, "__init__", init)
    return opened


@pytest.fixture(scope="module")
def runs(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out: dict[str, object] = {}
    for mode in ("true", "false"):
        with pytest.MonkeyPatch.context() as mp:
            opened = _reader_opens(mp)
            data = tmp_path_factory.mktemp(f"one_pass_{mode}") / "data"
            result = run_curation([raw], data, cfg.resolve("tiny", [*SETS, f"curate.one_pass={mode}"]),
                                  until="align")
        out[mode] = {"data": data, "result": result, "opened": opened}
    return out


def test_one_pass_makes_what_two_passes_make(runs) -> None:  # type: ignore[no-untyped-def]
    one, two = runs["true"], runs["false"]
    assert _manifest(one["data"]) == [
        {**line, "aligned": line["aligned"] and line["aligned"].replace(str(two["data"]), str(one["data"])),
         "matrices": line["matrices"] and line["matrices"].replace(str(two["data"]), str(one["data"]))}
        if "aligned" in line else line for line in _manifest(two["data"])]
    assert _files(one["data"]) == _files(two["data"]) and _files(one["data"])
    spans = [(c.source.split("-")[0], c.first, c.stop, c.decision.verdict, c.decision.reason, c.decision.value)
             for c in one["result"].spans()]
    assert spans == [
        ("cut", 0, 25, "kept", None, None),
        ("cut", 25, 60, "kept", None, None),              # the remainder 50-60 merged: a 35-frame clip
        ("cut", 60, 85, "rejected", "no-face", 0),        # the faceless shot after the cut
        ("cut", 85, 115, "rejected", "no-face", 0),
        ("long", 0, 25, "kept", None, None),              # split at 25 while 35-36 had no face yet decided
        ("long", 25, 50, "rejected", "no-face", HIDDEN[0] - 25),
        ("long", 50, 90, "kept", None, None),             # 75-90 merged
    ]


def test_one_pass_decodes_each_source_once(runs) -> None:  # type: ignore[no-untyped-def]
    def stages(opened: list[str]) -> list[str]:  # not the report's thumbnails of rejected spans (a view)
        return sorted(o for o in opened if "views." not in o)

    assert stages(runs["true"]["opened"]) == ["cut.mp4 onepass.shots_and_align", "long.mp4 onepass.shots_and_align"]
    assert stages(runs["false"]["opened"]) == ["cut.mp4 clipstages._open", "cut.mp4 stages.detect_shots",
                                               "long.mp4 clipstages._open", "long.mp4 stages.detect_shots"]
    computed = {Path(s.path).name: s.computed for s in runs["true"]["result"].sources}
    assert computed["long.mp4"] == ["probe", "normalize", "shots", "segments", "align:0-25", "align:25-50",
                                    "align:50-90"]


def test_a_rerun_computes_nothing_and_force_shots_recomputes_once(raw: Path, runs,  # type: ignore[no-untyped-def]
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = runs["true"]["data"]
    config = cfg.resolve("tiny", SETS)
    before = _files(data)
    again = run_curation([raw], data, config, until="align")
    assert all(s.computed == [] for s in again.sources)
    opened = _reader_opens(monkeypatch)
    forced = run_curation([raw], data, config, until="align", force=["shots"])
    assert sorted(o for o in opened if "views." not in o) == [  # one pass each, align not done again after it
        "cut.mp4 onepass.shots_and_align", "long.mp4 onepass.shots_and_align"]
    assert {Path(s.path).name: s.computed for s in forced.sources}["long.mp4"] == [
        "shots", "segments", "align:0-25", "align:25-50", "align:50-90"]
    assert _files(data) == before


def test_an_inconsistency_falls_back_to_two_passes(raw: Path, runs, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the pass's bookkeeping ever disagree with itself (its guards raise ``Inconsistent``), the clips it
    made are forgotten (records and files) and the source runs in two passes: the same results."""
    from lipsyncctl.curation import onepass

    real = onepass._Assign._close
    calls: list[int] = []

    def close(self, clip, stop, ops):  # type: ignore[no-untyped-def]
        calls.append(stop)
        if len(calls) == 3:  # after two clips were written and recorded
            raise onepass.Inconsistent("test")
        real(self, clip, stop, ops)

    monkeypatch.setattr(onepass._Assign, "_close", close)
    data = tmp_path / "data"
    result = run_curation([raw / "long.mp4"], data, cfg.resolve("tiny", SETS), until="align")
    two = runs["false"]["data"]
    want = [{**line, "aligned": line["aligned"] and line["aligned"].replace(str(two), str(data)),
             "matrices": line["matrices"] and line["matrices"].replace(str(two), str(data))}
            for line in _manifest(two) if line["source"].startswith("long")]
    assert _manifest(data) == want
    assert _files(data) == {k: v for k, v in _files(two).items() if "/long-" in k}
    assert [*result.sources][0].computed == ["probe", "normalize", "shots", "segments", "align:0-25", "align:25-50",
                                          "align:50-90"]
