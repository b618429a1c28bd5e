"""Validation through the sync code: a tiny UNet run renders a held-out clip with its current weights through
the clip pipeline every ``run.validate_every`` steps and scores it with the official-scale scorer (the tiny
preset's seeded stand-ins: a random SyncNet v2 and a random S3FD); LSE-C/D land in the metrics beside the
held-out recon loss. Missing scorer weights stop the run before training (exit 4) unless ``run.val_sync`` is
false."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncctl import api, paths
from lipsyncctl.errors import MissingModelError
from lipsyncctl.training import validation
from tests.train_media import Curated, curated_folder

SAMPLE = paths.DATA_DIR / "sample.mp4"  # a real face with its audio (4 s, 540 x 960)
SETS = ("run.validate_every=2", "run.max_steps=2", "run.save_every=2", "run.val_sync_preset=tiny",
        f"run.val_clip={SAMPLE}", "run.val_seconds=2.12")


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Curated:
    return curated_folder(tmp_path_factory.mktemp("train-validation"))


def _metrics(run: Path) -> dict[str, float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return {name: float(v) for _, name, v in rows}


@pytest.mark.slow  # about 30 s on 2 CPUs: 2 tiny steps, a 53-frame render at 540 x 960, the full-size SyncNet v2
def test_validation_renders_the_held_out_clip_and_logs_lse(curated: Curated, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.faces.detect_sfd import SfdFaceDetector

    # the tiny S3FD is random and finds no face (its scores mean nothing anyway): a stand-in gives the official
    # tracker one face box per frame, so the random SyncNet v2 measures the render's crops end to end
    def one_face(self: SfdFaceDetector, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        return np.array([[0.2 * w, 0.2 * h, 0.8 * w, 0.55 * h, 0.99]])

    monkeypatch.setattr(SfdFaceDetector, "detect_faces", one_face)
    seen: list[dict[str, torch.Tensor]] = []
    real = validation.render_and_score

    def spy(job, weights, **kw):  # the weights rendered are the run's current ones
        seen.append({k: v.clone() for k, v in weights.items()})
        return real(job, weights, **kw)

    monkeypatch.setattr(validation, "render_and_score", spy)
    run = tmp_path / "run"
    result = api.train(curated.data, run, api.resolve_train_config("tiny", SETS))
    v = result.validation
    assert v["sync_measured"] == 1.0 and v["render_frames"] == 53
    assert math.isfinite(v["lse_c"]) and v["lse_c"] >= 0 and math.isfinite(v["lse_d"]) and v["lse_d"] > 0
    assert math.isfinite(v["loss"]) and v["samples"] > 0  # the held-out recon loss beside it
    logged = _metrics(run)
    assert logged["val_lse_c"] == v["lse_c"] and logged["val_lse_d"] == v["lse_d"] and "val_loss" in logged
    render = run / "validation" / "step-000002.mp4"
    # the render and its run record stay; the temporary weights file is gone
    assert sorted(p.name for p in (run / "validation").iterdir()) == [render.name, "step-000002.run.yaml"]
    from safetensors.torch import load_file

    exported = load_file(run / "export" / "unet.safetensors")
    assert len(seen) == 1 and seen[0].keys() == exported.keys()
    assert all(torch.equal(seen[0][k], exported[k]) for k in exported)  # step 2 = the last step


def test_missing_scorer_is_exit_4_unless_sync_validation_is_off(curated: Curated, tmp_path: Path) -> None:
    cfg = api.resolve_train_config("tiny", [*SETS[:-3], f"run.val_clip={SAMPLE}", "run.val_sync_preset=fast"])
    with pytest.raises(MissingModelError) as e:
        api.train(curated.data, tmp_path / "r", cfg)
    assert e.value.exit_code == 4 and "syncnet-v2" in e.value.message
    assert "run.val_sync=false" in (e.value.hint or "") and not (tmp_path / "r" / "checkpoints").exists()
    off = api.resolve_train_config("tiny", [*SETS[:-3], "run.val_sync_preset=fast", "run.val_sync=false"])
    assert validation.prepare(off, curated.data, torch.device("cpu")) is None
    # the default held-out clip is the first val clip of DATA
    default = api.resolve_train_config("tiny", ["run.validate_every=2", "run.val_sync_preset=tiny"])
    job = validation.prepare(default, curated.data, torch.device("cpu"))
    assert job is not None and job.video.name.startswith("held-")
    # given the val clips the run has read, it reads the manifest no more (a train start read it up to six times)
    from lipsyncctl.training import data as train_data

    val = train_data.read_clips(curated.data, split="val", kind="unet", num_frames=default.data.num_frames)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_data, "read_clips", lambda *a, **k: pytest.fail("the manifest read again"))
        given = validation.prepare(default, curated.data, torch.device("cpu"), val_clips=val)
    assert given is not None and given.video == job.video
    # a run.val_clip that is not there is a missing input (exit 5), as in every command
    from lipsyncctl.errors import MediaError

    gone = api.resolve_train_config("tiny", ["run.validate_every=2", "run.val_sync_preset=tiny",
                                             f"run.val_clip={tmp_path / 'nosuch.mp4'}"])
    with pytest.raises(MediaError, match="no such file") as missing:
        validation.held_out_clip(gone, curated.data)
    assert missing.value.exit_code == 5
    # one that is there but no video with sound is said before the first step (it stopped the first validation,
    # after the training steps before it)
    (tmp_path / "afile").write_text("hi")
    text = api.resolve_train_config("tiny", ["run.validate_every=2", f"run.val_clip={tmp_path / 'afile'}"])
    with pytest.raises(MediaError, match="^run.val_clip ") as bad:
        validation.prepare(text, curated.data, torch.device("cpu"))
    assert "run.val_sync=false" in (bad.value.hint or "")
    assert "--audio" not in bad.value.hint and "--video" not in bad.value.hint  # sync's flags: train has none
    # the tiny preset validates with the tiny pipeline out of the box (it asked for latentsync-1.5's scorer)
    tiny = api.resolve_train_config("tiny", ["run.validate_every=2"])
    assert tiny.run.val_sync_preset == "tiny" and validation.prepare(tiny, curated.data, torch.device("cpu"))


def test_the_default_held_out_clip_renders_with_a_face_in_every_frame(tmp_path: Path) -> None:
    """The default validation clip is curate's aligned face crop (256 x 256, the face filling it): the render
    configuration of the sync validation finds that face in every frame, so a run without ``run.val_clip``
    does not stop at its first validation for want of a face (tiny weights; the detector is the real one)."""
    from lipsyncctl import config as cfg
    from lipsyncctl.curation.job import run_curation
    from lipsyncctl.pipeline.clip import sync_clip
    from tests.curate_media import write_talking_clip
    from tests.sync_media import sample_frames

    write_talking_clip(tmp_path / "raw" / "face.mp4", sample_frames(52, scale=0.75))
    res = run_curation([tmp_path / "raw"], tmp_path / "data", cfg.resolve("tiny", ["curate.detect_every=5"]),
                       until="align")
    (clip,) = [c for c in res.spans() if c.decision.verdict == "kept"]
    aligned = Path(clip.summary["aligned"])
    config = validation.render_config(api.resolve_train_config("tiny", ["run.val_sync_preset=tiny"]), "cpu")
    out = sync_clip(aligned, aligned, tmp_path / "val.mp4", config, start=0.0, end=1.0)
    assert (out.width, out.height) == (256, 256) and out.frames == 25
    assert out.faces_found == 25 and out.no_face_frames == 0
    # the render uses the run's own mouth mask (data.mask), as sync must for the weights it trained
    assert config.model.mask == "mask.png"
    assert validation.render_config(api.resolve_train_config("tiny", ["data.mask=/m/own.png"]), "cpu").model.mask \
        == "/m/own.png"
