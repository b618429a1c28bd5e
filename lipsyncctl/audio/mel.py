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

from lipsyncctl.audio import MODEL_AUDIO_RATE

if TYPE_CHECKING:
    import torch

N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80


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
    sample_rate: int = MODEL_AUDIO_RATE,
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


def _float32(array: np.ndarray) -> np.ndarray:
    """Samples as float32; integers are PCM16, scaled like the official loader (int16 / 32768)."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / 32768.0
    return array.astype(np.float32, copy=False)


class LogMel:
    """The official whisper log-mel of a whole clip (:func:`log_mel_spectrogram`), read a range of frames at a
    time, so a film's sound (a file mapped from disk: :func:`lipsyncctl.media.audio.read_audio`) is never held
    whole, in any form.

    The spectrum is taken :data:`STFT_BLOCK` frames at a time from the reflect-padded signal (what
    ``torch.stft(center=True)`` pads it to), only that block's samples gathered. The ``max - 8`` clamp needs the
    whole clip's maximum: a clip of more than one block is passed over once for it, then each block is computed
    again when a range in it is read (the last block kept). Up to one block (1 minute) that is the official
    computation bit for bit; past it the blocks' sums may differ from one whole-clip product in the last bit of a
    float32 (every block's values are the same whatever is read when).

    Args:
        audio_16k: mono samples at 16 kHz, ``(n,)``; float in ``[-1, 1]`` or integer PCM16 (divided by 32768
            like the official ``load_audio``); a torch tensor is taken as float.
        length: the clip's length in samples when it is longer than ``audio_16k``: silence after it.
    """

    def __init__(self, audio_16k: np.ndarray | torch.Tensor, *, length: int | None = None) -> None:
        import torch

        if isinstance(audio_16k, torch.Tensor):
            audio_16k = audio_16k.detach().cpu().to(torch.float32).numpy()
        self.samples = np.asarray(audio_16k)
        if self.samples.ndim != 1:
            raise ValueError(f"expected mono audio of shape (samples,), got shape {self.samples.shape}")
        self.length = max(self.samples.size, length or 0)
        if self.length <= N_FFT // 2:  # the reflect padding needs more samples than it pads on each side
            raise ValueError(f"audio too short for a log-mel spectrogram: {self.length} samples "
                             f"(at least {N_FFT // 2 + 1})")
        self.frames = self.length // HOP_LENGTH  # the last frame of torch.stft is dropped, as in openai-whisper
        self._held: tuple[int, torch.Tensor] | None = None  # (block, its log10 spectrum)
        self._peak: torch.Tensor | None = None

    def __call__(self, first: int, stop: int) -> torch.Tensor:
        """The normalised log-mel of frames ``first .. stop - 1``: float32 ``(80, stop - first)``."""
        import torch

        if not 0 <= first <= stop <= self.frames:
            raise ValueError(f"frames {first}..{stop} outside 0..{self.frames}")
        peak = self.peak()
        parts = []
        for k in range(first // STFT_BLOCK, -(-stop // STFT_BLOCK)):
            spec = self._block(k)
            a = max(first - k * STFT_BLOCK, 0)
            parts.append(spec[:, a : min(stop - k * STFT_BLOCK, spec.shape[1])])
        log_spec = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0

    def peak(self) -> torch.Tensor:
        """The clip's largest log10 mel power (a float32 scalar)."""
        if self._peak is None:
            blocks = -(-self.frames // STFT_BLOCK)
            self._peak = max((self._block(k).max() for k in range(blocks)), key=float)
        return self._peak

    def _block(self, k: int) -> torch.Tensor:
        """``log10(max(mel power, 1e-10))`` of block ``k``'s frames."""
        import torch

        if self._held is not None and self._held[0] == k:
            return self._held[1]
        a, b = k * STFT_BLOCK, min((k + 1) * STFT_BLOCK, self.frames)
        piece = torch.from_numpy(self._padded(a * HOP_LENGTH, (b - 1) * HOP_LENGTH + N_FFT))
        stft = torch.stft(piece, N_FFT, HOP_LENGTH, window=_hann(), center=False, return_complex=True)
        spec = torch.clamp(_filters() @ (stft.abs() ** 2), min=1e-10).log10()
        self._held = (k, spec)
        return spec

    def _padded(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo .. hi - 1`` of the reflect-padded clip (``N_FFT // 2`` samples reflected at each end),
        float32."""
        half, n, length = N_FFT // 2, self.samples.size, self.length
        lo, hi = lo - half, hi - half  # in the clip's own samples
        out = np.zeros(hi - lo, np.float32)
        a, b = max(lo, 0), min(hi, n)
        if a < b:
            out[a - lo : b - lo] = _float32(self.samples[a:b])
        edges = np.concatenate([np.arange(lo, min(hi, 0)), np.arange(max(length, lo), hi)])
        if edges.size:  # reflected: -i before the start, 2 (length - 1) - i after the end
            source = np.where(edges < 0, -edges, 2 * (length - 1) - edges)
            real = source < n
            out[edges[real] - lo] = _float32(self.samples[source[real]])
        return out


@functools.cache
def _hann() -> torch.Tensor:
    import torch

    return torch.hann_window(N_FFT)


@functools.cache
def _filters() -> torch.Tensor:
    import torch

    return torch.from_numpy(np.array(mel_filters()))


def log_mel_spectrogram(audio_16k: np.ndarray | torch.Tensor, *, length: int | None = None) -> torch.Tensor:
    """Official whisper log-mel of a whole clip.

    Args:
        audio_16k: mono samples at 16 kHz, shape ``(n,)``; float in ``[-1, 1]`` or integer PCM16
            (divided by 32768 like the official ``load_audio``).
        length: see :class:`LogMel`.

    Returns:
        float32 CPU tensor ``(80, n // 160)``: normalised log-mel, 100 frames per second. The
        ``max - 8`` clamp uses the maximum of this whole clip, so computing it per window differs
        (:class:`LogMel` reads it a window at a time, the same values).
    """
    mel = LogMel(audio_16k, length=length)
    return mel(0, mel.frames)


#: Spectrum frames computed at a time by :class:`LogMel` (1 minute of audio: about 15 MB of work arrays; a longer
#: clip's spectrum is computed twice, a small part of its whisper features' time).
STFT_BLOCK = 6000
