"""A preset whose weights are not installed fails at once with exit 4 and a fetch hint (no face pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.paths import DATA_DIR


def test_missing_official_weights_fail_fast_with_fetch_hint(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lipsyncctl.pipeline.faces as faces

    def no_face_pass(*args, **kwargs):  # the check must come before any expensive work
        raise AssertionError("face tracking ran although the model files are missing")

    monkeypatch.setattr(faces, "cached_clip_faces", no_face_pass)  # the face pass's one entry
    out = tmp_path / "out.mp4"
    code = main(["sync", "--video", str(DATA_DIR / "sample.mp4"), "--audio", str(DATA_DIR / "sample_dub.wav"),
                 "-o", str(out), "--preset", "latentsync-1.5"])
    err = capsys.readouterr().err
    assert code == 4
    assert "latentsync-1.5" in err and "not installed" in err
    assert "lipsyncctl models fetch latentsync-1.5" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [models_dir]


def test_unknown_model_name_is_not_mistaken_for_a_path(models_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sync", "--video", str(DATA_DIR / "sample.mp4"), "--audio", str(DATA_DIR / "sample_dub.wav"),
                 "-o", str(tmp_path / "o.mp4"), "--preset", "tiny", "--set", "model.vae=sd-vae-ft-mse-2.0"])
    err = capsys.readouterr().err
    assert code == 4
    assert "neither a known model nor an existing file" in err and "sd-vae-ft-mse" in err


def test_a_whisper_of_another_width_than_the_unet_reads_stops_at_load(tmp_path: Path) -> None:
    """It failed at the first window with a shape error (an internal error), after the face pass."""
    import torch

    from lipsyncctl import config as cfg
    from lipsyncctl.checkpoints.tiny import WHISPER_TINY_DIMS, tiny_whisper_state_dict
    from lipsyncctl.errors import CheckpointError
    from lipsyncctl.pipeline.networks import load_networks

    other = {**WHISPER_TINY_DIMS, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 2}
    path = tmp_path / "base.pt"
    torch.save({"dims": other, "model_state_dict": tiny_whisper_state_dict(torch.Generator().manual_seed(0), other)},
               path)
    with pytest.raises(CheckpointError, match="whisper features of width 64, the UNet .* reads 384") as err:
        load_networks(cfg.resolve("tiny", [f"model.whisper={path}"]))
    assert err.value.exit_code == 4


def test_a_mistyped_input_is_said_before_missing_weights(models_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --video or --audio is bad media (5), said before the preset's missing weights (4): a user would
    otherwise fetch gigabytes before learning the path was mistyped."""
    for video, audio, missing in ((tmp_path / "nope.mp4", DATA_DIR / "sample_dub.wav", "video"),
                                  (DATA_DIR / "sample.mp4", tmp_path / "nope.wav", "audio")):
        code = main(["sync", "--video", str(video), "--audio", str(audio), "-o", str(tmp_path / "o.mp4"),
                     "--preset", "latentsync-1.5"])
        err = capsys.readouterr().err
        assert code == 5 and f"{missing} file not found" in err and "not installed" not in err, err
