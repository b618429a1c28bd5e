"""Per-clip whisper features and the per-video-frame audio chunks the UNet attends to.

Reproduces ``Audio2Feature.audio2feat`` and ``feature2chunks`` of the official LatentSync
(``latentsync/whisper/audio2feature.py``):

- **Features** ``(L, 5, 384)``, 50 per second: the log-mel of the whole clip (one ``max - 8`` clamp
  for the whole file) is walked in windows of 3000 mel frames (30 s); each window is zero-padded to
  3000 frames *after* normalisation, encoded, and only ``int(real_frames / 2)`` encoder frames are
  kept. The padding matters: the encoder attends over all 1500 positions.
- **Chunks** ``(n_frames, 50, 384)``: for video frame ``i`` the ``2 * (left + right + 1)`` feature
  frames around it (10 for the official ``audio_feat_length = [2, 2]``), each contributing its 5
  hidden states: token ``t`` = feature frame ``idx[t // 5]``, hidden state ``t % 5``.

Chunk indexing rule (documented choice for frame rates other than 25 fps):
    centre ``c_i = floor(i * 50 / fps + 1/2)`` (the feature frame nearest to the frame time
    ``i / fps``, computed exactly with fractions, ties rounded up), indices
    ``c_i - 2 * left .. c_i + 2 * (right + 1) - 1``, each clamped to ``[0, L - 1]``.
At 25 fps ``c_i = 2 i`` exactly, which is the official ``int(i * 50 / 25)``, so the chunks are the
official ones bit for bit; at other rates the source frame rate is kept and audio is indexed by time.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipsyncctl.audio import MODEL_FPS
from lipsyncctl.audio.mel import HOP_LENGTH, LogMel
from lipsyncctl.media.rates import exact

if TYPE_CHECKING:
    import torch

    from lipsyncctl.nets.whisper import WhisperFeatureEncoder

FEATURES_PER_SECOND = 50
DEFAULT_FEAT_LENGTH = (2, 2)


def official_num_chunks(num_features: int) -> int:
    """Number of chunks the official ``feature2chunks(fps=25)`` returns for ``L`` feature frames.

    ``floor(L / 2) + 2`` (it stops after the first ``i`` with ``2 i > L``); the official pipeline uses
    it as the output frame count (e.g. 77 for 3 s, two more than the 75 video frames).
    """
    if num_features < 0:
        raise ValueError(f"num_features must be >= 0, got {num_features}")
    return num_features // 2 + 2


def num_features_for_samples(num_samples: int) -> int:
    """Feature frames ``L`` produced for ``num_samples`` samples at 16 kHz (``(n // 160) // 2`` summed
    per 30 s window, exactly like the windowing in :func:`audio_features`)."""
    mel_frames = num_samples // HOP_LENGTH
    full, rest = divmod(mel_frames, 3000)
    return full * 1500 + rest // 2


def chunk_indices(
    num_features: int,
    n_frames: int,
    fps: Fraction | int | float = MODEL_FPS,
    feat_length: tuple[int, int] = DEFAULT_FEAT_LENGTH,
    start: int = 0,
) -> torch.Tensor:
    """Feature-frame indices of the chunks of video frames ``start .. start + n_frames - 1``.

    Args:
        num_features: ``L``, the number of feature frames (50 per second).
        n_frames: how many video frames.
        fps: video frame rate; pass a ``Fraction`` (e.g. ``Fraction(30000, 1001)``) for exactness.
        feat_length: ``(left, right)`` video frames of context, official ``(2, 2)``.
        start: index of the first video frame.

    Returns:
        int64 tensor ``(n_frames, 2 * (left + right + 1))`` of indices in ``[0, L - 1]``
        (rule in the module docstring).
    """
    import torch

    if num_features <= 0:
        raise ValueError("no audio features (empty or too short audio)")
    if n_frames < 0 or start < 0:
        raise ValueError(f"n_frames and start must be >= 0, got {n_frames}, {start}")
    left, right = (int(v) for v in feat_length)
    rate = exact(fps)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = Fraction(FEATURES_PER_SECOND) / rate  # feature frames per video frame
    frames = range(start, start + n_frames)
    centres = torch.tensor([int(i * step + Fraction(1, 2)) for i in frames], dtype=torch.int64)
    offsets = torch.arange(-2 * left, 2 * (right + 1), dtype=torch.int64)
    return (centres[:, None] + offsets[None, :]).clamp_(0, num_features - 1)


def rows_for_frames(
    n_frames: int,
    fps: Fraction | int | float = MODEL_FPS,
    feat_length: tuple[int, int] = DEFAULT_FEAT_LENGTH,
) -> int:
    """Feature rows that video frames ``0 .. n_frames - 1`` read (:func:`chunk_indices` before its clamp): the
    last frame's centre plus its right context. With at least these rows, or all ``L`` when there are fewer,
    their chunks are the same as with all ``L`` rows (the clamp to ``L - 1`` only moves indices past them)."""
    if n_frames <= 0:
        return 0
    return int(chunk_indices(1 << 62, 1, fps, feat_length, start=n_frames - 1).max()) + 1


def feature_chunks(
    features: torch.Tensor,
    n_frames: int,
    fps: Fraction | int | float = MODEL_FPS,
    feat_length: tuple[int, int] = DEFAULT_FEAT_LENGTH,
    start: int = 0,
) -> torch.Tensor:
    """Audio conditioning for video frames ``start .. start + n_frames - 1``.

    Args:
        features: ``(L, H, D)`` whisper features (``H = 5`` hidden states, ``D = 384`` for tiny).
        n_frames, fps, feat_length, start: see :func:`chunk_indices`.

    Returns:
        ``(n_frames, 2 * (left + right + 1) * H, D)``, i.e. ``(n_frames, 50, 384)`` officially,
        same dtype/device as ``features``. Use ``start``/``n_frames`` to build one batch at a time.
    """
    if features.ndim != 3:
        raise ValueError(f"expected features (L, H, D), got shape {tuple(features.shape)}")
    idx = chunk_indices(features.shape[0], n_frames, fps, feat_length, start).to(features.device)
    gathered = features[idx]  # (n, K, H, D)
    return gathered.reshape(n_frames, -1, features.shape[-1])


#: The fewest 16 kHz samples :func:`audio_features` takes: two mel frames, one feature row (0.02 s; more than
#: the STFT's reflect padding of ``N_FFT // 2``).
MIN_SAMPLES = 2 * HOP_LENGTH

#: Feature rows (50 per second) above which :func:`audio_features` keeps them on disk when given a folder:
#: 2 minutes, 46 MB of float32.
SPILL_ROWS = 50 * 120


def audio_features(
    encoder: WhisperFeatureEncoder,
    audio_16k: np.ndarray | torch.Tensor,
    batch_size: int = 4,
    *,
    folder: str | Path | None = None,
    length: int | None = None,
    rows: int | None = None,
) -> torch.Tensor:
    """Whisper features of a whole clip, exactly as the official ``audio2feat``.

    Args:
        encoder: a :class:`~lipsyncctl.nets.whisper.WhisperFeatureEncoder` (its device and dtype are
            used for the encoder pass; the log-mel is computed on the CPU in float32).
        audio_16k: mono samples at 16 kHz, ``(n,)`` float in ``[-1, 1]`` or PCM16 integers; a sound mapped
            from a file is read a window at a time (:class:`~lipsyncctl.audio.mel.LogMel`), never held whole.
        batch_size: 30 s windows encoded per forward pass.
        folder: where features of more than :data:`SPILL_ROWS` rows are kept, in an unnamed file mapped into
            memory (:func:`~lipsyncctl.media.audio.scratch_samples`: an hour of audio's 1.4 GB costs disk,
            not memory); None keeps them in memory.
        length: the clip's length in samples when it is longer than ``audio_16k``: silence after it (the
            features of ``audio_16k`` padded with zeros to ``length``).
        rows: only the first ``rows`` feature rows (:func:`rows_for_frames`: what a picture shorter than the
            sound reads). Only the 30 s windows that hold them are encoded, each whole, and the log-mel keeps the
            whole clip's clamp: the rows are the first ones of the whole computation, bit for bit.

    Returns:
        float32 CPU tensor ``(L, 5, 384)``, ``L = num_features_for_samples(n)`` (50 per second), or
        ``min(L, rows)`` rows.
    """
    import torch

    from lipsyncctl import progress

    total_samples = max(len(audio_16k), length or 0)
    if total_samples < MIN_SAMPLES:
        raise ValueError(f"audio too short for whisper features: {total_samples} samples (at least {MIN_SAMPLES})")
    mel = LogMel(audio_16k, length=length)  # normalised over the whole clip
    window = 2 * encoder.n_ctx  # 3000 mel frames = 30 s
    total = mel.frames
    starts = list(range(0, total, window))
    if rows is not None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        starts = starts[: -(-rows // (window // 2))]  # a window's rows start at its start / 2
    param = next(encoder.parameters())
    rows = min(sum(min(window, total - s) // 2 for s in starts), rows or total)
    out: torch.Tensor | None = None
    if folder is not None and rows > SPILL_ROWS:
        from lipsyncctl.media.audio import scratch_samples

        states_n, width = encoder.num_hidden_states, encoder.d_model
        out = torch.from_numpy(scratch_samples(rows, states_n * width, folder=folder)).view(rows, states_n, width)
    pieces: list[torch.Tensor] = []
    at = 0
    with torch.inference_mode(), progress.Task("whisper features", total=len(starts)) as task:
        for b in range(0, len(starts), batch_size):
            batch_starts = starts[b : b + batch_size]
            segs = []
            for s in batch_starts:
                seg = mel(s, min(s + window, total))
                segs.append(torch.nn.functional.pad(seg, (0, window - seg.shape[-1])))
            batch = torch.stack(segs).to(device=param.device, dtype=param.dtype)
            states = encoder(batch)  # (B, 5, n_ctx, D)
            for j, s in enumerate(batch_starts):
                keep = min(min(window, total - s) // 2, rows - at)
                piece = states[j, :, :keep].transpose(0, 1).to("cpu", torch.float32)
                if out is None:
                    pieces.append(piece)
                else:
                    out[at : at + keep] = piece
                at += keep
            task.advance(len(batch_starts))
    return torch.cat(pieces, dim=0) if out is None else out
