"""`lipsyncctl curate forget DATA SOURCE...`: sources taken out of a curated dataset (a speaker who withdrew their
consent, a file gone for good that kept `curate report` failing): their records and every file curate made of them
in DATA go, the views are rebuilt without them, the source files are untouched; a source given that matches none
removes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lipsyncctl import api
from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation.job import run_curation
from lipsyncctl.curation.records import RecordStore
from lipsyncctl.errors import UsageError
from tests.curate_media import write_talking_clip
from tests.sync_media import sample_frames


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forget")
    raw = root / "raw"
    for speaker in ("anna", "ben"):
        (raw / speaker).mkdir(parents=True)
        write_talking_clip(raw / speaker / "take.mp4", sample_frames(60, scale=0.75))
    data = root / "data"
    run_curation([raw], data, cfg.resolve("tiny"), until="align")
    return {"raw": raw, "data": data}


def _copy(curated: dict[str, Path], tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(curated["data"], data)
    return data


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sources(data: Path) -> dict[str, str]:
    store = RecordStore.of(data)
    return {rid: store.load("sources", rid)["path"] for rid in store.ids("sources")}


def test_a_forgotten_source_leaves_no_record_file_or_view_line(curated: dict[str, Path], tmp_path: Path) -> None:
    data, raw = _copy(curated, tmp_path), curated["raw"]
    before = _hashes(raw)
    (anna,) = [rid for rid, path in _sources(data).items() if "/anna/" in path]
    files = [p for p in data.rglob("*") if p.is_file() and anna in str(p) and ".lipsyncctl" not in p.parts]
    assert any(p.suffix == ".wav" for p in files) and any(p.suffix == ".mp4" for p in files)
    lines = [json.loads(x) for x in (data / "manifest.jsonl").read_text().splitlines()]
    assert {x["source"] for x in lines} == set(_sources(data))  # both there before
    # a dry run says what would go and removes nothing
    plan = api.curate_forget(data, [raw / "anna"], cfg.resolve("tiny"), dry_run=True)
    assert [f["id"] for f in plan.forgotten] == [anna] and plan.forgotten[0]["files"] >= len(files)
    assert all(p.is_file() for p in files) and anna in _sources(data)
    # a folder of sources, as curated: its records, files and view lines go; the other source's stay
    result = api.curate_forget(data, [raw / "anna"], cfg.resolve("tiny"))
    assert [f["id"] for f in result.forgotten] == [anna] and result.ok
    assert anna not in _sources(data) and not any(p.exists() for p in files)
    assert not (data / "aligned" / anna).exists() and not (RecordStore.of(data).root / "clips" / anna).exists()
    lines = [json.loads(x) for x in (data / "manifest.jsonl").read_text().splitlines()]
    assert lines and anna not in {x["source"] for x in lines}
    listed = (data / "train.txt").read_text() + (data / "val.txt").read_text()
    assert anna not in listed and listed.strip()
    assert _hashes(raw) == before  # the source files are never touched
    # the other one by its id, from the command line (--json): its table of what went
    (ben,) = _sources(data)
    assert main(["--json", "curate", "forget", str(data), ben]) == 0
    assert _sources(data) == {} and (data / "manifest.jsonl").read_text() == ""  # (the last one: empty views)
    assert (data / "train.txt").read_text() == (data / "val.txt").read_text() == ""


def test_a_source_that_matches_nothing_removes_nothing(curated: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = _copy(curated, tmp_path)
    before = _hashes(data)
    (anna,) = [rid for rid, path in _sources(data).items() if "/anna/" in path]
    with pytest.raises(UsageError, match="nobody.mp4: no source of .* is this id or path, or under this folder"):
        api.curate_forget(data, [anna, tmp_path / "nobody.mp4"], cfg.resolve("tiny"))
    assert _hashes(data) == before  # (anna, named first, is not removed either)
    assert main(["curate", "forget", str(data)]) == 2
    assert "give the dataset folder, then the sources to forget" in capsys.readouterr().err
    assert main(["curate", "forget", str(data), anna, "--until", "align"]) == 2
    assert "--until does not apply to `curate forget`" in capsys.readouterr().err
    assert main(["curate", "forget", str(tmp_path / "none"), anna]) == 5
    assert _hashes(data) == before
