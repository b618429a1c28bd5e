"""Curate clip stage ``features``: whisper features and the Wav2Lip mel of every kept span, cached by audio
content (not by basename: the corpus repeats ``00001.mp4`` in three speaker folders, as VoxCeleb2 does).

The corpus: ``x/00001.mp4`` and ``y/00001.mp4`` are the same file (one 150-frame span each: the same audio,
so one cache file); ``z/00001.mp4`` has other audio and 250 frames (two 125-frame spans, two files)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation.job import run_curation
from tests.curate_media import flat_frames, write_talking_clip


def _clip(path: Path, frames: int, seed: int) -> Path:
    """A 64x64 25 fps clip with ``frames`` frames and seeded noisy 'speech' (bursts of noise) as AAC 16 kHz."""
    rng = np.random.default_rng(seed)
    n = frames * 640
    envelope = np.repeat(rng.uniform(0.0, 1.0, n // 1600 + 1), 1600)[:n]
    audio = (0.3 * envelope * rng.standard_normal(n)).astype(np.float32)
    return write_talking_clip(path, flat_frames(frames), audio=audio)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[type-arg]
    """The corpus, an isolated models dir (the tiny whisper is generated there) and the features stage alone."""
    from lipsyncctl.curation import clipstages, features, job

    root = tmp_path_factory.mktemp("features")
    raw = root / "raw"
    _clip(raw / "x" / "00001.mp4", 150, seed=0)
    (raw / "y").mkdir()
    shutil.copy(raw / "x" / "00001.mp4", raw / "y" / "00001.mp4")
    _clip(raw / "z" / "00001.mp4", 250, seed=1)
    stage = clipstages.clip_stage("features")
    calls: list[str] = []
    compute = features._compute

    def counted(ctx, *args):  # type: ignore[no-untyped-def]
        calls.append(ctx.clip_id)
        return compute(ctx, *args)

    with pytest.MonkeyPatch.context() as mp:
        (root / "models").mkdir()
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        mp.setattr(clipstages, "CLIP_STAGES", (stage,))  # the clip stages before it are tested on their own
        mp.setattr(job, "CLIP_STAGES", (stage,))
        mp.setattr(features, "_compute", counted)
        yield {"raw": raw, "data": root / "data", "calls": calls}


@pytest.fixture(scope="module")
def first(env):  # type: ignore[no-untyped-def]
    result = run_curation([env["raw"]], env["data"], cfg.resolve("tiny"))
    return {"result": result, "spans": list(result.spans()), "calls": list(env["calls"])}  # as it wrote them


def _records(data: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    import json

    return {p.stem: json.loads(p.read_text())["stages"]["features"]["data"]
            for p in (data / ".lipsyncctl" / "records" / "clips").rglob("*.json")}


def test_the_cache_is_keyed_by_audio_content(env, first) -> None:  # type: ignore[no-untyped-def]
    result, spans = first["result"], first["spans"]
    assert result.ok and len(spans) == 4 and all(c.decision.verdict == "kept" for c in spans)
    recs = _records(env["data"])
    folder = {s.id: Path(s.path).parent.name for s in result.sources}
    by_source: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for clip in sorted(spans, key=lambda c: c.first):
        by_source.setdefault(folder[clip.source], []).append(recs[clip.id])
    x, y, z = by_source["x"], by_source["y"], by_source["z"]
    assert len(x) == len(y) == 1 and len(z) == 2
    assert x[0]["features"] == y[0]["features"]                     # same audio, same file
    assert len({z[0]["features"], z[1]["features"], x[0]["features"]}) == 3  # other audio, other files
    files = sorted((env["data"] / "features").rglob("*.safetensors"))
    assert len(files) == 3 and len(first["calls"]) == 3            # 4 clips, 3 sounds: computed 3 times
    for f in files:
        assert f.parent.name == f.stem[:2] and f.parent.parent == env["data"] / "features"
    assert not list((env["data"] / "features").rglob("*.part"))     # atomic writes leave nothing behind


def test_shapes_alignment_and_values(env, first) -> None:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import load_file

    from lipsyncctl.audio.features import audio_features
    from lipsyncctl.audio.wav2lip_mel import wav2lip_mel
    from lipsyncctl.checkpoints.loaders import load_whisper_encoder
    from lipsyncctl.checkpoints.tiny import ensure_tiny_models
    from lipsyncctl.curation.features import span_pcm

    recs = _records(env["data"])
    lines = {line["id"]: line for line in _manifest(env["data"])}
    for clip in first["spans"]:
        n = clip.frames
        data = recs[clip.id]
        assert data["whisper_shape"] == [2 * n, 5, 384]              # feature 2 f = frame f of the span
        assert data["mel_shape"] == [80, 1 + 640 * n // 200]         # 3.2 columns per frame, + 1 (centred)
        assert lines[clip.id]["features"] == data["features"]
        assert lines[clip.id]["whisper_shape"] == data["whisper_shape"]
        assert lines[clip.id]["mel_shape"] == data["mel_shape"]
    # the stored tensors are the functions of the span's samples (z's second span: frames 125..250)
    clip = max(first["spans"], key=lambda c: c.first)
    assert (clip.first, clip.stop) == (125, 250)
    audio = env["data"] / "audio" / f"{clip.source}.wav"
    pcm = span_pcm(audio, clip.first, clip.stop)
    assert pcm.dtype == np.int16 and pcm.size == 125 * 640 and np.abs(pcm).max() > 1000
    stored = load_file(recs[clip.id]["features"])
    assert stored["whisper"].dtype == torch.float32 and stored["mel"].dtype == torch.float64
    np.testing.assert_array_equal(stored["mel"].numpy(), wav2lip_mel(pcm))
    encoder = load_whisper_encoder(ensure_tiny_models().whisper, dtype=torch.float32)
    torch.testing.assert_close(stored["whisper"], audio_features(encoder, pcm), atol=1e-5, rtol=1e-5)


def test_a_rerun_computes_nothing_and_a_deleted_file_is_recomputed(env, first) -> None:  # type: ignore[no-untyped-def]
    env["calls"].clear()
    again = run_curation([env["raw"]], env["data"], cfg.resolve("tiny"))
    assert all(s.computed == [] for s in again.sources) and env["calls"] == []
    shared = _records(env["data"])[next(c.id for c in first["spans"] if c.frames == 150)]["features"]
    Path(shared).unlink()
    again = run_curation([env["raw"]], env["data"], cfg.resolve("tiny"))
    redone = sorted(s.computed for s in again.sources)
    # the first clip that used it ran again and wrote it back; the other one finds it there
    assert redone == [[], [], ["features:0-150"]] and len(env["calls"]) == 1 and Path(shared).is_file()


def test_a_missing_official_whisper_stops_the_run_with_exit_4(env, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    code = main(["curate", str(env["raw"]), "-o", str(data), "--preset", "tiny",
                 "--set", "model.whisper=whisper-tiny"])
    assert code == 4
    assert "lipsyncctl models fetch whisper-tiny" in capsys.readouterr().err
    assert not (data / ".lipsyncctl").exists()  # failed fast: no source was touched


def _manifest(data: Path) -> list[dict]:  # type: ignore[type-arg]
    import json

    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
