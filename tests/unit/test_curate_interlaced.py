"""curate of an interlaced source (1080i/SD archive footage): shots are found and faces aligned on progressive
pictures (``curate.deinterlace`` auto, FFmpeg's bwdif through the reader, the same picture whichever way a frame is
reached), so no combed face reaches the training set; ``off`` reads the frames with both fields. The setting is
part of the keys of an interlaced source's stages only: changing it recomputes those, never a progressive one's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.curation.job import run_curation
from lipsyncctl.media.probe import probe
from lipsyncctl.media.reader import VideoReader
from tests.curate_media import write_talking_clip
from tests.sync_media import sample_frames

SETS = ["curate.segment_seconds=1", "curate.min_sync_frames=10", "curate.min_seconds=0.5"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("interlaced") / "raw"
    faces = sample_frames(30, scale=0.75)
    combed = []
    for rgb in faces:  # the bottom field 4 px right of the top: a face in motion between the two fields
        woven = rgb.copy()
        woven[1::2] = np.roll(rgb[1::2], 4, axis=1)
        combed.append(woven)
    write_talking_clip(folder / "i.mp4", combed, x264_params="tff=1")
    write_talking_clip(folder / "p.mp4", faces)
    assert probe(folder / "i.mp4").video.field_order == "tt"  # type: ignore[union-attr]
    return folder


def _comb(image: np.ndarray) -> float:
    """Mean difference between neighbouring rows: large where the two fields of a frame disagree."""
    return float(np.abs(np.diff(image.astype(np.int16), axis=0)).mean())


def _aligned(data: Path) -> list[np.ndarray]:
    """The frames of the interlaced source's aligned clip."""
    (line,) = [line for line in _manifest(data) if line["source"].startswith("i")]
    with VideoReader(line["aligned"]) as reader:
        return [f.image for f in reader]


def _manifest(data: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


def _decisions(data: Path) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    for line in _manifest(data):
        out.setdefault(line["source"].split("-")[0], []).append(
            (line["decision"]["verdict"], line["decision"].get("reason")))
    return out


def test_an_interlaced_source_is_aligned_from_deinterlaced_pictures(raw: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_curation([raw], data, cfg.resolve("tiny", SETS), until="align")
    assert {k: {v for v, _ in d} for k, d in _decisions(data).items()} == {"i": {"kept"}, "p": {"kept"}}
    auto = _aligned(data)
    (record,) = (data / ".lipsyncctl" / "records" / "sources").glob("i-*.json")
    assert json.loads(record.read_text())["stages"]["probe"]["data"]["field_order"] == "tt"
    # a rerun computes nothing; off recomputes the interlaced source from its shots on, the progressive one not
    again = run_curation([raw], data, cfg.resolve("tiny", SETS), until="align")
    assert all(s.computed == [] for s in again.sources)
    off = run_curation([raw], data, cfg.resolve("tiny", [*SETS, "curate.deinterlace=off"]), until="align")
    computed = {Path(s.path).name: s.computed for s in off.sources}
    assert computed["p.mp4"] == [] and computed["i.mp4"][0] == "shots"
    # the same crops, made of frames with both fields: combed where the deinterlaced pictures are not
    off_frames = _aligned(data)
    assert len(off_frames) == len(auto) == 30
    assert np.mean([_comb(f) for f in off_frames]) > 1.5 * np.mean([_comb(f) for f in auto])
    # records of a version whose probes did not record the field order (it read both fields, as off does): the
    # sources are probed again for it, and nothing else is computed (no dataset is decoded again on an upgrade)
    records = list((data / ".lipsyncctl" / "records" / "sources").glob("*.json"))
    for record in records:
        raw_record = json.loads(record.read_text())
        del raw_record["stages"]["probe"]["data"]["field_order"]
        record.write_text(json.dumps(raw_record))
    older = run_curation([raw], data, cfg.resolve("tiny", [*SETS, "curate.deinterlace=off"]), until="align")
    assert {Path(s.path).name: s.computed for s in older.sources} == {"i.mp4": ["probe"], "p.mp4": ["probe"]}
    assert all("field_order" in json.loads(r.read_text())["stages"]["probe"]["data"] for r in records)
    assert all(np.array_equal(a, b) for a, b in zip(_aligned(data), off_frames, strict=True))
