"""Whisper log-mel spectrogram, as the official LatentSync audio path computes it.

The official code (``latentsync/whisper/whisper/audio.py``, vendored openai-whisper) computes, on the
CPU and in float32:

1. ``torch.stft(n_fft=400, hop=160, window=hann(400) periodic, center=True, pad_mode="reflect")``,
   dropping the last frame, so a clip of ``n`` samples gives ``n // 160`` frames (100 per second);
2. the power ``|X|^2`` through an 80-band Slaney mel filterbank (librosa's, shipped by openai-whisper
   as ``assets/mel_filters.npz``);
3. ``log10(max(x, 1e-10))``, then ``max(x, x.max() - 8)`` with the maximum taken over the **whole
   file** (not per 30 s window), then ``(x + 4) / 4``.

The filterbank is recomputed here with librosa's arithmetic (triangles in float64, rounded to float32,
then scaled in place by the float64 Slaney norms); it equals the official asset bit for bit, and so does
the Wav2Lip-style filterbank (``fmin 55, fmax 7600``, :mod:`lipsyncctl.audio.wav2lip_mel`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = freq / f_sp
    log_part = min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep
    return np.where(freq >= min_log_hz, log_part, linear)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = mels * f_sp
    log_part = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log_part, linear)


@functools.lru_cache(maxsize=8)
def mel_filters(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, float32 ``(n_mels, n_fft // 2 + 1)``.

    Bit for bit ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``
    (Slaney scale and area normalisation; ``fmax`` None = ``sample_rate / 2``). The defaults are whisper's
    ``mel_filters.npz``. The returned array is read-only (it is cached).
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel_slaney(float(fmin)), _hz_to_mel_slaney(fmax), n_mels + 2)
    hz_points = _mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)  # (n_mels + 1,)
    ramps = hz_points[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_bins)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    # librosa rounds the triangles to float32 first, then scales them in place (float32 *= float64):
    # the same two roundings give its filters bit for bit.
    out = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    out *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]  # Slaney: constant area per band
    out.setflags(write=False)
    return out


def as_float_audio(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mono samples as a float32 CPU tensor ``(n,)``; integer input is PCM16 and divided by 32768."""
    import torch

    if isinstance(audio, torch.Tensor):
        tensor = audio.detach().cpu()
    else:
        array = np.asarray(audio)
        if np.issubdtype(array.dtype, np.integer):
            # PCM16 samples, scaled like the official loader (int16 / 32768).
            array = array.astype(np.float32) / 32768.0
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got shape {tuple(tensor.shape)}")
    return tensor.to(torch.float32)


def log_mel_spectrogram(audio_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Official whisper log-mel of a whole clip.

    Args:
        audio_16k: mono samples at 16 kHz, shape ``(n,)``; float in ``[-1, 1]`` or integer PCM16
            (divided by 32768 like the official ``load_audio``).

    Returns:
        float32 CPU tensor ``(80, n // 160)``: normalised log-mel, 100 frames per second. The
        ``max - 8`` clamp uses the maximum of this whole clip, so computing it per window differs.

    The spectrum is taken :data:`STFT_BLOCK` frames at a time from the reflect-padded signal (what
    ``torch.stft(center=True)`` pads it to), without the whole clip's complex spectrum in memory at once
    (10 MB per minute of audio, where the log-mel itself is 2 MB). Up to one block (10 minutes) that is the
    official computation bit for bit; past it the blocks' sums may differ from one whole-clip product in the
    last bit of a float32.
    """
    import torch

    samples = as_float_audio(audio_16k)
    if samples.numel() <= N_FFT // 2:  # the reflect padding needs more samples than it pads on each side
        raise ValueError(f"audio too short for a log-mel spectrogram: {samples.numel()} samples "
                         f"(at least {N_FFT // 2 + 1})")
    window = torch.hann_window(N_FFT)
    filters = torch.from_numpy(np.array(mel_filters()))
    half = N_FFT // 2
    padded = torch.nn.functional.pad(samples[None, None], (half, half), mode="reflect")[0, 0]
    frames = samples.numel() // HOP_LENGTH  # the last frame of torch.stft is dropped, as in openai-whisper
    log_spec = torch.empty((N_MELS, frames), dtype=torch.float32)
    for a in range(0, frames, STFT_BLOCK):
        b = min(a + STFT_BLOCK, frames)
        piece = padded[a * HOP_LENGTH : (b - 1) * HOP_LENGTH + N_FFT]
        stft = torch.stft(piece, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        log_spec[:, a:b] = torch.clamp(filters @ (stft.abs() ** 2), min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


#: Spectrum frames computed at a time by :func:`log_mel_spectrogram` (10 minutes of audio: about 150 MB of
#: work arrays).
STFT_BLOCK = 60000
