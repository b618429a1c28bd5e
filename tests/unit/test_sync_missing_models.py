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
