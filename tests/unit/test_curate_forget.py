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
    for args in ([str(data)], []):
        assert main(["curate", "forget", *args]) == 2
        assert "give the dataset folder, then the sources to forget" in capsys.readouterr().err
    assert main(["curate", "forget", str(data), anna, "--until", "align"]) == 2
    assert "--until does not apply to `curate forget`" in capsys.readouterr().err
    assert main(["curate", "forget", str(tmp_path / "none"), anna]) == 5
    assert _hashes(data) == before


def test_an_interrupted_forget_is_finished_by_the_same_command(curated: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The records went first: killed after them, the withdrawn speaker's files stayed with nothing naming them, and
    the same command said "nothing was removed" (exit 2). The files go first now."""
    data = _copy(curated, tmp_path)
    (anna,) = [rid for rid, path in _sources(data).items() if "/anna/" in path]
    files = [p for p in data.rglob("*") if p.is_file() and anna in str(p) and ".lipsyncctl" not in p.parts]
    real = Path.unlink

    def killed(self: Path, missing_ok: bool = False) -> None:  # (killed as the first file went)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        api.curate_forget(data, [anna])
    monkeypatch.setattr(Path, "unlink", real)
    assert anna in _sources(data)  # its records are still there: the rerun finds it
    assert [f["id"] for f in api.curate_forget(data, [anna]).forgotten] == [anna]
    assert anna not in _sources(data) and not any(p.exists() for p in files)


def test_forget_keeps_the_settings_the_views_were_written_with_and_files_other_sources_name(
        curated: dict[str, Path], tmp_path: Path) -> None:
    """Without --preset/--set it re-decided the dataset with the defaults (other thresholds, another split); a file
    another source's clip names too (a features file named by its sound: multicam angles) was removed with it."""
    import yaml

    data = _copy(curated, tmp_path)
    api.curate_report(data, cfg.resolve("tiny", ["curate.val_fraction=0.5", "curate.split_seed=7"]))
    before = yaml.safe_load((data / "curate.yaml").read_text())["curate"]
    (anna,) = [rid for rid, path in _sources(data).items() if "/anna/" in path]
    (ben,) = [rid for rid in _sources(data) if rid != anna]
    store = RecordStore.of(data)
    kept = data / "features" / "ab" / "ab12.safetensors"  # one sound, one features file: both clips name it
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"features")
    for source in (anna, ben):
        (clip_id,) = store.ids(f"clips/{source}")
        raw = store.load(f"clips/{source}", clip_id)
        raw["stages"]["features"] = {"key": "k", "data": {"features": str(kept)}, "error": None}
        store.save(f"clips/{source}", clip_id, raw)
    result = api.curate_forget(data, [anna])
    assert yaml.safe_load((data / "curate.yaml").read_text())["curate"] == before
    assert not any("settings" in w for w in result.warnings)
    assert kept.is_file() and anna not in _sources(data)
