"""``inference.gpu_paste`` (issue 12): the paste-back computed with torch on the networks' device, as the official
kornia code does on the GPU. Checked on the CPU device here (the same torch arithmetic a GPU runs): it follows the
golden restore, it is the default paste within a level at a few pixels, it changes nothing outside the face's box,
and a sync with it is the default sync within that level; its erosion is OpenCV's bit for bit."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lipsyncctl import config as cfg
from lipsyncctl.faces import warp
from lipsyncctl.faces.align import FaceAligner
from lipsyncctl.pipeline.clip import sync_clip
from tests.conftest import shared_path
from tests.sync_media import decode_rgb, sample_frames, tiny_models, with_sets, write_clip, write_wav


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(shared_path("golden", "face_align_restore.safetensors")))


def _generated(golden) -> torch.Tensor:  # type: ignore[no-untyped-def]
    g = torch.from_numpy(golden["generated_face_u8"]).permute(2, 0, 1).to(torch.float32) / 255
    return (g - 0.5) / 0.5


def _levels_apart(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return int(diff.max()), float((diff != 0).mean())


@pytest.mark.parametrize("size", [2, 3, 6, 31, 40])
def test_the_torch_erosion_is_opencvs_bit_for_bit(size: int) -> None:
    rng = np.random.default_rng(size)
    mask = ((rng.random((57, 73)) > 0.1) * rng.random((57, 73))).astype(np.float32)
    mask[:, :5] = 1.0  # a border of ones: OpenCV ignores the taps outside the image
    ours = warp.erode_rect(torch.from_numpy(mask)[None, None], size)[0, 0].numpy()
    assert np.array_equal(ours, cv2.erode(mask, np.ones((size, size), np.uint8)))


def test_the_device_paste_follows_the_golden_restore(golden) -> None:  # type: ignore[no-untyped-def]
    out = FaceAligner(256, device="cpu").restore(golden["frame"], _generated(golden), golden["affine_matrix_256"])
    worst, share = _levels_apart(out, golden["restored_frame_256"])
    assert worst <= 1 and share <= 0.01  # the golden tolerance (tests/golden/test_faces_align.py)
    default = FaceAligner(256).restore(golden["frame"], _generated(golden), golden["affine_matrix_256"])
    worst, share = _levels_apart(out, default)
    assert worst <= 1 and share < 0.001  # a few pixels (if any) where a float32 sum's last bit decides the truncation


def test_the_device_paste_of_a_1080p_frame_changes_only_the_face_box(golden) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    frame[500:852, 900:1220] = golden["frame"]
    m = golden["affine_matrix_256"].copy()
    m[:, 2] -= m[:, :2] @ np.array([900.0, 500.0], np.float32)  # the same face, moved to (900, 500)
    face = _generated(golden)
    default, on_device = FaceAligner(256), FaceAligner(256, device="cpu")
    for paste in ("restore", "restore_delta"):
        change = face if paste == "restore" else (face - face.flip(-1)) / 4
        ours, theirs = (getattr(a, paste)(frame, change, m) for a in (on_device, default))
        worst, share = _levels_apart(ours, theirs)
        assert worst <= 1 and share < 1e-4, paste
        x0, y0, x1, y1 = default.paste_bounds(frame.shape[:2], m)
        outside = np.ones(frame.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(ours[outside], frame[outside]) and not np.array_equal(ours, frame)
    # the face may arrive on the device already (the renderer's decoded faces): the same result
    assert np.array_equal(on_device.restore(frame, face.to("cpu"), m), on_device.restore(frame, face.numpy(), m))


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with tiny_models(tmp_path_factory.mktemp("models"), "inference.window=4") as env:
        yield env


def test_a_sync_with_gpu_paste_is_the_default_within_a_level(tiny_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, models = tiny_env
    frames = sample_frames(8, scale=0.75)
    frames[5] = np.full_like(frames[5], 90)  # a faceless frame: the source's own either way
    video = write_clip(tmp_path / "v.mkv", frames, Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.32)
    outs = {}
    for on in ("false", "true"):
        out = tmp_path / on / "o.mkv"
        res = sync_clip(video, audio, out, with_sets(config, f"inference.gpu_paste={on}", "output.codec=ffv1",
                                                     "output.matte=true"), networks=models)
        assert res.frames == 8 and res.no_face_frames == 1
        outs[on] = (decode_rgb(out), decode_rgb(out.with_name("o.matte.mkv")))
    (base, base_matte), (ours, ours_matte) = outs["false"], outs["true"]
    for k in range(8):
        worst, share = _levels_apart(ours[k], base[k])
        assert worst <= 1 and share < 1e-3, k
        assert not np.array_equal(base[k], frames[k]) or k == 5  # the faces were re-rendered
        assert _levels_apart(ours_matte[k], base_matte[k])[0] <= 1
    assert np.array_equal(ours[5], base[5])


def test_gpu_paste_keeps_the_renders_made_before_it() -> None:
    """A timeline's content key: the option at its default is left out (renders made before it are still found);
    on, it is in the key (other pixels)."""
    from lipsyncctl.runner.store import config_for_key

    off, on = (cfg.resolve("latentsync-1.5", [f"inference.gpu_paste={v}"]).to_dict() for v in ("false", "true"))
    assert "gpu_paste" not in config_for_key(off)["inference"]
    assert config_for_key(on)["inference"]["gpu_paste"] is True
    assert "sequence_fps" not in config_for_key(off)["sync"]  # a later key a shot's file never reads
    assert "first_number" not in config_for_key(off)["output"]  # nor a shot's render (a video file)
    assert "png_level" not in config_for_key(off)["output"]


@pytest.mark.gpu
def test_the_cuda_paste_is_the_cpu_device_paste_within_a_level(golden) -> None:  # type: ignore[no-untyped-def]
    frame, m, face = golden["frame"], golden["affine_matrix_256"], _generated(golden)
    on_gpu = FaceAligner(256, device="cuda").restore(frame, face.cuda(), m)
    worst, share = _levels_apart(on_gpu, FaceAligner(256, device="cpu").restore(frame, face, m))
    assert worst <= 1 and share < 0.001
