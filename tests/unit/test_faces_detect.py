"""Face detectors: dlib on the demo clip, the no-face case, backend selection without downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.errors import ConfigError, MissingModelError
from lipsyncctl.faces import detect
from lipsyncctl.faces.detect import Face, available_backends, create_detector, filter_faces
from tests.conftest import shared_path

pytest.importorskip("dlib", reason="dlib-bin is not installed")


def decode_frames(path: Path, count: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


@pytest.fixture(scope="module")
def demo_frames() -> list[np.ndarray]:
    return decode_frames(shared_path("fixtures", "demo1_video.mp4"), 3)


@pytest.fixture(scope="module")
def dlib_detector():
    if available_backends()["dlib"] is not None:
        pytest.skip(f"dlib backend unusable: {available_backends()['dlib']}")
    return create_detector("dlib")


def test_dlib_finds_one_face_with_landmarks_in_box(demo_frames, dlib_detector):
    assert demo_frames[0].shape == (1920, 1080, 3)
    for frame in demo_frames:
        faces = dlib_detector.detect(frame)
        assert len(faces) == 1, [f.box for f in faces]
        face = faces[0]
        x0, y0, x1, y1 = face.box
        assert face.landmarks.shape == (68, 2)
        # landmarks inside the box (HOG boxes are tight: allow 15 % of the box size for the jaw/brows)
        margin = 0.15 * (x1 - x0)
        assert np.all(face.landmarks[:, 0] >= x0 - margin) and np.all(face.landmarks[:, 0] <= x1 + margin)
        assert np.all(face.landmarks[:, 1] >= y0 - margin) and np.all(face.landmarks[:, 1] <= y1 + margin)
        # the face of demo1 sits around x 600, y 720 of the portrait frame
        assert 450 < face.center[0] < 750 and 600 < face.center[1] < 900
        assert 120 < x1 - x0 < 400


def test_dlib_points_near_official_points(demo_frames, dlib_detector):
    """Our 68-point mapping lands close to the official three points of golden vector 4."""
    from safetensors.numpy import load_file

    golden = load_file(str(shared_path("golden", "face_align_restore.safetensors")))
    face = dlib_detector.detect(demo_frames[0])[0]
    pts = face.points3 - np.array([432, 552])  # golden coordinates are in a window of the frame
    err = np.linalg.norm(pts - golden["landmarks3"], axis=1)
    brow_gap = np.linalg.norm(golden["landmarks3"][1] - golden["landmarks3"][0])
    assert np.all(err < 0.1 * brow_gap), (
        f"distance to the official points {err} px (brow gap {brow_gap:.0f} px)"
    )


def test_no_face_on_flat_grey(dlib_detector):
    grey = np.full((720, 1280, 3), 128, np.uint8)
    assert dlib_detector.detect(grey) == []
    assert dlib_detector.detect_batch([grey, grey]) == [[], []]
    assert dlib_detector.refit(grey, []) == []


def test_auto_picks_an_available_backend_and_says_which(models_dir):
    status = available_backends()
    assert set(status) == {"insightface", "face-alignment", "dlib"}
    det = create_detector("auto")
    assert det.name in status and status[det.name] is None


def test_face_alignment_without_weights_never_downloads(models_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "face_alignment" else real(n, *a)
    )
    reason = detect.backend_status("face-alignment")
    assert reason is not None and "models fetch face-alignment" in reason
    with pytest.raises(MissingModelError) as err:
        create_detector("face-alignment")
    assert "models fetch face-alignment" in err.value.hint
    # with the two files present the backend counts as available (it would load them, not fetch)
    (models_dir / "face-alignment").mkdir()
    (models_dir / "face-alignment" / "s3fd-619a316812.pth").write_bytes(b"x")
    (models_dir / "face-alignment" / "2DFAN4-cd938726ad.zip").write_bytes(b"x")
    assert detect.backend_status("face-alignment") is None


def test_unknown_backend_and_insightface_missing(models_dir):
    with pytest.raises(ConfigError):
        create_detector("nope")
    if available_backends()["insightface"] is not None:
        with pytest.raises(MissingModelError):
            create_detector("insightface")


def test_filter_faces():
    lmk = np.zeros((68, 2))
    faces = [
        Face(np.array([0, 0, 100, 120.0]), 0.9, lmk),
        Face(np.array([0, 0, 20, 20.0]), 0.9, lmk),  # too small
        Face(np.array([0, 0, 300, 100.0]), 0.9, lmk),  # too wide
        Face(np.array([0, 0, 100, 120.0]), 0.1, lmk),  # low score
    ]
    kept = filter_faces(faces, min_size=40, min_score=0.5)
    assert kept == [faces[0]]


def test_face_alignment_backend_glue_with_stand_in_package(models_dir, monkeypatch):
    """The face-alignment backend with a stand-in package: explicit weight paths, batched FAN."""
    import sys
    import types

    import torch

    calls: dict[str, object] = {}

    class StandInSFD:
        reference_scale = 195

        def __init__(self, device, path_to_detector=None, verbose=False):
            calls["path_to_detector"] = path_to_detector

        def detect_from_image(self, image):
            return [np.array([10, 20, 110, 140, 0.99]), np.array([0, 0, 50, 50, 0.2])]

        def detect_from_batch(self, tensor):
            calls["batch_shape"] = tuple(tensor.shape)
            return [self.detect_from_image(None) for _ in range(tensor.shape[0])]

    def crop(image, center, scale):
        return np.zeros((256, 256, 3), np.uint8)

    def get_preds_fromhm(hm, center, scale):
        pts = np.tile(np.asarray(center, dtype=np.float32), (1, 68, 1))
        return pts, pts, np.ones((1, 68))

    fan_dir = models_dir / "face-alignment"
    fan_dir.mkdir()
    (fan_dir / "s3fd-619a316812.pth").write_bytes(b"x")
    (fan_dir / "2DFAN4-cd938726ad.zip").write_bytes(b"x")
    seen = []

    class StandInFan:
        def eval(self):
            return self

        def __call__(self, x):
            seen.append(tuple(x.shape))
            return torch.zeros(x.shape[0], 68, 64, 64)

    monkeypatch.setattr(torch.jit, "load", lambda path, map_location=None: StandInFan())
    mods = {
        "face_alignment": types.ModuleType("face_alignment"),
        "face_alignment.utils": types.SimpleNamespace(crop=crop, get_preds_fromhm=get_preds_fromhm),
        "face_alignment.detection": types.ModuleType("face_alignment.detection"),
        "face_alignment.detection.sfd": types.ModuleType("face_alignment.detection.sfd"),
        "face_alignment.detection.sfd.sfd_detector": types.SimpleNamespace(SFDDetector=StandInSFD),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "face_alignment" else real(n, *a)
    )
    det = create_detector("face-alignment")
    assert det.name == "face-alignment" and calls["path_to_detector"].endswith("s3fd-619a316812.pth")
    frames = [np.zeros((200, 160, 3), np.uint8)] * 3
    out = det.detect_batch(frames)
    assert calls["batch_shape"] == (3, 3, 200, 160)
    assert [len(f) for f in out] == [1, 1, 1]  # the low-score box is dropped
    assert out[0][0].landmarks.shape == (68, 2) and out[0][0].score == pytest.approx(0.99)
    assert seen and seen[-1][0] == 1  # one FAN pass per frame here, all faces of a frame batched


def test_a_finished_pass_gives_its_detector_to_the_next_one(monkeypatch):
    """One spare detector per (backend, device): clips after the first load no model; two passes at once get
    two detectors (none is shared by two threads); release_detectors forgets the spare."""
    made: list[object] = []

    class Stub(detect.FaceDetector):
        name = "stub"

        def detect(self, frame):
            return []

        def refit(self, frame, boxes):
            return []

    monkeypatch.setattr(detect, "create_detector", lambda name="auto", device="cpu": made.append(1) or Stub())
    detect.release_detectors()
    first = detect.take_detector("dlib", "cpu")
    second = detect.take_detector("dlib", "cpu")  # the first is still in use
    assert first is not second and len(made) == 2
    detect.give_back_detector("dlib", "cpu", first)
    assert detect.take_detector("dlib", "cpu") is first and len(made) == 2  # reused, nothing loaded
    assert detect.take_detector("dlib", "cuda:0") is not first and len(made) == 3  # another device: its own
    detect.give_back_detector("dlib", "cpu", second)
    detect.release_detectors()
    assert detect.take_detector("dlib", "cpu") not in (first, second) and len(made) == 4
    detect.release_detectors()


def test_an_anamorphic_frame_is_searched_as_shown_and_answered_in_stored_pixels(dlib_detector):
    """Real face frames squeezed to 3/4 of their width (a 4:3 pixel aspect, as HDV stores them): HOG on the
    stored pixels misses some; through ``shown`` every frame has its face, and the box and landmarks come back in
    stored pixels, within a pixel or two of the square frame's scaled by 3/4 in x; a refit of those boxes too."""
    import cv2

    from tests.sync_media import sample_frames

    frames = sample_frames(6, scale=0.75)
    h, w = frames[0].shape[:2]
    squeezed = [cv2.resize(f, (w * 3 // 4, h), interpolation=cv2.INTER_AREA) for f in frames]
    sx = (w * 3 // 4) / w
    assert any(not dlib_detector.detect(f) for f in squeezed)  # the case this is for
    finder = detect.shown(dlib_detector, 4 / 3)
    assert detect.shown(dlib_detector, 1.0) is dlib_detector and finder.name == dlib_detector.name
    for square, stored in zip(frames, squeezed, strict=True):
        (ref,) = dlib_detector.detect(square)
        (got,) = finder.detect(stored)
        assert np.abs(got.box - ref.box * [sx, 1, sx, 1]).max() < 3
        assert np.abs(got.landmarks - ref.landmarks * [sx, 1]).mean() < 1.5
        (again,) = finder.refit(stored, [got.box])
        assert np.allclose(again.box, got.box) and np.abs(again.landmarks - got.landmarks).mean() < 1.0
    assert finder.detect_batch(squeezed[:2])[1][0].box.tolist() == finder.detect(squeezed[1])[0].box.tolist()
