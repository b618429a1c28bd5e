"""Curate clip stage ``quality``: hyperIQA on frames 0, n//2, n-1 of the aligned clip (the official filter).

The preprocessing is checked against a hand computation on lossless clips; the threshold with a patched
network; the refusal (exit 4), ``skip_quality`` and the tiny weights through the CLI, with a stand-in
``align`` stage that writes a lossless aligned clip (the real one is tested on its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation import clipstages, job, quality
from lipsyncctl.curation.clipstages import ClipContext, ClipStage
from lipsyncctl.errors import CheckpointError, MissingModelError
from tests.curate_media import write_lossless_rgb
from tests.mediagen import make_clip

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _ctx(tmp_path: Path, aligned: Path, options: cfg.CurateOptions, models: dict[str, Path] | None = None,
         cache: dict[str, Any] | None = None) -> ClipContext:
    return ClipContext("c_000000-000010", "c", tmp_path / "src.mp4", 0, 10, tmp_path / "a.wav", tmp_path / "data",
                       options, {"align": {"aligned": str(aligned)}}, {} if cache is None else cache, None,
                       models if models is not None else {"hyperiqa": tmp_path / "koniq_pretrained.pkl"})


# ---------------------------------------------------------------------------------------------------
# preprocessing


@pytest.mark.parametrize(("n", "expected"), [(10, [0, 5, 9]), (7, [0, 3, 6]), (1, [0, 0, 0])])
def test_frames_0_middle_and_last_of_the_aligned_clip_are_read_exactly(tmp_path: Path, n: int,
                                                                       expected: list[int]) -> None:
    frames = _frames(n, 64, seed=n)
    indices, picked = quality.pick_frames(write_lossless_rgb(tmp_path / "a.mkv", frames))
    assert indices == expected == quality.frame_indices(n)
    assert picked.dtype == np.uint8 and picked.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(picked, frames[expected])


@pytest.mark.parametrize(("size", "top"), [(256, 16), (512, 144), (225, 0), (227, 2)])
def test_official_centre_crop_and_imagenet_normalisation_by_hand(size: int, top: int) -> None:
    frames = _frames(3, size, seed=size)
    batch = quality.preprocess(frames, "official")
    # by hand: rows/cols top..top+224 (torchvision's int(round((size - 224) / 2)): 0.5 rounds to even),
    # /255 in float32, (x - mean) / std per channel
    crop = frames[:, top:top + 224, top:top + 224].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    hand = (crop - MEAN) / STD
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    np.testing.assert_array_equal(batch.numpy(), hand)


def test_resize_sees_the_whole_frame() -> None:
    frames = np.zeros((3, 512, 512, 3), np.uint8)
    frames[:, :, :256] = 255  # left half white: the official crop sees 112 white columns of 224 as well,
    frames[:, :64] = 128      # but only the resize sees the grey top band
    resized = quality.preprocess(frames, "resize")
    cropped = quality.preprocess(frames, "official")
    assert resized.shape == cropped.shape == (3, 3, 224, 224)
    grey = (128 / 255 - 0.485) / 0.229
    assert float(resized[0, 0, 5, 100]) == pytest.approx(grey, abs=1e-5)
    assert not torch.isclose(cropped[0, 0, :5], torch.tensor(grey)).any()
    with pytest.raises(ValueError, match="smaller than the official crop"):
        quality.preprocess(np.zeros((3, 200, 200, 3), np.uint8), "official")


# ---------------------------------------------------------------------------------------------------
# the stage: scores, threshold, skip


@pytest.mark.parametrize(("value", "verdict"), [(40 - 1e-3, "rejected"), (40.0, "kept"), (40 + 1e-3, "kept")])
def test_the_threshold_gates_at_score_plus_minus_epsilon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         value: float, verdict: str) -> None:
    frames = _frames(9, 256, seed=1)
    aligned = write_lossless_rgb(tmp_path / "aligned.mkv", frames)
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(quality, "_network", lambda ctx, weights: "net")

    def fake_score(net: str, batch: torch.Tensor) -> list[float]:
        seen.append(batch)
        return [value] * 3

    monkeypatch.setattr(quality, "score", fake_score)
    options = cfg.CurateOptions()
    data = quality.run(_ctx(tmp_path, aligned, options))
    assert data["frames"] == [0, 4, 8] and data["frame_scores"] == [value] * 3
    assert data["score"] == pytest.approx(value, abs=1e-5) and data["crop"] == "official" and not data["tiny"]
    torch.testing.assert_close(seen[0], quality.preprocess(frames[[0, 4, 8]]), rtol=0, atol=0)
    decision = quality.decide(data, options)
    if verdict == "kept":
        assert decision is None
    else:
        assert decision is not None and (decision.stage, decision.reason) == ("quality", "low-quality")
        assert decision.value == pytest.approx(value, abs=1e-4)
    # a new threshold re-decides from the stored score, without the network
    assert quality.decide(data, options.model_copy(update={"quality_min": value - 0.01})) is None
    assert quality.decide(data, options.model_copy(update={"quality_min": value + 0.01})) is not None
    summary = quality.summary(data)
    assert summary["quality_official"] is True and "quality_note" not in summary
    resized = quality.summary({**data, "crop": "resize"})
    assert resized["quality_official"] is False and "not official" in resized["quality_note"]


def test_the_mean_is_over_the_three_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aligned = write_lossless_rgb(tmp_path / "aligned.mkv", _frames(4, 256))
    monkeypatch.setattr(quality, "_network", lambda ctx, weights: "net")
    monkeypatch.setattr(quality, "score", lambda net, batch: [30.0, 45.0, 48.0])
    data = quality.run(_ctx(tmp_path, aligned, cfg.CurateOptions()))
    assert data["score"] == pytest.approx(41.0) and quality.decide(data, cfg.CurateOptions()) is None


def test_skip_quality_records_skipped_and_keeps_the_clip(tmp_path: Path) -> None:
    options = cfg.CurateOptions(skip_quality=True)
    data = quality.run(_ctx(tmp_path, tmp_path / "never-read.mkv", options, models={}))
    assert data == {"skipped": True}
    assert quality.decide(data, options) is None
    summary = quality.summary(data)
    assert summary["quality"] == "skipped" and "skip_quality" in summary["quality_note"]
    assert clipstages.clip_stage("quality").skipped(options)
    assert quality.settings(options) != quality.settings(cfg.CurateOptions())  # toggling it reruns the stage


def test_registered_after_align_and_before_features() -> None:
    names = [s.name for s in clipstages.CLIP_STAGES]
    assert names.index("align") < names.index("quality") < names.index("features")
    if "sync" in names:
        assert names.index("sync") < names.index("quality")


# ---------------------------------------------------------------------------------------------------
# through the job / CLI: refusal, skip, tiny weights


def _fake_align_run(ctx: ClipContext) -> dict[str, Any]:
    frames = _frames(ctx.frames, 256, seed=ctx.first)
    return {"aligned": str(write_lossless_rgb(ctx.output("aligned", ".mkv"), frames))}


FAKE_ALIGN = ClipStage("align", 1, _fake_align_run, lambda data, options: None,
                       outputs=lambda data: [data["aligned"]], summary=lambda data: {"aligned": data["aligned"]})


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """One 60-frame source (one span), an empty models dir, and the clip stages: a lossless stand-in for
    ``align``, then the real ``quality``."""
    (tmp_path / "raw").mkdir()
    raw = make_clip(tmp_path / "raw" / "talk.mp4", frames=60, audio_rate=16000, audio_channels=1)
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    stages = (FAKE_ALIGN, clipstages.clip_stage("quality"))
    monkeypatch.setattr(clipstages, "CLIP_STAGES", stages)
    monkeypatch.setattr(job, "CLIP_STAGES", stages)
    return {"raw": raw, "data": tmp_path / "data", "models": tmp_path / "models"}


def _manifest(data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


def test_without_the_weights_the_job_stops_with_exit_4_naming_models_fetch(env, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["curate", str(env["raw"]), "-o", str(env["data"])])
    assert code == 4
    assert "lipsyncctl models fetch hyperiqa" in capsys.readouterr().err
    assert not (env["data"] / ".lipsyncctl").exists()  # failed fast: no source was touched
    with pytest.raises(MissingModelError, match="hyperiqa"):
        job._clip_models(cfg.resolve(None), "quality")
    assert job._clip_models(cfg.resolve(None), "align") == {"align": {}}  # --until align needs no weights


def test_skip_quality_runs_without_the_weights_and_says_so(env, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["curate", str(env["raw"]), "-o", str(env["data"]), "--set", "curate.skip_quality=true"])
    assert code == 0, capsys.readouterr().err
    (line,) = _manifest(env["data"])
    assert line["decision"]["verdict"] == "kept"
    assert line["quality"] == "skipped" and "no visual-quality filter ran" in line["quality_note"]


def test_tiny_preset_scores_with_random_weights_through_the_real_loader_and_says_they_mean_nothing(
        env, capsys) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl.checkpoints.hyperiqa import TINY_HYPERIQA_DIR, TINY_HYPERIQA_SEED, tiny_state_dict

    code = main(["curate", str(env["raw"]), "-o", str(env["data"]), "--preset", "tiny"])
    assert code == 0, capsys.readouterr().err
    (line,) = _manifest(env["data"])
    assert line["decision"]["verdict"] == "kept" and line["quality_official"] is False
    assert "MEAN NOTHING" in line["quality_note"] and 45 < line["quality"] < 55
    assert len(line["quality_frames"]) == 3
    # the file: the official flat layout, the seeded values, strict through the real loader
    weights = env["models"] / TINY_HYPERIQA_DIR / "koniq_pretrained.pkl"
    stored = torch.load(weights, weights_only=True)
    assert len(stored) == 355 and all(isinstance(v, torch.Tensor) for v in stored.values())
    expected = tiny_state_dict(torch.Generator().manual_seed(TINY_HYPERIQA_SEED))
    for key in ("res.conv1.weight", "res.layer4.2.bn3.weight", "fc1w_conv.weight", "fc5b_fc.bias"):
        torch.testing.assert_close(stored[key], expected[key], rtol=0, atol=0)
    from lipsyncctl.checkpoints.loaders import load_hyperiqa

    net = load_hyperiqa(weights, dtype=torch.float32)
    assert not net.training
    del stored["res.lda4_fc.bias"]
    stored["extra.weight"] = torch.zeros(1)
    damaged = env["models"] / "damaged.pkl"
    torch.save(stored, damaged)
    with pytest.raises(CheckpointError, match="res.lda4_fc.bias") as err:
        load_hyperiqa(damaged)
    assert "models fetch hyperiqa" in (err.value.hint or "")
