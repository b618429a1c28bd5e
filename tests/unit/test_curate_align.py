"""`lipsyncctl curate`, clip stage ``align`` (faces + the official alignment) on a small corpus: one source
with a real face for 60 frames, then a hard cut to a faceless grey shot of 55 frames. The face span is
kept with an aligned clip of exactly its frames (256x256, 25 fps) and audio; the faceless span is rejected
(``no-face`` at frame 0) without a file; the official filters re-decide from the stored measurements; a
rerun computes nothing; a deleted output recomputes that clip; the lossless option holds the official
alignment bit for bit and the span's audio sample for sample."""

from __future__ import annotations

import dataclasses
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.curation import align
from lipsyncctl.curation.decide import ClipSpan
from lipsyncctl.curation.job import run_curation
from lipsyncctl.curation.records import Decision
from tests.curate_media import grey_frames, write_talking_clip
from tests.sync_media import sample_frames

FACE, GREY = 60, 55  # frames of the face shot and of the faceless shot after the cut


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("align") / "raw"
    folder.mkdir()
    faces = sample_frames(FACE, scale=0.75)  # a real face, about 80 px wide
    write_talking_clip(folder / "cut.mp4", faces + grey_frames(faces[0], GREY))
    return folder


@pytest.fixture(scope="module")
def first(raw: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data") / "data"
    result = run_curation([raw], data, cfg.resolve("tiny"), until="align")
    return {"data": data, "result": result, "spans": list(result.spans())}  # as it wrote them (later runs rewrite)


def _manifest(data: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


def _count_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap the registered align stage's ``run`` so a test sees every clip it computes."""
    from lipsyncctl.curation import clipstages, job

    calls: list[str] = []
    stage = clipstages.clip_stage("align")

    def counting(ctx):  # type: ignore[no-untyped-def]
        calls.append(ctx.clip_id)
        return stage.run(ctx)

    stages = tuple(dataclasses.replace(s, run=counting) if s.name == "align" else s for s in clipstages.CLIP_STAGES)
    monkeypatch.setattr(clipstages, "CLIP_STAGES", stages)
    monkeypatch.setattr(job, "CLIP_STAGES", stages)
    return calls


def test_the_face_span_is_aligned_with_its_audio_and_matrices(first) -> None:  # type: ignore[no-untyped-def]
    import av

    from lipsyncctl.curation.clipstages import CLIP_STAGES

    assert CLIP_STAGES[0].name == "align"
    spans = first["spans"]
    assert [(c.first, c.stop) for c in spans] == [(0, FACE), (FACE, FACE + GREY)]  # the cut is exact
    kept = spans[0]
    assert kept.decision.verdict == "kept"
    path = Path(kept.summary["aligned"])
    assert path.is_file() and path.suffix == ".mp4" and path.parent.parent.name == "aligned"
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.average_rate, v.width, v.height) == ("h264", 25, 256, 256)
        assert (a.codec_context.name, a.sample_rate, a.codec_context.channels) == ("aac", 16000, 1)
        assert a.duration * a.time_base * 16000 == FACE * 640  # the edit list cuts AAC's padding exactly
        pictures = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    assert len(pictures) == FACE and pictures[0].shape == (256, 256, 3)
    assert 60 < pictures[0].mean() < 200  # a face, not the grey fill
    matrices = np.load(kept.summary["matrices"])
    assert matrices.shape == (FACE, 2, 3) and matrices.dtype == np.float32 and np.isfinite(matrices).all()
    detector = kept.summary["detector"]
    assert kept.summary["detector_official"] == (detector == "insightface")
    assert kept.summary["max_faces"] == 1 and 60 < kept.summary["min_face_size"] < 256
    line = _manifest(first["data"])[0]
    assert line["aligned"] == str(path) and line["detector"] == detector
    assert (first["data"] / "train.txt").read_text().splitlines() + (first["data"] / "val.txt").read_text(
    ).splitlines() == [str(path)]


def test_a_moved_or_copied_dataset_lists_its_own_files(first, raw: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """DATA moved (or copied) and its views rebuilt: train.txt and the manifest named the files at the old place (its
    records hold the paths they were written at): gone after a move, the original's after a copy. A run over the
    moved DATA recomputed every stage of every source (its reuse checks looked at the old place: "its audio file is
    gone"), and a copy's run checked the original's files (a clip deleted in the copy was never made again)."""
    import shutil

    from lipsyncctl.curation.job import report_curation

    moved = tmp_path / "moved"
    shutil.copytree(first["data"], moved)
    report_curation(moved, cfg.resolve("tiny"))
    listed = (moved / "train.txt").read_text().splitlines() + (moved / "val.txt").read_text().splitlines()
    assert listed and all(line.startswith(f"{moved}{os.sep}") and Path(line).is_file() for line in listed)
    text = (moved / "manifest.jsonl").read_text()
    assert f'"{first["data"]}{os.sep}' not in text and f'"{moved}{os.sep}aligned{os.sep}' in text
    calls = _count_runs(monkeypatch)
    again = run_curation([raw], moved, cfg.resolve("tiny"), until="align")
    assert [s.computed for s in again.sources] == [[]] and calls == []  # nothing to do: its own files are there
    (clip,) = [Path(line) for line in listed]
    clip.unlink()  # gone from the copy (the original still has it): made again, in the copy
    run_curation([raw], moved, cfg.resolve("tiny"), until="align")
    assert len(calls) == 1 and clip.is_file()


def test_the_faceless_shot_is_rejected_at_its_first_frame_without_a_file(first) -> None:  # type: ignore[no-untyped-def]
    spans = first["spans"]
    faceless = spans[1]
    d = faceless.decision
    assert (d.verdict, d.stage, d.reason, d.value) == ("rejected", "align", "no-face", 0)
    assert faceless.summary["aligned"] is None and faceless.summary["no_face_frame"] == 0
    assert _manifest(first["data"])[1]["decision"] == {"verdict": "rejected", "stage": "align",
                                                       "reason": "no-face", "value": 0}
    folder = Path(spans[0].summary["aligned"]).parent
    assert sorted(p.name for p in folder.iterdir()) == [f"{spans[0].id}.mp4", f"{spans[0].id}.npy"]
    report = json.loads((first["data"] / "report.json").read_text())
    assert report["counts"]["rejected"] == {"align/no-face": 1}
    assert [*first["result"].sources][0].computed == ["probe", "normalize", "shots", "segments", f"align:0-{FACE}",
                                       f"align:{FACE}-{FACE + GREY}"]


def test_the_official_filters_re_decide_without_running(raw: Path, first, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls = _count_runs(monkeypatch)
    data = first["data"]
    plain = run_curation([raw], data, cfg.resolve("tiny"), until="align")
    assert calls == [] and [*plain.sources][0].computed == []  # a rerun computes nothing
    size = list(plain.spans())[0].summary["min_face_size"]
    small = run_curation([raw], data, cfg.resolve("tiny", ["curate.min_face_size=true"]), until="align")
    d = list(small.spans())[0].decision
    assert (d.verdict, d.stage, d.reason, d.value) == ("rejected", "align", "small-face", size)  # ~80 px < 256
    single = run_curation([raw], data, cfg.resolve("tiny", ["curate.single_face=true"]), until="align")
    assert list(single.spans())[0].decision.verdict == "kept"  # one face in every frame
    assert calls == []
    # the switches on stored measurements of a two-face clip
    options = cfg.resolve("tiny", ["curate.single_face=true"]).curate
    two = {"no_face_frame": None, "max_faces": 2, "min_face_size": 300.0}
    assert align.decide(two, options) == Decision.rejected("align", "multiple-faces", 2)
    assert align.decide(two, cfg.resolve("tiny").curate) is None
    # a two-shot whose second face a frame misses is a two-shot, where single_face is asked
    assert align.decide({**two, "no_face_frame": 7}, options) == Decision.rejected("align", "multiple-faces", 2)
    one = {**two, "max_faces": 1, "no_face_frame": 7}
    assert align.decide(one, options) == Decision.rejected("align", "no-face", 7)
    assert align.decide({**two, "no_face_frame": 7}, cfg.resolve("tiny").curate) == Decision.rejected("align",
                                                                                                     "no-face", 7)
    run_curation([raw], data, cfg.resolve("tiny"), until="align")  # back to the defaults for the next tests


def test_a_deleted_output_recomputes_that_clip_only(raw: Path, first, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls = _count_runs(monkeypatch)
    kept = first["spans"][0]
    Path(kept.summary["aligned"]).unlink()
    again = run_curation([raw], first["data"], cfg.resolve("tiny"), until="align")
    assert calls == [kept.id] and [*again.sources][0].computed == [f"align:0-{FACE}"]
    assert Path(kept.summary["aligned"]).is_file() and list(again.spans())[0].decision.verdict == "kept"
    assert not list(first["data"].rglob(".*.part*"))  # nothing half-written left


def test_lossless_clip_holds_the_official_alignment_bit_exactly(raw: Path, tmp_path: Path) -> None:
    import av

    from lipsyncctl.faces.align import FaceAligner
    from lipsyncctl.faces.detect import create_detector
    from lipsyncctl.media.audio import read_audio
    from lipsyncctl.media.reader import IndexedReader

    res = run_curation([raw / "cut.mp4"], tmp_path / "d", cfg.resolve("tiny", ["curate.lossless=true"]),
                       until="align")
    kept = list(res.spans())[0]
    path = Path(kept.summary["aligned"])
    assert kept.decision.verdict == "kept" and path.suffix == ".mkv"
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "ffv1"
        pictures = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    samples = read_audio(path, rate=None, channels=None)
    assert len(pictures) == FACE and len(samples) == FACE * 640  # PCM: exact samples
    wav = next((tmp_path / "d" / "audio").glob("*.wav"))
    assert np.abs(samples - align.span_audio(wav, 0, FACE)).max() < 1e-4
    # every frame by hand, one after the other (the stage runs its steps concurrently): the largest face of
    # every frame's detection, one aligner carrying its smoothing from frame to frame
    detector = create_detector(cfg.resolve("tiny").curate.detector)
    aligner = FaceAligner(resolution=256)
    stored = np.load(kept.summary["matrices"])
    assert stored.shape == (FACE, 2, 3)
    with IndexedReader(raw / "cut.mp4", Fraction(25)) as reader:
        for i, frame in reader.range(0, FACE):
            face = max(detector.detect(frame), key=lambda f: f.area)
            expected, matrix = aligner.align(frame, face.points3)
            assert np.array_equal(pictures[i], expected), i
            assert np.array_equal(stored[i], matrix), i


def test_a_real_two_face_clip_is_rejected_by_the_single_face_filter(tmp_path: Path) -> None:
    """Two real faces in every frame (tests/sync_media.two_face_frames): kept by default (the largest face
    is aligned, as official), rejected ``multiple-faces`` with ``curate.single_face`` from the stored count."""
    from tests.sync_media import two_face_frames

    source = write_talking_clip(tmp_path / "two faces.mp4", two_face_frames(60))
    data = tmp_path / "data"
    res = run_curation([source], data, cfg.resolve("tiny", ["curate.min_sync_frames=50"]), until="align")
    assert [(c.frames, c.decision.verdict) for c in res.spans()] == [(60, "kept")]
    line = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])
    assert line["max_faces"] == 2
    strict = run_curation([source], data, cfg.resolve("tiny", ["curate.single_face=true"]), until="align")
    assert all(s.computed == [] for s in strict.sources)
    assert [(c.decision.reason, c.decision.value) for c in strict.spans()] == [("multiple-faces", 2)]


def test_the_clips_of_a_source_share_one_decode(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two passes (``curate.one_pass`` off, or ``detect_every`` > 1): the face span and the grey span after it:
    both clips read one reader of the source, started once (the second clip continues its decode instead of
    seeking back to the key frame before frame 60); the decisions are those of a reader per clip (the grey
    span's no-face at its own frame 0)."""
    from lipsyncctl.curation.clipstages import SourceFrames
    from lipsyncctl.media.reader import IndexedReader

    # the readers themselves, not their id()s: the report's thumbnail reader (it reads the rejected span's frame 60)
    # opens after the shared one is freed and could be given its address
    restarts: list[tuple[object, int]] = []
    readers: list[object] = []
    real_restart, real_range = IndexedReader._restart, SourceFrames.range

    def restart(self, index: int) -> None:  # type: ignore[no-untyped-def]
        restarts.append((self, index))
        real_restart(self, index)

    def shared_range(self, first: int, stop: int):  # type: ignore[no-untyped-def]
        frames = real_range(self, first, stop)
        readers.append(self._reader)
        return frames

    monkeypatch.setattr(IndexedReader, "_restart", restart)
    monkeypatch.setattr(SourceFrames, "range", shared_range)
    res = run_curation([raw / "cut.mp4"], tmp_path / "d", cfg.resolve("tiny", ["curate.one_pass=false"]),
                       until="align")
    spans = [(c.first, c.stop, c.decision.verdict, c.decision.reason, c.decision.value) for c in res.spans()]
    assert spans == [(0, FACE, "kept", None, None), (FACE, FACE + GREY, "rejected", "no-face", 0)]
    assert len(readers) == 2 and readers[0] is readers[1]  # both clips through one reader
    assert [index for reader, index in restarts if reader is readers[0]] == [0]  # started once, never seeked


def test_an_anamorphic_source_is_aligned_as_shown(tmp_path: Path) -> None:
    """The face frames stored squeezed to 3/4 of their width with a 4:3 pixel aspect (DV/HDV-style; 25 fps, so
    normalize keeps the file as it is): the aligned clip holds the face as shown, as sync aligns it (it came out
    stretched), in both the one-pass and the two-pass align; the face size filter measures it as shown."""
    import av
    import cv2

    from lipsyncctl.faces.align import FaceAligner
    from lipsyncctl.faces.detect import create_detector, shown
    from lipsyncctl.media.reader import IndexedReader

    faces = sample_frames(FACE, scale=0.75)  # a face about 80 px wide (squeezed to 60: HOG misses it)
    h, w = faces[0].shape[:2]
    squeezed = [cv2.resize(f, (w * 3 // 4 // 2 * 2, h), interpolation=cv2.INTER_AREA) for f in faces]
    source = write_talking_clip(tmp_path / "raw" / "hdv.mp4", squeezed, sample_aspect=Fraction(4, 3))
    sets = ["curate.lossless=true", "curate.min_sync_frames=50"]

    def aligned(clip: ClipSpan) -> list[np.ndarray]:
        assert clip.decision.verdict == "kept" and clip.frames == FACE, clip.decision
        with av.open(clip.summary["aligned"]) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    # the stage's result: faces found on each frame as shown, then the official affine as shown, frame by frame
    detector = shown(create_detector(cfg.resolve("tiny").curate.detector), 4 / 3)
    aligner, plain = FaceAligner(resolution=256, pixel_aspect=4 / 3), FaceAligner(resolution=256)
    expected, stretched = [], []
    with IndexedReader(source, Fraction(25)) as reader:
        for _i, frame in reader.range(0, FACE):
            face = max(detector.detect(frame), key=lambda f: f.area)
            expected.append(aligner.align(frame, face.points3)[0])
            stretched.append(plain.align(frame, face.points3)[0])
    # it looks like the square-pixel source's aligned face, much more than the old (square-pixel) reading
    plain_source = write_talking_clip(tmp_path / "raw" / "square.mp4", faces)
    sq = tmp_path / "sq"
    reference = aligned(list(run_curation([plain_source], sq, cfg.resolve("tiny", sets), until="align").spans())[0])
    sq_size = json.loads((sq / "manifest.jsonl").read_text().splitlines()[0])["min_face_size"]
    old = np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(stretched, reference, strict=True)])
    for one_pass in ("true", "false"):
        data = tmp_path / f"d-{one_pass}"
        (kept,) = run_curation([source], data, cfg.resolve("tiny", [*sets, f"curate.one_pass={one_pass}"]),
                               until="align").spans()
        pictures = aligned(kept)
        for i, (got, want) in enumerate(zip(pictures, expected, strict=True)):
            assert np.array_equal(got, want), (one_pass, i)  # as shown, frame by frame
        err = np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(pictures, reference, strict=True)])
        assert err < 0.5 * old, (one_pass, err, old)
        size = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])["min_face_size"]
        assert abs(size - sq_size) < 0.1 * sq_size, one_pass


def test_a_failed_mux_leaves_no_matrices_without_their_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at the aligned clip's mux left its matrices (.npy) alone in DATA/aligned: removed with it."""
    import errno

    def full(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lipsyncctl.media.mux.mux_audio", full)
    import wave

    wav = tmp_path / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    matrices = tmp_path / "clip.npy"
    with pytest.raises(OSError):
        align.finish_clip(tmp_path / "v.mkv", tmp_path / "clip.mkv", matrices, [np.eye(2, 3, dtype=np.float32)] * 4,
                          wav, 0, 4, cfg.CurateOptions(), tmp_path / "src.mp4")
    assert not matrices.exists() and not (tmp_path / "clip.mkv").exists()


def test_a_source_without_an_aligned_clip_leaves_no_folder(raw: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Every span of a faceless source is rejected at align: its DATA/aligned/<source>/ folder is not left behind
    empty (a folder per rejected source in a tree of thousands); a source with a clip keeps its folder."""
    src = tmp_path / "raw"
    src.mkdir()
    faces = sample_frames(8, scale=0.75)
    write_talking_clip(src / "grey.mp4", grey_frames(faces[0], GREY + 20))
    data = tmp_path / "data"
    result = run_curation([src, raw / "cut.mp4"], data, cfg.resolve("tiny"), until="align")
    grey = next(s for s in result.sources if Path(s.path).name == "grey.mp4")
    assert grey.clips >= 1 and grey.kept == 0
    assert {c.decision.reason for c in result.spans() if c.source == grey.id} == {"no-face"}
    kept = [s.id for s in result.sources if s.id != grey.id]
    assert sorted(p.name for p in (data / "aligned").iterdir()) == kept
    # an align that opened the clip's writer before its span was rejected (a face lost at frame k, several faces)
    # left the folder behind empty; a rerun, which computes nothing, removes such a folder too
    (data / "aligned" / grey.id).mkdir()
    again = run_curation([src, raw / "cut.mp4"], data, cfg.resolve("tiny"), until="align")
    assert all(s.computed == [] for s in again.sources)
    assert sorted(p.name for p in (data / "aligned").iterdir()) == kept
    # the table says a source kept none of whose spans is kept as such (it said "kept" beside "0/1")
    from lipsyncctl.cli.main import main

    assert main(["curate", str(src), str(raw / "cut.mp4"), "-o", str(data), "--until", "align", "--preset", "tiny"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "grey.mp4 │ no span kept │ 0/" in out
    # it gives the dataset nothing: counted apart from the kept sources (report.json, --json, the page's table, which
    # lists it among the sources not kept), not as kept
    sources = again.counts()["sources"]
    assert sources["no span kept"] == 1 and sources["kept"] == len(kept)
    report = json.loads((data / "report.json").read_text())
    assert report["counts"]["sources"] == sources
    page = (data / "report.html").read_text()
    not_kept = page[page.index("Sources not kept"):]
    assert "grey.mp4</td><td>no span kept" in not_kept and "cut.mp4" not in not_kept


def test_a_records_data_paths_are_read_as_the_folders_it_is_in() -> None:
    """Every folder curate writes in DATA (DATA_LAYOUT) is rebased; a path of anything else is left as it is."""
    from lipsyncctl.curation.records import DATA_LAYOUT, in_data

    written = {"audio": "/old/d/audio/s.wav", "aligned": "/old/d/aligned/s/c.mp4", "synced": "/old/d/synced/s/c.mp4",
               "features": "/old/d/features/ab/abcd.safetensors"}
    assert set(written) == set(DATA_LAYOUT)
    for path in written.values():
        assert in_data(path, "/new/e") == "/new/e" + path.removeprefix("/old/d")
    for other in ("/footage/take.wav", "/new/e/audio/s.wav", "relative/audio/s.wav"):  # (stage values only: a
        assert in_data(other, "/new/e") == other                                        # source's path is no one)
