"""Tracking, smoothing, pass-through of face-less frames, align/restore round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsyncctl.errors import ConfigError, NoFaceError
from lipsyncctl.faces import warp
from lipsyncctl.faces.align import FaceAligner, crop_size
from lipsyncctl.faces.detect import Face, available_backends, create_detector
from lipsyncctl.faces.speaker import select_speaker
from lipsyncctl.faces.track import (
    FaceTracker,
    OneEuroFilter,
    TrackOptions,
    crossfade_weights,
    iou,
    track_faces,
)
from tests.conftest import shared_path
from tests.unit.test_faces_detect import decode_frames


@pytest.fixture(scope="module")
def frame0() -> np.ndarray:
    return decode_frames(shared_path("fixtures", "demo1_video.mp4"), 1)[0]


@pytest.fixture(scope="module")
def detector():
    reason = available_backends()["dlib"]
    if reason is not None:
        pytest.skip(f"dlib backend unusable: {reason}")
    return create_detector("dlib")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.mark.parametrize("res", [256, 512])
def test_align_restore_round_trip(frame0, detector, res):
    """Paste the aligned crop back unchanged: the face region must match the source (>= 38 dB)."""
    face = detector.detect(frame0)[0]
    aligner = FaceAligner(res)
    crop, matrix = aligner.align(frame0, face.points3)
    generated = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    out = aligner.restore(frame0, generated, matrix)
    x0, y0, x1, y1 = face.box.astype(int)
    psnr = _psnr(out[y0:y1, x0:x1], frame0[y0:y1, x0:x1])
    print(f"round trip PSNR at {res}: {psnr:.2f} dB")
    assert psnr >= 38.0, f"round trip PSNR {psnr:.2f} dB at {res}"
    # far from the face the output is the source pixel, exactly
    assert np.array_equal(out[:300], frame0[:300]) and np.array_equal(out[-300:], frame0[-300:])


def _crop_centres(selected: list[Face]) -> np.ndarray:
    aligner = FaceAligner(256)
    w, h = crop_size(256)
    centres = []
    for face in selected:
        inv = warp.invert_affine(torch.from_numpy(aligner.matrix(face.points3))).numpy()
        centres.append(inv @ np.array([w / 2, h / 2, 1.0]))
    return np.array(centres)


def test_smoothing_lowers_crop_jitter_on_a_still_head(frame0, detector):
    """A still head with sensor noise: the crop centre moves less from frame to frame when smoothed."""
    still = frame0[400:1200, 200:900]
    rng = np.random.default_rng(0)
    clip = [np.clip(still + rng.normal(0, 6, still.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    jitter = {}
    for smooth in (False, True):
        faces = track_faces(detector, clip, fps=25.0, options=TrackOptions(smooth=smooth, detect_every=2))
        selected = select_speaker(faces)
        assert all(f is not None for f in selected)
        jitter[smooth] = float(np.linalg.norm(np.diff(_crop_centres(selected), axis=0), axis=1).mean())
    print(f"crop-centre jitter (px/frame): without smoothing {jitter[False]:.3f}, with {jitter[True]:.3f}")
    assert jitter[True] < 0.6 * jitter[False], (
        f"jitter without {jitter[False]:.3f} px, with {jitter[True]:.3f} px"
    )


def test_no_face_stretch_passes_through_and_fades_back(frame0, detector):
    face_img = frame0[400:1200, 200:900]
    grey = np.full_like(face_img, 128)
    clip = [face_img] * 5 + [grey] * 6 + [face_img] * 7
    faces = list(FaceTracker(detector, fps=25.0, options=TrackOptions(detect_every=3)).track(clip))
    selected = select_speaker(faces)
    present = [s is not None for s in selected]
    assert present[:5] == [True] * 5
    assert present[5:11] == [False] * 6, present  # refits on the grey frames are rejected
    assert all(present[11:]), present  # found again on the first frame it is back (11), not the next key frame (12)
    weights = crossfade_weights(selected, fade_in=3, fade_out=2)
    assert np.all(weights[5:11] == 0)
    assert np.all(np.diff(weights[11:15]) > 0) and weights[14] == 1.0
    assert weights[0] == 1.0 and weights[4] < 1.0  # fades out before the gap


def test_a_cut_between_key_frames_is_followed_on_its_first_frame(frame0, detector):
    """A cut to another face (elsewhere in the frame) between key frames: the refit loses the face on the cut's
    frame and the tracker looks there at once (it passed frames 4 to 9 through, waiting for key frame 10)."""
    face_img = frame0[400:1200, 200:900]
    grey = np.full_like(face_img, 128)
    before = np.concatenate([face_img, grey], axis=1)
    after = np.concatenate([grey, face_img[:, ::-1]], axis=1)  # another face, on the right
    clip = [before] * 4 + [after] * 8
    faces = list(FaceTracker(detector, fps=25.0, options=TrackOptions(detect_every=10)).track(clip))
    selected = select_speaker(faces)
    assert all(s is not None for s in selected), [s is not None for s in selected]
    assert all(s.center[0] < face_img.shape[1] for s in selected[:4])
    assert all(s.center[0] > face_img.shape[1] for s in selected[4:])  # the new face from the cut's frame on


def test_a_face_entering_is_found_on_the_first_frame_it_is_there(frame0, detector):
    face_img = frame0[400:1200, 200:900]
    grey = np.full_like(face_img, 128)
    clip = [grey] * 3 + [face_img] * 6
    faces = list(FaceTracker(detector, fps=25.0, options=TrackOptions(detect_every=5)).track(clip))
    assert [bool(f) for f in faces] == [False] * 3 + [True] * 6  # not from key frame 5 only


def test_two_faces_keep_their_ids_and_point_selects_one(frame0, detector):
    face_img = frame0[500:1100, 250:850]
    clip = []
    for shift in range(0, 12, 2):  # the right face slides down a little
        right = np.roll(face_img, shift, axis=0)
        clip.append(np.concatenate([face_img, right], axis=1))
    faces = list(FaceTracker(detector, fps=25.0, options=TrackOptions(detect_every=3)).track(clip))
    assert all(len(f) == 2 for f in faces)
    ids_left = {min(f, key=lambda x: x.center[0]).track_id for f in faces}
    ids_right = {max(f, key=lambda x: x.center[0]).track_id for f in faces}
    assert len(ids_left) == 1 and len(ids_right) == 1 and ids_left != ids_right
    chosen = select_speaker(faces, select="point", point=(600 + 300, 300))
    assert all(f.track_id == next(iter(ids_right)) for f in chosen)
    by_id = select_speaker(faces, select="id", track_id=next(iter(ids_left)))
    assert all(f.center[0] < 600 for f in by_id)
    with pytest.raises(NoFaceError):
        select_speaker(faces, select="point", point=(5, 5))
    with pytest.raises(NoFaceError):
        select_speaker(faces, select="id", track_id=99)
    with pytest.raises(ConfigError):
        select_speaker(faces, select="id")


def test_crossfade_weights_shape():
    sel = [1, 1, None, None, 1, 1, 1, 1, 1]
    w = crossfade_weights(sel, fade_in=3, fade_out=1)
    np.testing.assert_allclose(w, [1, 0.5, 0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert np.all(crossfade_weights([1] * 4) == 1) and np.all(crossfade_weights([None] * 3) == 0)


def test_one_euro_filter():
    f = OneEuroFilter(fps=25, min_cutoff=1.0, beta=0.0)
    noisy = 10 + np.random.default_rng(0).normal(0, 1, 200)
    out = np.array([f(np.array([v]))[0] for v in noisy])
    assert out[50:].std() < 0.5 * noisy[50:].std()
    fast = OneEuroFilter(fps=25, min_cutoff=1.0, beta=5.0)
    ramp = np.arange(50, dtype=float) * 20  # fast motion: high beta keeps the lag small
    lagged = np.array([fast(np.array([v]), scale=100)[0] for v in ramp])
    assert abs(lagged[-1] - ramp[-1]) < 20


def test_iou_and_options():
    assert iou(np.array([0, 0, 10, 10.0]), np.array([5, 0, 15, 10.0])) == pytest.approx(1 / 3)
    assert iou(np.array([0, 0, 1, 1.0]), np.array([2, 2, 3, 3.0])) == 0.0
    with pytest.raises(ConfigError):
        TrackOptions(detect_every=0)


def test_crossfade_weight_at_needs_only_a_window_around_the_frame() -> None:
    """The streamed face pass computes each frame's weight from a window of fade_in + 1 frames back and
    fade_out + 1 ahead: the same float as the whole clip's crossfade_weights, whatever the gaps."""
    from lipsyncctl.faces.track import crossfade_weight_at

    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        selected = [object() if rng.random() < 0.7 else None for _ in range(n)]
        fade_in, fade_out = int(rng.integers(0, 7)), int(rng.integers(0, 7))
        whole = crossfade_weights(selected, fade_in=fade_in, fade_out=fade_out)
        for i in range(n):
            lo, hi = max(0, i - fade_in - 1), min(n, i + fade_out + 2)
            assert crossfade_weight_at(selected[lo:hi], i - lo, fade_in, fade_out) == whole[i]
