"""Golden vector 3: whisper log-mel, encoder hidden states and per-frame chunks (official parity)."""

from __future__ import annotations

import json
import wave
from fractions import Fraction

import numpy as np
import pytest
import torch

from lipsyncctl.audio.features import (
    MIN_SAMPLES,
    audio_features,
    chunk_indices,
    feature_chunks,
    num_features_for_samples,
    official_num_chunks,
)
from lipsyncctl.audio.mel import log_mel_spectrogram, mel_filters
from lipsyncctl.checkpoints.whisper import encoder_from_dims, encoder_from_openai
from lipsyncctl.nets.whisper import WhisperFeatureEncoder
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"

pytestmark = pytest.mark.skipif(
    not (GOLDEN / "whisper_features.safetensors").is_file(),
    reason=f"golden vectors not found under {GOLDEN}",
)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(GOLDEN / "whisper_features.safetensors")


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    with wave.open(str(GOLDEN / "whisper_input_3s.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def encoder() -> WhisperFeatureEncoder:
    from safetensors.torch import load_file

    dims = json.loads((GOLDEN / "whisper_features.json").read_text())["config"]["dims"]
    weights = load_file(GOLDEN / "whisper_tiny_encoder_fp16.safetensors")
    assert all(v.dtype == torch.float16 for v in weights.values())
    return encoder_from_openai({"dims": dims, "model_state_dict": weights})


def test_mel_filterbank_matches_official_asset(golden):
    ours = mel_filters()
    assert ours.shape == (80, 201) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, golden["mel_filters"].numpy(), rtol=0, atol=1e-8)


def test_log_mel_matches_golden(golden, samples):
    mel = log_mel_spectrogram(samples)
    assert mel.shape == (80, 300) and mel.dtype == torch.float32
    torch.testing.assert_close(mel, golden["log_mel"], atol=1e-4, rtol=0)
    # float input in [-1, 1] is the same thing as PCM16 input
    mel_f = log_mel_spectrogram(torch.from_numpy(samples.astype(np.float32) / 32768.0))
    torch.testing.assert_close(mel_f, mel, atol=0, rtol=0)


def test_encoder_hidden_states_match_golden(golden, encoder):
    mel = torch.nn.functional.pad(golden["log_mel"], (0, 3000 - 300))[None]
    with torch.inference_mode():
        states = encoder(mel)
    assert states.shape == (1, 5, 1500, 384)
    feats = states[0, :, :150].transpose(0, 1)
    torch.testing.assert_close(feats, golden["features"], atol=1e-4, rtol=1e-4)


def test_audio_features_end_to_end(golden, samples, encoder):
    feats = audio_features(encoder, samples)
    assert feats.shape == (150, 5, 384) and feats.dtype == torch.float32
    assert num_features_for_samples(samples.size) == 150
    torch.testing.assert_close(feats, golden["features"], atol=1e-4, rtol=1e-4)
    # the last hidden state is the pre-ln_post block output: ln_post would normalise each row
    rows = feats[:, 4]
    assert rows.std(dim=-1).sub(1).abs().max() > 0.1


def test_chunk_indices_equal_official_table(golden):
    table = golden["chunk_feature_indices"]
    n = official_num_chunks(150)
    assert n == table.shape[0] == 77
    idx = chunk_indices(150, n, Fraction(25))
    assert torch.equal(idx, table)
    # integer fps and a start offset give the same rows
    assert torch.equal(chunk_indices(150, 10, 25, start=30), table[30:40])


def test_feature_chunks_exact(golden):
    feats = golden["features"]
    chunks = feature_chunks(feats, 77)
    assert chunks.shape == (77, 50, 384)
    assert torch.equal(chunks[:16], golden["chunks_0_15"])
    table = golden["chunk_feature_indices"]
    for i in (0, 1, 37, 75, 76):
        assert torch.equal(chunks[i], feats[table[i]].reshape(50, 384))
    assert torch.equal(feature_chunks(feats, 5, start=40), chunks[40:45])


def test_official_counts_for_demo_audio():
    # fixtures/demo1_audio.wav: 153 600 samples -> 960 mel -> 480 features -> 242 chunks
    assert num_features_for_samples(153_600) == 480
    assert official_num_chunks(480) == 242
    # two 30 s windows plus a partial one: 3000 + 3000 + 1001 mel frames
    assert num_features_for_samples(160 * 7001) == 1500 + 1500 + 500


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(24), Fraction(50), Fraction(30)])
def test_chunk_indices_follow_time_at_other_rates(fps):
    n = 200
    idx = chunk_indices(10_000, n, fps)
    centres = idx[:, 4]  # offset 0 of the (2, 2) window
    times = torch.arange(n, dtype=torch.float64) / float(fps)
    # centre feature frame is the one nearest to the frame time (50 feature frames per second)
    assert (centres.double() / 50 - times).abs().max() <= 0.01 + 1e-9
    inner = idx[centres >= 4]  # rows not clamped at the start: 10 consecutive frames
    assert torch.equal(inner - inner[:, :1], torch.arange(10).expand_as(inner))


def test_chunk_indices_clamp_at_both_ends():
    idx = chunk_indices(7, 6, Fraction(25))
    assert idx.min() == 0 and idx.max() == 6
    assert idx[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert idx[5].tolist() == [6] * 10


def test_multiwindow_features_keep_frame_count():
    gen = torch.Generator().manual_seed(0)
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 1}
    enc = encoder_from_dims(dims)
    audio = torch.randn(16000 * 31 + 480, generator=gen) * 0.1  # 31.03 s -> 3000 + 103 mel frames
    feats = audio_features(enc, audio, batch_size=1)
    assert feats.shape == (1500 + 51, 2, 64)
    assert num_features_for_samples(audio.numel()) == feats.shape[0]


def test_audio_shorter_than_the_minimum_is_a_clear_error():
    """Fewer than MIN_SAMPLES (two mel frames) is a ValueError naming the minimum, also below the STFT's reflect
    padding (torch's own error there); MIN_SAMPLES itself gives its one feature row."""
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 1}
    enc = encoder_from_dims(dims)
    for n in (1, 160, MIN_SAMPLES - 1):
        with pytest.raises(ValueError, match=f"at least {MIN_SAMPLES}"):
            audio_features(enc, torch.full((n,), 0.1))
    with pytest.raises(ValueError, match="too short for a log-mel"):
        log_mel_spectrogram(torch.full((200,), 0.1))
    assert audio_features(enc, torch.full((MIN_SAMPLES,), 0.1)).shape == (1, 2, 64)


def test_long_audio_features_are_kept_on_disk_and_the_same(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Past SPILL_ROWS rows (2 minutes) the features go to an unnamed mapped file in the given folder: the same
    values as in memory; the log-mel is taken STFT_BLOCK frames at a time, the same bit for bit up to one block
    and within a float32 rounding past it."""
    from lipsyncctl.audio import features as feats_module
    from lipsyncctl.audio import mel as mel_module

    gen = torch.Generator().manual_seed(1)
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 1}
    enc = encoder_from_dims(dims)
    audio = torch.randn(16000 * 31 + 480, generator=gen) * 0.1
    in_memory = audio_features(enc, audio, batch_size=1)
    monkeypatch.setattr(feats_module, "SPILL_ROWS", 100)
    on_disk = audio_features(enc, audio, batch_size=1, folder=tmp_path)
    assert torch.equal(on_disk, in_memory) and not any(tmp_path.iterdir())  # the file has no name
    ptr = on_disk.data_ptr()  # its memory is a mapping of a deleted file in tmp_path
    mapping = next(line for line in open("/proc/self/maps") if
                   int(line.split()[0].split("-")[0], 16) <= ptr < int(line.split()[0].split("-")[1], 16))
    assert str(tmp_path) in mapping and "(deleted)" in mapping
    whole = log_mel_spectrogram(audio)
    monkeypatch.setattr(mel_module, "STFT_BLOCK", 7)
    torch.testing.assert_close(log_mel_spectrogram(audio), whole, atol=1e-6, rtol=0)
