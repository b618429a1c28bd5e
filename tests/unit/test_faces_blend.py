"""Paste-back blends (``faces.blend``): official stays golden, multiband keeps the support and lowers seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsyncctl import config as cfg
from lipsyncctl.errors import ConfigError
from lipsyncctl.faces.align import FaceAligner
from lipsyncctl.faces.blend import multiband_face, paste_face
from lipsyncctl.faces.mask import mouth_mask
from tests import blend_metrics as bm
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(shared_path("golden", "face_align_restore.safetensors")))


@pytest.fixture(scope="module")
def scene(golden):  # type: ignore[no-untyped-def]
    """The golden frame on a larger canvas (so there is plenty outside the face), its matrix, the aligned
    reference in [-1, 1], the mouth mask and the official support."""
    frame = np.random.default_rng(1).integers(0, 256, (480, 560, 3), dtype=np.uint8)
    frame[60:412, 150:470] = golden["frame"]
    matrix = golden["affine_matrix_256"].copy()
    matrix[:, 2] -= matrix[:, :2] @ np.array([150.0, 60.0], dtype=np.float32)
    aligner = FaceAligner(256, smooth=False)
    face_u8 = aligner.warp_crop(frame, matrix)
    import cv2

    face_u8 = cv2.resize(face_u8, (256, 256), interpolation=cv2.INTER_LANCZOS4)
    support = bm.official_weight(aligner, frame, matrix) > 0
    return aligner, frame, matrix, bm.to_unit(face_u8), mouth_mask(256), support


def test_official_mode_is_the_golden_restore(golden) -> None:  # type: ignore[no-untyped-def]
    generated = torch.from_numpy(golden["generated_face_u8"]).permute(2, 0, 1).float() / 255 * 2 - 1
    aligner = FaceAligner(256)
    out = paste_face(aligner, golden["frame"], generated, golden["affine_matrix_256"])
    assert np.array_equal(out, aligner.restore(golden["frame"], generated, golden["affine_matrix_256"]))
    diff = np.abs(out.astype(np.int32) - golden["restored_frame_256"].astype(np.int32))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.99


def test_multiband_keeps_pixels_outside_the_official_support(scene) -> None:  # type: ignore[no-untyped-def]
    aligner, frame, matrix, ref, keep, support = scene
    # A face unrelated to the reference (worst case for leakage): random values everywhere.
    wild = torch.rand((3, 256, 256), generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = paste_face(aligner, frame, wild, matrix, blend="multiband", reference=ref, keep_mask=keep)
    assert 0.05 < support.mean() < 0.6
    assert np.array_equal(out[~support], frame[~support])
    assert (out[support] != frame[support]).any()


def test_multiband_round_trip_is_exact(scene) -> None:  # type: ignore[no-untyped-def]
    aligner, frame, matrix, ref, keep, support = scene
    out = paste_face(aligner, frame, ref, matrix, blend="multiband", reference=ref, keep_mask=keep)
    assert np.array_equal(out, frame)
    official = paste_face(aligner, frame, ref, matrix)
    assert bm.psnr(official, frame, support) < 60  # the official restore re-samples the whole face


def test_multiband_lowers_the_seam_on_a_perturbed_face(scene) -> None:  # type: ignore[no-untyped-def]
    aligner, frame, matrix, ref, keep, support = scene
    face = bm.perturb(ref, keep, np.random.default_rng(0))
    weight = bm.official_weight(aligner, frame, matrix)
    mouth = bm.mouth_band(aligner, frame.shape[:2], matrix, keep) & support
    outer = support & (weight < 250)
    official = paste_face(aligner, frame, face, matrix)
    multiband = paste_face(aligner, frame, face, matrix, blend="multiband", reference=ref, keep_mask=keep)
    assert bm.seam(multiband, frame, mouth) < 0.8 * bm.seam(official, frame, mouth)
    assert bm.seam(multiband, frame, outer) < bm.seam(official, frame, outer)
    assert bm.psnr(multiband, frame, support) >= bm.psnr(official, frame, support)


def test_multiband_face_switches_over_at_the_mask() -> None:
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand((3, 64, 64), generator=gen) * 2 - 1
    face = torch.rand((3, 64, 64), generator=gen) * 2 - 1
    keep = np.ones((64, 64))
    keep[32:, :] = 0.0  # regenerate the lower half
    out = multiband_face(face, ref, keep, levels=3)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :16], ref.numpy()[:, :16], atol=0.02)  # far inside "keep"
    np.testing.assert_allclose(out[:, 52:], face.numpy()[:, 52:], atol=0.02)  # far inside "regenerate"
    assert np.array_equal(multiband_face(ref, ref, keep), ref.numpy())


def test_paste_face_argument_errors(scene) -> None:  # type: ignore[no-untyped-def]
    aligner, frame, matrix, ref, keep, _ = scene
    with pytest.raises(ValueError, match="unknown blend"):
        paste_face(aligner, frame, ref, matrix, blend="poisson")
    with pytest.raises(ValueError, match="needs the reference"):
        paste_face(aligner, frame, ref, matrix, blend="multiband")


def test_config_blend_field() -> None:
    assert cfg.resolve("tiny").faces.blend == "official"
    assert cfg.resolve("tiny", ["faces.blend=multiband"]).faces.blend == "multiband"
    with pytest.raises(ConfigError, match="faces.blend"):
        cfg.resolve("tiny", ["faces.blend=poisson"])


def test_cli_blend_flag_maps_to_faces_blend(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from lipsyncctl.cli.main import main

    args = ["sync", "-i", str(tmp_path / "v.mp4"), "-a", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o.mp4"),
            "--preset", "tiny", "--blend", "multiband", "--print-config"]
    assert main(args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["faces"]["blend"] == "multiband"


def test_sync_with_multiband_keeps_pixels_outside_the_matte(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The pipeline honours faces.blend: a short tiny-preset run, FFV1 + matte, exact pixels outside."""
    from fractions import Fraction

    from lipsyncctl.pipeline.clip import sync_clip
    from tests.sync_media import decode_rgb, sample_frames, tiny_models, with_sets, write_clip, write_wav

    video = write_clip(tmp_path / "in.mkv", sample_frames(4, scale=0.75), Fraction(25))
    audio = write_wav(tmp_path / "dub.wav", 4 / 25, rate=16000, channels=1)
    with tiny_models(tmp_path / "models") as (config, models):
        res = sync_clip(video, audio, tmp_path / "out.mkv", with_sets(
            config, "output.codec=ffv1", "output.matte=true", "faces.blend=multiband"), networks=models)
    assert "blend: multiband" in res.run_yaml.read_text()
    src, got, mattes = decode_rgb(video), decode_rgb(res.output), decode_rgb(res.matte)
    assert len(got) == len(src) == 4
    for i in range(4):
        outside = mattes[i][..., 0] == 0
        assert np.array_equal(got[i][outside], src[i][outside]), f"frame {i}: pixels outside changed"
    assert any((got[i] != src[i]).any() for i in range(4))
