"""MFCC as ``python_speech_features.mfcc`` computes it with its defaults (the SyncNet eval input).

syncnet_python (and LatentSync's ``eval/syncnet``) feeds ``mfcc(int16_samples, 16000)`` to the audio
tower. The defaults, reproduced here in float64 numpy:

- pre-emphasis 0.97 (``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``);
- frames of 400 samples (25 ms) every 160 (10 ms), rectangular window, ``1 + ceil((n - 400) / 160)``
  frames with the last one zero-padded;
- power spectrum ``|rfft(frame, 512)|^2 / 512``; frame energy = its sum;
- 26 triangular filters with unit peak on the HTK mel scale ``2595 log10(1 + f / 700)`` between
  0 and 8000 Hz, edges at FFT bins ``floor((512 + 1) * hz / 16000)``;
- zeros replaced by machine epsilon, natural log, DCT-II (orthonormal), first 13 coefficients,
  sinusoidal lifter 22, coefficient 0 replaced by the log frame energy.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lipsyncctl.audio import MODEL_AUDIO_RATE

WINLEN_SAMPLES = 400
WINSTEP_SAMPLES = 160
NFFT = 512
NFILT = 26
NUMCEP = 13
CEPLIFTER = 22
PREEMPH = 0.97


def _hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=4)
def _filterbank(nfilt: int, nfft: int, sample_rate: int) -> np.ndarray:
    """``(nfilt, nfft // 2 + 1)`` triangular filters with unit peaks (python_speech_features layout)."""
    mel_points = np.linspace(_hz_to_mel_htk(0.0), _hz_to_mel_htk(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz_htk(mel_points) / sample_rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(lo, mid):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(mid, hi):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=4)
def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a ``(n_in, n_out)`` matrix (``x @ M`` = ``scipy.fft.dct(x, norm='ortho')[:n_out]``)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    mat[:, 0] /= math.sqrt(2.0)
    mat.setflags(write=False)
    return mat


def num_mfcc_frames(num_samples: int) -> int:
    """Frames ``mfcc`` returns for ``num_samples`` samples (100 per second)."""
    if num_samples <= WINLEN_SAMPLES:
        return 1
    return 1 + math.ceil((num_samples - WINLEN_SAMPLES) / WINSTEP_SAMPLES)


#: MFCC frames computed together (60 s): the work arrays of a block (its frames and power spectra, about 30 MB)
#: bound the memory whatever the sound's length
BLOCK_FRAMES = 6000


def mfcc(signal: np.ndarray, sample_rate: int = MODEL_AUDIO_RATE, *, scale: float = 1.0,
         block: int = BLOCK_FRAMES, frames: tuple[int, int] | None = None) -> np.ndarray:
    """``python_speech_features.mfcc(signal * scale, sample_rate)`` with its defaults.

    Args:
        signal: mono samples ``(n,)``; syncnet feeds raw int16 values (not divided by 32768): ``scale`` 32768
            takes float samples in ``[-1, 1]`` there, block by block (no float64 copy of the whole sound).
        sample_rate: only 16 kHz is what SyncNet was trained on; the window sizes are fixed in samples
            for 16 kHz (25 ms / 10 ms).
        block: frames computed together; every frame's value is the same whatever the blocks (a frame reads
            its 400 samples and the one before them, for the pre-emphasis), up to the last bits of the FFT's
            and the products' sums (the same blocks give the same bits).
        frames: only frames ``first .. stop - 1`` (None: all), in blocks from ``first``: a sound read a block
            at a time (``first`` a multiple of ``block`` gives the whole signal's blocks).

    Returns:
        float64 ``(num_frames, 13)`` (``(stop - first, 13)`` with ``frames``), rows are 10 ms steps (transpose
        for the ``(13, T)`` SyncNet layout).
    """
    if sample_rate != MODEL_AUDIO_RATE:
        raise ValueError(f"the SyncNet MFCC is defined at 16 kHz, got {sample_rate} Hz")
    x = np.asarray(signal)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected non-empty mono samples (n,), got shape {x.shape}")
    n_frames = num_mfcc_frames(x.size)
    lo, hi = frames if frames is not None else (0, n_frames)
    if not 0 <= lo <= hi <= n_frames:
        raise ValueError(f"frames {lo}..{hi} outside 0..{n_frames}")
    out = np.empty((hi - lo, NUMCEP))
    for f0 in range(lo, hi, block):
        f1 = min(hi, f0 + block)
        first = f0 * WINSTEP_SAMPLES
        seg = x[max(first - 1, 0): min((f1 - 1) * WINSTEP_SAMPLES + WINLEN_SAMPLES, x.size)].astype(np.float64) * scale
        # pre-emphasis: y[0] = x[0], y[n] = x[n] - 0.97 x[n-1] (a later block starts one sample early for x[n-1])
        emphasised = np.concatenate([seg[:1], seg[1:] - PREEMPH * seg[:-1]]) if first == 0 else seg[1:] - PREEMPH * seg[:-1]
        padded_len = (f1 - 1 - f0) * WINSTEP_SAMPLES + WINLEN_SAMPLES
        padded = np.concatenate([emphasised, np.zeros(padded_len - emphasised.size)])  # the last frames: zeros
        idx = np.arange(WINLEN_SAMPLES)[None, :] + WINSTEP_SAMPLES * np.arange(f1 - f0)[:, None]
        out[f0 - lo : f1 - lo] = _cepstra(padded[idx], sample_rate)
    return out


def _cepstra(frames: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(F, 400)`` pre-emphasised frames -> ``(F, 13)`` liftered cepstra with the log energy as coefficient 0."""
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = power @ _filterbank(NFILT, NFFT, sample_rate).T
    feat = np.where(feat == 0, eps, feat)
    cep = np.log(feat) @ _dct_matrix(NFILT, NUMCEP)
    lift = 1 + (CEPLIFTER / 2.0) * np.sin(np.pi * np.arange(NUMCEP) / CEPLIFTER)
    cep = cep * lift
    cep[:, 0] = np.log(energy)
    return cep
