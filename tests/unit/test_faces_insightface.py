"""The insightface backend (the official detector: SCRFD ``det_10g`` + ``2d106det`` of ``buffalo_l``) run through
the real InsightFace package on a tiny pack in its own ONNX formats (:mod:`tests.insightface_models`: hand-set
weights, so what it finds is known): routing, the official RGB quirk, the official size filter, refits, a sync
with ``faces.backend=insightface`` and curate's align stage with ``curate.detector=insightface``."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("insightface", reason="pip install insightface (the dev extra has it)")

from lipsyncctl.faces import detect_insightface  # noqa: E402
from lipsyncctl.faces.detect import available_backends, create_detector  # noqa: E402
from tests.insightface_models import RADIUS, write_tiny_pack  # noqa: E402


@pytest.fixture
def pack(models_dir: Path) -> Path:
    write_tiny_pack(detect_insightface.pack_dir(models_dir))
    return models_dir


def _frame(size: int, cell: tuple[int, int]) -> np.ndarray:
    """A black RGB frame with one blue cell: the 32x32 cell ``cell`` (column, row) at the detector's 512 px."""
    frame = np.zeros((size, size, 3), np.uint8)
    k = size / 512
    x, y = (round(v * 32 * k) for v in cell)
    frame[y:y + round(32 * k), x:x + round(32 * k), 2] = 255
    return frame


def _on_circle(landmarks: np.ndarray, box: np.ndarray) -> None:
    """The tiny landmark model's circle, mapped onto ``box`` as InsightFace crops it, rounded like the official."""
    centre = (box[:2] + box[2:]) / 2
    radius = RADIUS * 0.75 * max(box[2] - box[0], box[3] - box[1])
    assert landmarks.shape == (106, 2) and np.array_equal(landmarks, np.round(landmarks))
    assert np.abs(np.hypot(*(landmarks - centre).T) - radius).max() <= 0.71  # rounding moves a point <= 0.5 px a side


def test_the_pack_makes_the_backend_usable_and_finds_the_designed_face(pack: Path) -> None:
    assert available_backends(pack)["insightface"] is None
    detector = create_detector("insightface", models_dir=pack)
    assert detector.name == "insightface" and detector.layout == 106
    (face,) = detector.detect(_frame(512, (5, 4)))
    # the anchor is the cell's corner (160, 128); the box reaches 2 strides of 32 px from it on each side
    assert face.box.tolist() == [96.0, 64.0, 224.0, 192.0] and face.score > 0.999
    _on_circle(face.landmarks, face.box)
    # "auto" prefers the official detector once it is usable, and doctor says so
    assert create_detector("auto", models_dir=pack).name == "insightface"
    from lipsyncctl import config as cfg
    from lipsyncctl.checks.doctor import check_face_detector

    (row,) = check_face_detector(cfg.resolve("tiny"), pack)
    assert row.status == "ok" and row.detail.startswith("insightface (auto; the official one)")


def test_frames_go_in_as_rgb_like_the_official_code(pack: Path) -> None:
    """The official pipeline hands InsightFace (a BGR model) RGB frames: the blue cell is what the model's red input
    sees. With ``official_rgb=False`` the frame is turned into BGR first, and the cell is not found."""
    frame = _frame(512, (5, 4))
    assert len(create_detector("insightface", models_dir=pack).detect(frame)) == 1
    assert create_detector("insightface", models_dir=pack, official_rgb=False).detect(frame) == []


def test_the_official_size_filter_and_the_detectors_scale(pack: Path) -> None:
    """A 256 px frame is doubled to the detector's 512: the 128 px box comes back 64 px high, under the official
    80 px minimum, and is dropped; a 1024 px frame's box comes back at twice the size."""
    detector = create_detector("insightface", models_dir=pack)
    assert detector.detect(_frame(256, (5, 4))) == []
    (face,) = detector.detect(_frame(1024, (5, 4)))
    assert face.box.tolist() == [192.0, 128.0, 448.0, 384.0]
    _on_circle(face.landmarks, face.box)


def test_refit_places_the_landmarks_on_the_given_box(pack: Path) -> None:
    detector = create_detector("insightface", models_dir=pack)
    box = np.array([100.0, 50.0, 200.0, 250.0])
    (face,) = detector.refit(_frame(512, (5, 4)), [box])
    assert face.box.tolist() == box.tolist() and face.score == 1.0
    _on_circle(face.landmarks, box)


def test_a_sync_with_the_official_detector(pack: Path, tmp_path: Path) -> None:
    """The whole sync with ``faces.backend=insightface``: every frame's face found and aligned from the 106-point
    layout, the detector on record."""
    import yaml

    from lipsyncctl.pipeline.clip import sync_clip
    from tests.sync_media import decode_rgb, tiny_models, write_clip, write_wav

    frames = [_frame(512, (5 + (i % 2), 4)) for i in range(6)]  # the face moves one cell and back
    video = write_clip(tmp_path / "v.mkv", frames, Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 6 / 25)
    out = tmp_path / "o.mkv"
    with tiny_models(pack, "faces.backend=insightface", "output.codec=ffv1") as (config, networks):
        res = sync_clip(video, audio, out, config, networks=networks)
    assert res.frames == 6 and res.faces_found == 6 and res.no_face_frames == 0 and res.detector == "insightface"
    assert len(decode_rgb(out)) == 6
    assert yaml.safe_load(out.with_name("o.run.yaml").read_text())["faces"]["detector"] == "insightface"


def test_curate_aligns_with_the_official_detector_and_says_so(pack: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """curate's align stage with ``curate.detector=insightface``: the face shot is kept, aligned from the 106-point
    layout, with the detector on record as the official one; the faceless shot after the cut is rejected."""
    import json

    from lipsyncctl import config as cfg
    from lipsyncctl.curation.job import run_curation
    from tests.curate_media import write_talking_clip

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(pack))
    face = [_frame(512, (5 + (i // 10) % 2, 4)) for i in range(60)]
    write_talking_clip(tmp_path / "raw" / "cut.mp4", face + [np.full_like(face[0], 128)] * 55)
    res = run_curation([tmp_path / "raw"], tmp_path / "data", cfg.resolve("tiny", ["curate.detector=insightface"]),
                       until="align")
    kept, faceless = list(res.spans())
    assert (kept.first, kept.stop, kept.decision.verdict) == (0, 60, "kept")
    assert kept.summary["detector"] == "insightface" and kept.summary["detector_official"] is True
    assert faceless.decision.verdict == "rejected" and faceless.summary["no_face_frame"] == 0
    line = json.loads((tmp_path / "data" / "manifest.jsonl").read_text().splitlines()[0])
    assert line["detector"] == "insightface" and Path(line["aligned"]).is_file()
