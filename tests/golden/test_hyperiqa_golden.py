"""Golden vector train/4: hyperIQA (``eval/hyper_iqa.py`` HyperNet(16, 112, 224, 112, 56, 28, 14, 7) +
TargetNet) with the preprocessing of ``preprocess/filter_visual_quality.py`` (official parity).

The weights are the vector's: 196 entries regenerated from the sidecar's counter hash (each checked against
its sha256) and the 159 stored BatchNorm buffers, written as the official ``koniq_pretrained.pkl`` (a flat
``torch.save``) and read back through :func:`lipsyncctl.checkpoints.loaders.load_hyperiqa`. The frames go
through the quality stage's own :func:`~lipsyncctl.curation.quality.preprocess`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import SHARED
from tests.golden.hashweights import hash_tensor, sha256_f32

TRAIN = SHARED / "golden" / "train"
SIDECAR = TRAIN / "hyperiqa.json"

pytestmark = pytest.mark.skipif(not SIDECAR.is_file(), reason=f"golden vector not found: {SIDECAR}")

ATOL_PRED = 2e-4           # suggested: pred / quality_score atol 2e-4
ATOL_PARAS, RTOL_PARAS = 5e-4, 1e-4


@pytest.fixture(scope="module")
def sidecar() -> dict[str, Any]:
    return json.loads(SIDECAR.read_text())


@pytest.fixture(scope="module")
def weights(sidecar: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vector's weights as an official-format koniq_pretrained.pkl."""
    from safetensors.torch import load_file

    from lipsyncctl.checkpoints.hyperiqa import save_official

    state: dict[str, torch.Tensor] = {}
    for name, spec in sidecar["weights"]["formula_table"].items():
        scale = float.fromhex(spec["scale_hex"])
        assert np.float32(scale) == np.float32(spec["scale"])
        value = hash_tensor(name, spec["shape"], scale, spec["offset"])
        assert sha256_f32(value) == spec["sha256_f32"], name
        state[name] = torch.from_numpy(value)
    for name, t in load_file(TRAIN / "hyperiqa_bn_stats_fp16.safetensors").items():
        state[name] = t.float() if t.is_floating_point() else t
    assert len(state) == 355
    return save_official(state, tmp_path_factory.mktemp("hyperiqa") / "koniq_pretrained.pkl")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    from PIL import Image

    strip = np.asarray(Image.open(TRAIN / "hyperiqa_frames.png").convert("RGB"))
    assert strip.shape == (768, 256, 3)
    return strip.reshape(3, 256, 256, 3)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(TRAIN / "hyperiqa_io.safetensors")


@pytest.fixture(scope="module")
def result(weights: Path, frames: np.ndarray) -> dict[str, Any]:
    from lipsyncctl.checkpoints.loaders import load_hyperiqa
    from lipsyncctl.curation.quality import mean_score, preprocess
    from lipsyncctl.nets.hyperiqa import TargetNet

    net = load_hyperiqa(weights, dtype=torch.float32)
    batch = preprocess(frames, "official")
    with torch.no_grad():
        paras = net(batch)
        pred = TargetNet()(paras)
    return {"batch": batch, "paras": paras, "pred": pred, "score": mean_score(pred.tolist()), "net": net}


def test_the_preprocessing_is_the_official_tensor(sidecar, result) -> None:  # type: ignore[no-untyped-def]
    batch = result["batch"]
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    digest = sidecar["inputs"]["preprocessed (not stored)"].rsplit(": ", 1)[1]
    assert hashlib.sha256(batch.contiguous().numpy().astype("<f4").tobytes()).hexdigest() == digest
    assert batch.is_contiguous(memory_format=torch.channels_last)  # the official layout reaches conv1


def test_scores_match_the_official_within_2e_4(golden, result) -> None:  # type: ignore[no-untyped-def]
    pred, score = result["pred"], result["score"]
    assert pred.shape == (3,)
    err = float((pred - golden["pred"]).abs().max())
    assert err <= ATOL_PRED, f"per-frame scores off by {err:.3g}"
    assert abs(score - float(golden["quality_score"][0])) <= ATOL_PRED
    assert (score >= 40) == (float(golden["quality_score"][0]) >= 40) is True  # kept, as upstream


def test_hypernet_outputs_match_the_official(golden, result) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl.nets.hyperiqa import PARAS

    assert set(result["paras"]) == set(PARAS)
    for name in PARAS:
        torch.testing.assert_close(result["paras"][name], golden[name], atol=ATOL_PARAS, rtol=RTOL_PARAS,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_quality_stage_scoring_gives_the_same_numbers(golden, result, frames) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl.curation.quality import preprocess, score

    ours = score(result["net"], preprocess(frames))
    np.testing.assert_allclose(ours, golden["pred"].numpy(), rtol=0, atol=ATOL_PRED)
