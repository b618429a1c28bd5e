"""The face-track cache (issue 13.9): a shot's faces are tracked once and reused by its other languages and by
reruns. The FacePlan round-trips exactly through its .npz (no pickle), a corrupt or stale file is tracked
again, the render is the same bytes with and without the cache, and ``faces.select: speaker`` (which listens
to the dub) keeps one tracking per language."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.pipeline import faces as face_pass
from lipsyncctl.pipeline.clip import sync_clip
from lipsyncctl.pipeline.faces import FacePlan, load_face_plan, save_face_plan
from tests.sync_media import sample_frames, tiny_models, with_sets, write_clip, write_wav

KEY = {"v": 1, "media": "abc", "first": 3, "frames": 4, "fps": "25/1", "faces": {"select": "largest"},
       "resolution": 256, "audio": None}


def _plan() -> FacePlan:
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(2, 3)).astype(np.float32), None, rng.normal(size=(2, 3)).astype(np.float32), None]
    return FacePlan(mats, np.array([1.0, 0.0, 0.5, 0.0], np.float32), "dlib", selection="point", track_id=2,
                    warnings=["a warning"])


def _same(a: FacePlan, b: FacePlan) -> bool:
    mats = all((x is None and y is None) or (x is not None and y is not None and x.dtype == y.dtype
                                             and x.shape == y.shape and np.array_equal(x, y))
               for x, y in zip(a.matrices, b.matrices, strict=True))
    return (mats and len(a.matrices) == len(b.matrices) and a.weights.dtype == b.weights.dtype
            and np.array_equal(a.weights, b.weights) and (a.detector, a.selection, a.track_id, a.warnings)
            == (b.detector, b.selection, b.track_id, b.warnings))


def test_face_plan_round_trips_exactly_and_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "faces" / "k.npz"
    plan = _plan()
    assert save_face_plan(path, plan, KEY) and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["k.npz"]  # no temporary left
    back = load_face_plan(path, dict(KEY))
    assert back is not None and _same(plan, back)
    with np.load(path, allow_pickle=False) as data:  # plain arrays: readable without pickle
        assert set(data.files) == {"meta", "present", "matrices", "weights"}
    # another key (the source changed, other frames...) is not this file's
    assert load_face_plan(path, {**KEY, "media": "def"}) is None
    assert load_face_plan(path, {**KEY, "frames": 5}) is None
    assert load_face_plan(tmp_path / "none.npz", KEY) is None
    # corrupt: truncated, garbage, arrays that do not fit the key
    good = path.read_bytes()
    for bad in (good[: len(good) // 2], b"not a zip", b""):
        path.write_bytes(bad)
        assert load_face_plan(path, KEY) is None
    with open(path, "wb") as f:
        np.savez(f, meta=np.array('{"key": 1}'), present=np.zeros(4, bool), matrices=np.zeros((4, 2, 3)),
                 weights=np.zeros(4, np.float32))
    assert load_face_plan(path, KEY) is None
    assert save_face_plan(path, plan, KEY) and _same(plan, load_face_plan(path, KEY))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with tiny_models(tmp_path_factory.mktemp("models"), "inference.steps=1", "faces.detect_every=3", "output.codec=ffv1") as env:
        yield env


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count_tracking(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first frame of every face pass that runs (before the render, or beside it as a FaceStream: both
    track through ``_tracked``)."""
    calls: list[int] = []
    real = face_pass._tracked

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(face_pass, "_tracked", counting)
    return calls


def test_sync_clip_with_the_cache_is_the_same_bytes(tiny_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", sample_frames(4, scale=0.75), Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.16)
    calls = _count_tracking(monkeypatch)
    cache = tmp_path / "cache" / "faces.npz"
    miss = sync_clip(video, audio, tmp_path / "miss.mkv", config, networks=models, face_cache=cache)
    hit = sync_clip(video, audio, tmp_path / "hit.mkv", config, networks=models, face_cache=cache)
    assert len(calls) == 1 and cache.is_file()  # the miss tracks (and writes the file), the hit reads it
    assert (miss.faces_reused, hit.faces_reused) == (False, True) and hit.to_dict()["faces_reused"] is True
    assert hit.faces_found == miss.faces_found == 4 and hit.warnings == miss.warnings
    assert _digest(tmp_path / "miss.mkv") == _digest(tmp_path / "hit.mkv")
    # the file is these frames' only; a corrupt one is tracked again (and replaced), never trusted
    key = face_pass.face_cache_key(video, 0, 4, Fraction(25), config.faces, 256)
    assert load_face_plan(cache, key) is not None and load_face_plan(cache, {**key, "first": 1}) is None
    cache.write_bytes(cache.read_bytes()[:100])
    again = sync_clip(video, audio, tmp_path / "again.mkv", config, networks=models, face_cache=cache)
    assert not again.faces_reused and len(calls) == 2 and load_face_plan(cache, key) is not None
    assert _digest(tmp_path / "again.mkv") == _digest(tmp_path / "hit.mkv")
    # the dub is not part of the key, except for faces.select speaker (it listens to it)
    noise = np.random.default_rng(0).normal(size=800).astype(np.float32)
    assert face_pass.face_cache_key(video, 0, 4, Fraction(25), config.faces, 256, noise) == key
    speaker = with_sets(config, "faces.select=speaker").faces
    keys = [face_pass.face_cache_key(video, 0, 4, Fraction(25), speaker, 256, a) for a in (noise, noise * 0.5)]
    assert keys[0] != keys[1] and keys[0]["audio"] is not None
    # the faces of deinterlaced pictures (an interlaced source, sync.deinterlace auto) are others; a progressive
    # source's key (and an interlaced one's with deinterlace off) is the key of before
    deinterlaced = face_pass.face_cache_key(video, 0, 4, Fraction(25), config.faces, 256, None, True)
    assert deinterlaced != key and deinterlaced == {**key, "deinterlaced": True}
    # the tracker's version where it changes the faces (between key frames), not for detection on every frame
    every = {d: face_pass.face_cache_key(video, 0, 4, Fraction(25), with_sets(config, f"faces.detect_every={d}").faces,
                                         256) for d in (1, 5)}
    assert "tracker" not in every[1] and every[5]["tracker"] >= 2


def test_a_render_that_fails_after_the_face_pass_keeps_its_faces(tiny_env, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The face pass runs beside the render: when the render fails at its last frame (disk full, a bug), the
    finished pass is still written to the cache, and the rerun reuses it."""
    from lipsyncctl.media.writer import VideoWriter

    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", sample_frames(4, scale=0.75), Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.16)
    calls = _count_tracking(monkeypatch)
    cache = tmp_path / "cache" / "faces.npz"
    real_write, written = VideoWriter.write, []

    def fail_on_last(self, frame):  # type: ignore[no-untyped-def]
        written.append(1)
        if len(written) == 4:
            raise OSError("disk full")
        return real_write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", fail_on_last)
    with pytest.raises(Exception, match="disk full"):
        sync_clip(video, audio, tmp_path / "o.mkv", config, networks=models, face_cache=cache)
    assert not (tmp_path / "o.mkv").exists() and len(calls) == 1
    key = face_pass.face_cache_key(video, 0, 4, Fraction(25), config.faces, 256)
    assert load_face_plan(cache, key) is not None  # kept although the render failed
    monkeypatch.setattr(VideoWriter, "write", real_write)
    again = sync_clip(video, audio, tmp_path / "o.mkv", config, networks=models, face_cache=cache)
    assert again.faces_reused and len(calls) == 1 and again.faces_found == 4


def _edit(folder: Path, shots: int) -> Path:

    from tests.conftest import shared_path
    from tests.timeline_media import clip, write_edit, write_sources

    write_sources(folder, shared_path("fixtures", "demo1_video.mp4"))
    return write_edit(folder / "edit.otio", [clip("A1", "cam_a.mkv", 4, 4, available=(0, 40)),
                                             clip("B1", "cam_b.mkv", 86408, 4, available=(86400, 30))][:shots])


def _timeline(tiny_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shots: int):  # type: ignore[no-untyped-def]
    """``run(out, *sets) -> {(lang, shot): render}``: the edit in two languages, and the list of tracked calls."""
    from lipsyncctl.media.audio import write_wav as write_samples
    from lipsyncctl.timeline.job import run_timeline
    from lipsyncctl.timeline.mediaio import read_audio
    from lipsyncctl.timeline.types import TimelineJob
    from tests.conftest import shared_path

    config, _ = tiny_env
    edit = _edit(tmp_path, shots)
    de = shared_path("fixtures", "demo1_audio.wav")
    samples, rate = read_audio(de, rate=48000, channels=2)
    fr = write_samples(tmp_path / "fr.wav", samples[:, rate:].T, rate)
    sets = ["inference.steps=1", "timeline.handles=0", "faces.detect_every=3"]

    def run(out: str, *more: str, dry_run: bool = False) -> dict[tuple[str, str], Path]:
        job = TimelineJob(timeline=edit, output=tmp_path / out, audio=[("de", de), ("fr", fr)], dry_run=dry_run)
        res = run_timeline(job, with_sets(config, *sets, *more))
        assert not res.failed
        if not dry_run:
            assert res.counts()["rendered"] + res.counts()["reused"] == 2 * shots
        return {(lang, s.name): Path(s.output) for lang, r in res.languages.items() for s in r.shots if s.output}

    return run, _count_tracking(monkeypatch)


def test_two_languages_track_each_shot_once(tiny_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl.timeline import job as job_module

    run, calls = _timeline(tiny_env, tmp_path, monkeypatch, shots=1)
    faces = tmp_path / "out" / ".lipsyncctl" / "faces"
    assert len(run("out")) == 2
    assert len(calls) == 1 and len(list(faces.glob("*.npz"))) == 1  # once per shot, not per language
    # the face-cache file each language's task is given (dry runs: planned, not rendered)
    planned: list[tuple[str, str | None]] = []
    real_shot = job_module._shot

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        shot = real_shot(*args, **kwargs)
        planned.append((shot.language, shot.task.face_cache if shot.task else None))
        return shot

    monkeypatch.setattr(job_module, "_shot", spy)
    run("out", "inference.steps=2", dry_run=True)  # a new render, the same faces
    assert [lang for lang, _ in planned] == ["de", "fr"] and {f for _, f in planned} == {str(p) for p in faces.glob("*")}
    planned.clear()
    run("out", "faces.select=speaker", dry_run=True)  # listens to the dub: one tracking per language
    assert len({f for _, f in planned}) == 2 and not {f for _, f in planned} & {str(p) for p in faces.glob("*")}


@pytest.mark.slow  # opt-in (-m slow): 12 renders
def test_timeline_renders_are_the_same_with_and_without_the_cache(tiny_env, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run, calls = _timeline(tiny_env, tmp_path, monkeypatch, shots=2)
    cached = run("out")
    faces = sorted((tmp_path / "out" / ".lipsyncctl" / "faces").glob("*.npz"))
    assert len(calls) == 2 and len(faces) == 2 and len(cached) == 4
    monkeypatch.setattr(face_pass, "load_face_plan", lambda path, key: None)  # every language tracks
    plain = run("plain")
    assert len(calls) == 2 + 4
    assert {k: _digest(p) for k, p in cached.items()} == {k: _digest(p) for k, p in plain.items()}
    monkeypatch.setattr(face_pass, "load_face_plan", load_face_plan)
    # a rerun that renders again (another step count) reuses the faces; a corrupt file is tracked again
    faces[0].write_bytes(b"garbage")
    run("out", "inference.steps=2")
    assert len(calls) == 6 + 1
    assert sorted((tmp_path / "out" / ".lipsyncctl" / "faces").glob("*.npz")) == faces  # rewritten in place
