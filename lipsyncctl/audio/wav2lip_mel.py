"""The Wav2Lip-style mel spectrogram of LatentSync training (SyncNet input and the UNet's sync loss).

Reproduces ``latentsync/utils/audio.py melspectrogram`` with ``configs/audio.yaml`` (LATENTSYNC.md §3.3,
golden vector ``golden/train/wav2lip_mel``), in float64 like the official numpy code:

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``scipy.signal.lfilter([1, -0.97], [1], x)``, ``y[0] = x[0]``);
2. ``librosa.stft(n_fft=800, hop=200, win=800)``: periodic Hann, ``center=True`` with **zero** padding of
   400 samples each side (librosa >= 0.10), so ``n`` samples give ``1 + n // 200`` columns (80 per second);
3. magnitude through librosa's Slaney filterbank (80 bands, 55-7600 Hz, float32 weights);
4. ``20 log10(max(1e-5, M)) - 20`` (``min_level_db -100``, ``ref_level_db 20``);
5. symmetric normalisation ``clip(8 (S + 100) / 100 - 4, -4, 4)``.

At 25 fps a video frame is 3.2 columns; the datasets cut the window of 16 frames starting at frame ``s``
as columns ``int(80 s / 25) .. +52`` of the mel of the **whole clip** (:func:`mel_window`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lipsyncctl.audio import MODEL_AUDIO_RATE
from lipsyncctl.audio.mel import mel_filters

if TYPE_CHECKING:
    import torch

N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
COLUMNS_PER_SECOND = MODEL_AUDIO_RATE // HOP_LENGTH  # 80
#: columns of the window the official datasets cut for 16 video frames: ceil(16 / 5 * 16)
WINDOW_COLUMNS = 52

_BLOCK = 4096  # STFT columns per block: bounds the memory of long clips (one block is ~26 MB)


def _samples(audio_16k: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mono float64 samples; PCM16 integers are divided by 32768 and floats rounded to float32 first,
    which is what the official loader (decord, float32) hands to the float64 numpy code."""
    array = audio_16k.detach().cpu().numpy() if hasattr(audio_16k, "detach") else np.asarray(audio_16k)
    if array.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got shape {array.shape}")
    if array.size == 0:
        raise ValueError("cannot compute a mel spectrogram of empty audio")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.float32(32768.0)
    return array.astype(np.float32).astype(np.float64)


def wav2lip_mel(audio_16k: np.ndarray | torch.Tensor) -> np.ndarray:
    """The official Wav2Lip-style mel of a whole clip.

    Args:
        audio_16k: mono samples at 16 kHz, ``(n,)``: float in ``[-1, 1]`` or PCM16 integers.

    Returns:
        float64 ``(80, 1 + n // 200)`` in ``[-4, 4]``; column ``c`` is centred on sample ``200 c``
        (80 columns per second, 3.2 per 25 fps frame).
    """
    x = _samples(audio_16k)
    y = x.copy()
    y[1:] -= PREEMPHASIS * x[:-1]  # lfilter([1, -0.97], [1], x)
    padded = np.pad(y, (N_FFT // 2, N_FFT // 2))  # center=True, zero padding (librosa >= 0.10)
    n_cols = 1 + y.size // HOP_LENGTH
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # periodic Hann
    basis = mel_filters(N_MELS, N_FFT, MODEL_AUDIO_RATE, FMIN, FMAX)  # float32, promoted like np.dot does
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]  # (n_cols, 800) view
    mel = np.empty((N_MELS, n_cols), dtype=np.float64)
    for c in range(0, n_cols, _BLOCK):
        magnitude = np.abs(np.fft.rfft(frames[c : c + _BLOCK] * window, axis=-1))  # (block, 401)
        mel[:, c : c + _BLOCK] = basis @ magnitude.T
    min_level = np.exp(MIN_LEVEL_DB / 20.0 * np.log(10.0))  # 1e-5, computed as the official code does
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def window_start(frame: int, fps: int = 25) -> int:
    """First mel column of video frame ``frame``: the official ``int(80.0 * (frame / 25.0))``, computed
    exactly as ``(80 * frame) // 25`` (equal for every frame up to 200 000, golden sidecar)."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    return (COLUMNS_PER_SECOND * frame) // fps


def mel_window(mel: np.ndarray, frame: int, columns: int = WINDOW_COLUMNS, fps: int = 25) -> np.ndarray:
    """The official training window: ``mel[:, window_start(frame) : + columns]``, ``(80, columns)``.

    Raises:
        ValueError: the window runs past the end of ``mel`` (the official datasets redraw such a start).
    """
    start = window_start(frame, fps)
    if start + columns > mel.shape[-1]:
        raise ValueError(f"mel window of frame {frame} (columns {start}..{start + columns}) runs past "
                         f"the mel's {mel.shape[-1]} columns")
    return mel[:, start : start + columns]
