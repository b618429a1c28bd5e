"""Golden vector train/1: the Wav2Lip-style mel of LatentSync training and its window slicing (official parity)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from lipsyncctl.audio.mel import mel_filters
from lipsyncctl.audio.wav2lip_mel import FMAX, FMIN, N_FFT, N_MELS, mel_window, wav2lip_mel, window_start
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"
VECTOR = GOLDEN / "train" / "wav2lip_mel.safetensors"

pytestmark = pytest.mark.skipif(not VECTOR.is_file(), reason=f"golden vector not found: {VECTOR}")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(VECTOR)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    with wave.open(str(GOLDEN / "whisper_input_3s.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_filterbank_is_librosas_bit_for_bit(golden) -> None:  # type: ignore[no-untyped-def]
    ours = mel_filters(N_MELS, N_FFT, 16000, FMIN, FMAX)
    assert ours.dtype == np.float32 and ours.shape == (80, 401)
    np.testing.assert_array_equal(ours, golden["mel_basis"])


def test_mel_matches_the_official_float64_within_1e_9(golden, samples) -> None:  # type: ignore[no-untyped-def]
    mel = wav2lip_mel(samples)
    assert mel.dtype == np.float64 and mel.shape == golden["mel"].shape == (80, 241)
    np.testing.assert_allclose(mel, golden["mel"], rtol=0, atol=1e-9)
    assert (mel == -4.0).sum() == (golden["mel"] == -4.0).sum()  # the clipped values are the same ones
    # float input (what decord returns) and a torch tensor are the same thing as PCM16
    as_float = samples.astype(np.float32) / 32768.0
    np.testing.assert_array_equal(wav2lip_mel(as_float), mel)
    np.testing.assert_array_equal(wav2lip_mel(torch.from_numpy(as_float)), mel)


def test_windows_are_cut_at_the_official_columns(golden, samples) -> None:  # type: ignore[no-untyped-def]
    mel = wav2lip_mel(samples)
    starts = [int(s) for s in golden["window_starts"]]
    assert [window_start(s) for s in starts] == [int(c) for c in golden["window_cols"]]
    assert all(window_start(s) == int(80.0 * (s / 25.0)) for s in range(0, 20001))
    windows = np.stack([mel_window(mel, s)[None] for s in starts])
    assert windows.shape == golden["mel_windows"].shape == (3, 1, 80, 52)
    np.testing.assert_allclose(windows, golden["mel_windows"], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="runs past"):
        mel_window(mel, 60)  # 192 + 52 > 241 columns: the official dataset redraws this start
