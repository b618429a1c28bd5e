"""A film's sound is never held whole: the whisper log-mel read a window at a time (LogMel), the features' silence
not made (``length``), the SyncNet MFCC read as the score's windows reach it (SyncStream). Each gives the values of
the whole-clip computation; the official parity of those is pinned by tests/golden."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncctl.audio import mel as mel_module
from lipsyncctl.audio import mfcc as mfcc_module
from lipsyncctl.audio.features import audio_features, chunk_indices, rows_for_frames
from lipsyncctl.audio.mel import LogMel, log_mel_spectrogram
from lipsyncctl.audio.mfcc import mfcc, num_mfcc_frames
from lipsyncctl.checkpoints.whisper import encoder_from_dims


def _sound(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a louder burst (the clip's maximum lies in one place) and 0.2 s of digital silence at the start
    (clamped to that maximum - 8), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * 16000)).astype(np.float32) * 0.05
    x[len(x) // 3 : len(x) // 3 + 4000] *= 8
    x[:3200] = 0
    return x


def _mapped(x: np.ndarray, folder: Path) -> np.ndarray:
    path = folder / "sound.f32"
    x.tofile(path)
    return np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)


def test_the_log_mel_read_by_ranges_is_the_whole_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LogMel's ranges (inside a block, across blocks, the ends) are the whole log-mel's columns bit for bit, over a
    sound mapped read-only from a file, for float and PCM16 input; the clamp uses the whole clip's maximum (a range
    without the loud burst is clamped by it)."""
    monkeypatch.setattr(mel_module, "STFT_BLOCK", 100)  # 1 s blocks: 7 of them
    x = _sound(6.7)
    whole = log_mel_spectrogram(x)
    assert whole.shape == (80, len(x) // 160)
    mel = LogMel(_mapped(x, tmp_path))
    for first, stop in ((0, 30), (95, 105), (250, 670), (600, 670), (0, 670), (40, 40)):
        assert torch.equal(mel(first, stop), whole[:, first:stop]), (first, stop)
    quiet = LogMel(x[: len(x) // 3 - 1000])  # without the burst: its own maximum, a different clamp
    assert not torch.equal(quiet(0, 100), whole[:, :100])
    pcm = np.round(x * 20000).astype(np.int16)
    assert torch.equal(LogMel(pcm)(0, 670), log_mel_spectrogram(pcm.astype(np.float32) / 32768.0))
    with pytest.raises(ValueError, match="outside"):
        mel(600, 671)


def test_silence_after_the_sound_is_not_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """``length`` past the samples is the log-mel and the whisper features of the sound padded with zeros, bit for
    bit: a pad shorter than the STFT's reflection (200 samples) reflects real samples back, as the padded array
    does."""
    monkeypatch.setattr(mel_module, "STFT_BLOCK", 64)
    x = _sound(1.3, seed=1)
    for extra in (50, 160, 1000):
        padded = np.concatenate([x, np.zeros(extra, np.float32)])
        assert torch.equal(log_mel_spectrogram(x, length=len(padded)), log_mel_spectrogram(padded)), extra
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 1}
    torch.manual_seed(0)
    enc = encoder_from_dims(dims)
    assert torch.equal(audio_features(enc, x, length=len(padded)), audio_features(enc, padded))


def test_the_features_of_a_mapped_sound_of_several_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whisper features of a sound of several STFT blocks and several 30 s windows, mapped from a file, are those
    of the same samples in memory (a window straddling two blocks included)."""
    monkeypatch.setattr(mel_module, "STFT_BLOCK", 1700)  # windows of 3000 mel frames straddle blocks
    x = _sound(64.3, seed=2)
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 32, "n_audio_head": 2, "n_audio_layer": 1}
    torch.manual_seed(0)
    enc = encoder_from_dims(dims)
    in_memory = audio_features(enc, x, batch_size=2)
    assert in_memory.shape[0] == 1500 * 2 + (len(x) // 160 - 6000) // 2
    assert torch.equal(audio_features(enc, _mapped(x, tmp_path), batch_size=2), in_memory)
    # Only the rows a picture reads: the windows that hold them, encoded whole (a smaller last batch too).
    windows: list[int] = []
    enc.register_forward_pre_hook(lambda _m, args: windows.append(args[0].shape[0]))
    for rows, encoded in ((1, 1), (1500, 1), (1501, 2), (3001, 3), (10**6, 3)):
        windows.clear()
        assert torch.equal(audio_features(enc, x, batch_size=2, rows=rows), in_memory[:rows]), rows
        assert sum(windows) == encoded, rows



def test_the_mfcc_of_a_range_is_the_whole_signals() -> None:
    """mfcc(frames=(a, b)) gives rows a..b of the whole signal's MFCC: bit for bit when a range starts on a block
    boundary (the whole signal's blocks), to the last bits of the FFT's sums elsewhere."""
    x = np.round(_sound(3.1, seed=3) * 20000).astype(np.int16)
    n = num_mfcc_frames(x.size)
    whole = mfcc(x, block=100)
    assert np.array_equal(mfcc(x, block=100, frames=(100, n)), whole[100:])
    assert np.array_equal(mfcc(x, block=100, frames=(200, 300)), whole[200:300])
    np.testing.assert_allclose(mfcc(x, block=100, frames=(37, 211)), whole[37:211], rtol=0, atol=1e-9)
    assert mfcc(x, frames=(5, 5)).shape == (0, 13)
    with pytest.raises(ValueError, match="outside"):
        mfcc(x, frames=(0, n + 1))


def test_the_score_reads_the_sound_as_its_windows_reach_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SyncStream computes the MFCC a block at a time as the windows need it, holding two blocks: the distances of a
    sound mapped from a file with 1 s blocks equal those of the same sound in memory with the default 60 s blocks
    (the MFCC rows' last bits aside), and it never holds more than two blocks."""
    from lipsyncctl.nets.syncnet_eval import SyncNetEval
    from lipsyncctl.scoring.lse import SyncStream

    torch.manual_seed(0)
    model = SyncNetEval()
    rng = np.random.default_rng(4)
    frames = 60  # 2.4 s at 25 fps: 3 batches of windows, 3 MFCC blocks of 1 s
    crops = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(frames)]
    x = _sound(frames / 25, seed=4)

    def measure(sound: np.ndarray) -> tuple[torch.Tensor, int]:
        stream = SyncStream(model, sound, frames, batch_size=20)
        most = 0
        for crop in crops:
            stream.feed(crop)
            most = max(most, len(stream.cc))
        return stream.finish().mean_dists, most

    reference, _ = measure(x)
    monkeypatch.setattr(mfcc_module, "BLOCK_FRAMES", 100)
    blocked, most = measure(_mapped(x, tmp_path))
    torch.testing.assert_close(blocked, reference, rtol=0, atol=1e-5)
    assert most == 2

def test_rows_for_frames_covers_every_chunk() -> None:
    """rows_for_frames is one past the largest index the frames' chunks read before the clamp, at 25 fps (the
    official 2 i) and at 30000/1001."""
    for fps, frames in ((Fraction(25), 1), (Fraction(25), 75), (Fraction(30000, 1001), 91)):
        rows = rows_for_frames(frames, fps)
        assert int(chunk_indices(10**9, frames, fps).max()) + 1 == rows
        assert torch.equal(chunk_indices(rows, frames, fps), chunk_indices(10**9, frames, fps))
    assert rows_for_frames(75, Fraction(25)) == 2 * 74 + 6
    assert rows_for_frames(0) == 0
