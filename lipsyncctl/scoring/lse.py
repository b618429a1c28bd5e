"""LSE-D / LSE-C / AV offset of one face track, as LatentSync's ``eval/syncnet/syncnet_eval.py`` computes it.

Official recipe (``SyncNetEval.evaluate``, from syncnet_python), for 25 fps video and 16 kHz audio:

1. Video: 224x224 BGR face crops, raw 0..255 floats; window ``v`` = frames ``v .. v + 4``.
2. Audio: ``python_speech_features.mfcc`` of the int16 samples (100 steps/s, 13 coefficients); window
   ``v`` = MFCC steps ``4v .. 4v + 19`` (the same 0.2 s).
3. ``min_length = min(frames, samples // 640)``; windows ``v = 0 .. min_length - 6`` (the last
   possible window is not used, as upstream).
4. Embed both with the ``S`` network (batches of 20; BatchNorm in eval mode).
5. Distances over offsets ``-vshift .. +vshift`` (15): ``dists[i, k] = ||lip[i] - aud[i + k - vshift] + 1e-6||``
   with zero audio embeddings beyond both ends (``torch.nn.functional.pad``).
6. ``mean_dists = dists.mean(0)``; **LSE-D** = ``min(mean_dists)``; **LSE-C** (confidence) =
   ``median(mean_dists) - min`` (the lower median); **offset** = ``vshift - argmin``. A positive offset
   means the best-matching audio window is that many frames *earlier* than the video window.

Other frame rates: the network's windows are defined in 25 fps frames, and the official evaluation
re-encodes every video to 25 fps. :func:`lse_scores` does the equivalent by picking, for each 25 fps
time ``k / 25``, the nearest source frame ``floor(k * fps / 25 + 1/2)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from lipsyncctl.audio import MODEL_AUDIO_RATE, MODEL_FPS
from lipsyncctl.errors import MediaError
from lipsyncctl.media.rates import exact

if TYPE_CHECKING:
    import torch

    from lipsyncctl.nets.syncnet_eval import SyncNetEval

EVAL_FPS = Fraction(MODEL_FPS)
WINDOW_FRAMES = 5
#: the official offset search: audio windows -15 .. +15 frames from each video window
VSHIFT = 15
MFCC_STEPS_PER_FRAME = 4  # 100 MFCC steps/s at 25 fps
MFCC_WINDOW = WINDOW_FRAMES * MFCC_STEPS_PER_FRAME  # 20
CROP_SIZE = 224


class LseScores(NamedTuple):
    """``lse_d`` (lower is better), ``lse_c`` (higher is better), ``offset`` in 25 fps frames."""

    lse_d: float
    lse_c: float
    offset: int


class _OffsetScores:
    """The scores read from the per-offset mean distances ``mean_dists`` ``(2 * vshift + 1,)``."""

    mean_dists: torch.Tensor
    vshift: int

    @property
    def min_dist(self) -> float:
        return float(self.mean_dists.min())

    @property
    def conf(self) -> float:
        return float(self.mean_dists.median() - self.mean_dists.min())

    @property
    def offset(self) -> int:
        return self.vshift - int(self.mean_dists.argmin())

    @property
    def scores(self) -> LseScores:
        return LseScores(lse_d=self.min_dist, lse_c=self.conf, offset=self.offset)


@dataclass(frozen=True)
class SyncDistances(_OffsetScores):
    """Everything the official evaluation computes for one track (tensors on the CPU, float32).

    ``im_feat``/``cc_feat``: ``(N, 1024)`` lip and audio embeddings of the ``N`` windows;
    ``dists``: ``(N, 2 * vshift + 1)``; ``mean_dists``: ``(2 * vshift + 1,)``.
    """

    im_feat: torch.Tensor
    cc_feat: torch.Tensor
    dists: torch.Tensor
    mean_dists: torch.Tensor
    vshift: int


@dataclass(frozen=True)
class MeanDistances(_OffsetScores):
    """What :class:`SyncStream` keeps of a track: the per-offset mean distances (float32 ``(2 * vshift + 1,)``)."""

    mean_dists: torch.Tensor
    vshift: int


def distance_table(im_feat: torch.Tensor, cc_feat: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """``(N, 2 * vshift + 1)`` distances: column ``k`` pairs video window ``i`` with audio window
    ``i + k - vshift`` (a zero vector outside ``0 .. N - 1``), ``||a - b + 1e-6||_2`` like
    ``F.pairwise_distance``."""
    import torch.nn.functional as F

    return _distances(im_feat, F.pad(cc_feat, (0, 0, vshift, vshift)), vshift)


def _distances(im_feat: torch.Tensor, padded: torch.Tensor, vshift: int) -> torch.Tensor:
    """:func:`distance_table` of ``n`` video windows against the audio windows ``i - vshift .. i + vshift`` of each:
    ``padded`` holds those ``n + 2 vshift`` audio embeddings (zeros where there is none)."""
    windows = padded.unfold(0, 2 * vshift + 1, 1).transpose(1, 2)  # (n, win, D)
    return (im_feat[:, None, :] - windows + 1e-6).norm(p=2, dim=-1)


def _pcm16_scale(audio_16k: np.ndarray | torch.Tensor) -> tuple[np.ndarray, float]:
    """The samples and the factor that puts them on the int16 scale the official MFCC receives (1 for integers,
    32768 for floats in [-1, 1]); :func:`~lipsyncctl.audio.mfcc.mfcc` applies it block by block."""
    array = audio_16k.detach().cpu().numpy() if hasattr(audio_16k, "detach") else np.asarray(audio_16k)
    if array.ndim != 1:
        raise MediaError(f"expected mono 16 kHz audio of shape (samples,), got {array.shape}")
    return array, 1.0 if np.issubdtype(array.dtype, np.integer) else 32768.0


def _crop_batch(frames: Sequence | np.ndarray | torch.Tensor, index: Sequence[int]) -> np.ndarray:
    """``(len(index), 224, 224, 3)`` uint8/float BGR crops, resized with cv2 (bilinear) like upstream
    if they are not 224x224."""
    out = []
    for i in index:
        img = frames[i]
        img = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3:
            raise MediaError(f"expected BGR face crops (H, W, 3), frame {i} has shape {img.shape}")
        if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
            import cv2

            img = cv2.resize(img, (CROP_SIZE, CROP_SIZE))
        out.append(img)
    return np.stack(out)


def sync_distances(
    model: SyncNetEval,
    frames_bgr: Sequence | np.ndarray | torch.Tensor,
    audio_16k: np.ndarray | torch.Tensor,
    *,
    vshift: int = VSHIFT,
    batch_size: int = 20,
) -> SyncDistances:
    """The official SyncNet evaluation of one face track at **25 fps**.

    Args:
        model: :class:`~lipsyncctl.nets.syncnet_eval.SyncNetEval` with loaded weights (put in eval mode
            here); its device and dtype are used.
        frames_bgr: ``T`` face crops ``(224, 224, 3)`` in BGR order (what ``cv2.imread`` gives),
            values 0..255: an array ``(T, H, W, 3)`` or any indexable sequence of frames.
        audio_16k: mono 16 kHz samples; int16 values, or float in ``[-1, 1]`` (scaled by 32768).

    Raises:
        MediaError: fewer than 6 usable frames (video or audio shorter than 0.24 s).
    """
    from lipsyncctl import progress

    stream = SyncStream(model, audio_16k, len(frames_bgr), vshift=vshift, batch_size=batch_size, keep=True)
    with progress.Task("sync score", total=stream.last) as task:
        for i in range(stream.last + WINDOW_FRAMES - 1):  # the frames the windows read
            stream.feed(frames_bgr[i])
            if i >= WINDOW_FRAMES - 1:
                task.advance(1)
    return stream.distances()


def window_count(num_frames: int, num_samples: int) -> int:
    """The number of 5-frame windows scored (step 3) of ``num_frames`` at 25 fps and ``num_samples`` at 16 kHz:
    ``min(frames, samples // 640) - 5`` (0 or less: none)."""
    return min(num_frames, num_samples // (MODEL_AUDIO_RATE // int(EVAL_FPS))) - WINDOW_FRAMES


def _windows(num_frames: int, num_samples: int) -> int:
    """:func:`window_count`, at least one.

    Raises:
        MediaError: none (video or audio shorter than 0.24 s).
    """
    last_frame = window_count(num_frames, num_samples)
    if last_frame <= 0:
        raise MediaError(
            f"clip too short to score sync: {num_frames} frames, {num_samples} samples "
            f"(need at least {WINDOW_FRAMES + 1} frames at 25 fps of both)"
        )
    return last_frame


class SyncStream:
    """:func:`sync_distances` of one track fed a crop at a time (:meth:`feed`, 25 fps BGR crops in order), so a
    track of any length is measured in flat memory: at most ``batch_size + 4`` crops, ``batch_size + 2 vshift``
    audio embeddings and two 60 s blocks of MFCC are held, the sound is read as the windows reach it (it may be
    mapped from a file), and the distances are summed per offset as they come (a film's worth of crops, 150 kB
    each, was held before). The windows go through the network in the official batches, so the embeddings
    and each window's distances are :func:`sync_distances`' own; only the mean's float32 sum order differs
    (it is summed in float64 here).

    ``keep``: also keep every window's embeddings and distances (:meth:`distances`: what :func:`sync_distances`
    returns; memory then grows with the track).

    Raises:
        MediaError: at construction, when ``num_frames`` crops and the sound have no window to score.
    """

    def __init__(self, model: SyncNetEval, audio_16k: np.ndarray | torch.Tensor, num_frames: int, *,
                 vshift: int = VSHIFT, batch_size: int = 20, keep: bool = False) -> None:
        import torch

        self.samples, self.scale = _pcm16_scale(audio_16k)
        self.last = _windows(num_frames, self.samples.size)
        self.cc: dict[int, torch.Tensor] = {}  # (13, BLOCK_FRAMES) MFCC blocks: the last two read
        self.model, self.vshift, self.batch_size = model, vshift, batch_size
        self.param = next(model.parameters())
        model.eval()
        self.pending: list[np.ndarray] = []  # the crops of frames self.start ...
        self.start = 0  # the first window of the next batch
        self.audio: dict[int, torch.Tensor] = {}  # audio embeddings still needed, by window
        self.audio_done = 0  # windows whose audio embeddings are computed
        self.sums = torch.zeros(2 * vshift + 1, dtype=torch.float64)
        self.kept: dict[str, list[torch.Tensor]] | None = {"im": [], "cc": [], "dists": []} if keep else None

    def feed(self, crop_bgr: np.ndarray) -> None:
        """The next frame's crop (frames past the last window's are not needed and not kept)."""
        if self.start >= self.last:
            return
        self.pending.append(crop_bgr)
        end = min(self.last, self.start + self.batch_size)
        if len(self.pending) == end - self.start + WINDOW_FRAMES - 1:
            self._batch(end)

    def finish(self) -> MeanDistances:
        """The track's per-offset mean distances.

        Raises:
            MediaError: fewer crops were fed than the windows need.
        """
        if self.start < self.last:
            raise MediaError(f"the face track ended early: {self.start + len(self.pending)} crops of the "
                             f"{self.last + WINDOW_FRAMES - 1} its sound and length call for")
        return MeanDistances((self.sums / self.last).float(), self.vshift)

    def distances(self) -> SyncDistances:
        """Everything the official evaluation computes (a stream made with ``keep``), its mean as upstream's
        (``dists.mean(0)`` in float32).

        Raises:
            MediaError: fewer crops were fed than the windows need.
        """
        import torch

        self.finish()
        assert self.kept is not None, "SyncStream(keep=True) keeps the embeddings"
        im, cc, dists = (torch.cat(self.kept[k]) for k in ("im", "cc", "dists"))
        return SyncDistances(im, cc, dists, dists.mean(dim=0), self.vshift)

    def _batch(self, end: int) -> None:
        import torch

        n = end - self.start
        with torch.inference_mode():
            video = torch.from_numpy(_crop_batch(self.pending, range(len(self.pending))))
            video = video.to(device=self.param.device, dtype=self.param.dtype).permute(3, 0, 1, 2)
            lip = torch.stack([video[:, j : j + WINDOW_FRAMES] for j in range(n)])
            im = self.model.forward_lip(lip).float().cpu()
            while self.audio_done < min(self.last, end + self.vshift):  # the windows these pair with
                self._audio_batch()
            zero = torch.zeros(im.shape[1])
            rows = torch.stack([self.audio.get(j, zero) for j in range(self.start - self.vshift, end + self.vshift)])
            dists = _distances(im, rows, self.vshift)  # zeros beyond both ends, as upstream's padding
            self.sums += dists.sum(0, dtype=torch.float64)
        if self.kept is not None:
            self.kept["im"].append(im)
            self.kept["dists"].append(dists)
        for j in [j for j in self.audio if j < end - self.vshift]:
            del self.audio[j]
        self.pending = self.pending[n:]
        self.start = end

    def _mfcc(self, first: int, stop: int) -> torch.Tensor:
        """MFCC frames ``first .. stop - 1``, float32 ``(13, n)``, from the whole sound's blocks of
        :data:`~lipsyncctl.audio.mfcc.BLOCK_FRAMES` (so the values of one whole-sound MFCC), computed as the
        windows reach them: a film's MFCC (5 kB a second) is not held, nor its sound read ahead."""
        import torch

        from lipsyncctl.audio.mfcc import BLOCK_FRAMES, mfcc, num_mfcc_frames

        parts = []
        for k in range(first // BLOCK_FRAMES, -(-stop // BLOCK_FRAMES)):
            if k not in self.cc:
                a = k * BLOCK_FRAMES
                b = min(a + BLOCK_FRAMES, num_mfcc_frames(self.samples.size))
                block = mfcc(self.samples, MODEL_AUDIO_RATE, scale=self.scale, frames=(a, b))
                self.cc = {j: v for j, v in self.cc.items() if j == k - 1}
                self.cc[k] = torch.from_numpy(block.T.copy()).float()
            at = k * BLOCK_FRAMES
            parts.append(self.cc[k][:, max(first - at, 0) : stop - at])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _audio_batch(self) -> None:
        """The audio embeddings of the next official batch of windows."""
        import torch

        s = self.audio_done
        e = min(self.last, s + self.batch_size)
        f0 = MFCC_STEPS_PER_FRAME * s
        cc = self._mfcc(f0, MFCC_STEPS_PER_FRAME * (e - 1) + MFCC_WINDOW)
        aud = torch.stack([cc[:, MFCC_STEPS_PER_FRAME * v - f0 : MFCC_STEPS_PER_FRAME * v - f0 + MFCC_WINDOW]
                           for v in range(s, e)])[:, None].to(device=self.param.device, dtype=self.param.dtype)
        feats = self.model.forward_aud(aud).float().cpu()
        self.audio.update({v: feats[k] for k, v in enumerate(range(s, e))})
        if self.kept is not None:
            self.kept["cc"].append(feats)
        self.audio_done = e


def eval_frame_count(num_frames: int, fps: Fraction | int | float) -> int:
    """How many 25 fps evaluation frames ``num_frames`` at ``fps`` give (:func:`eval_frame_indices`' length)."""
    rate = exact(fps)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return num_frames if rate == EVAL_FPS else int(Fraction(num_frames) * EVAL_FPS / rate)


def eval_frame_indices(num_frames: int, fps: Fraction | int | float) -> list[int]:
    """Source frame index for each 25 fps evaluation frame (nearest in time, ties rounded up)."""
    rate = exact(fps)
    n_eval = eval_frame_count(num_frames, fps)
    if rate == EVAL_FPS:
        return list(range(num_frames))
    picks = [int(Fraction(k) * rate / EVAL_FPS + Fraction(1, 2)) for k in range(n_eval)]
    return [min(p, num_frames - 1) for p in picks]


#: frames to score: a sequence (read in place) or a zero-argument callable that opens a fresh iteration over
#: them (a decoder over a shot: the scorers read it twice and hold only their crops, never the frames)
FrameSource = Sequence[np.ndarray] | Callable[[], Iterable[np.ndarray]]


def replayable(frames: FrameSource, count: int | None = None) -> tuple[Callable[[], Iterator[np.ndarray]], int]:
    """``(open, n)``: ``open()`` starts a new pass over ``frames``; ``n`` their number (``count`` is required
    for a callable source, which must give exactly that many frames each time)."""
    if callable(frames):
        if count is None:
            raise ValueError("a callable frame source needs its frame count")
        source = frames
        return (lambda: iter(source())), count
    seq = frames
    return (lambda: iter(seq)), len(seq)


def picked(frames: Iterable[np.ndarray], index: Sequence[int]) -> Iterator[np.ndarray]:
    """``frames[i] for i in index`` over a stream (``index`` non-decreasing: repeats and skips, as
    :func:`eval_frame_indices` gives), holding one frame at a time."""
    it = iter(frames)
    pos, current = -1, None
    for want in index:
        while pos < want:
            current = next(it)
            pos += 1
        yield current  # type: ignore[misc]


class _Reindexed(Sequence):
    def __init__(self, base: Sequence | np.ndarray | torch.Tensor, index: list[int]) -> None:
        self.base = base
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):  # type: ignore[override]
        return self.base[self.index[i]]


def lse_scores(
    model: SyncNetEval,
    frames_bgr_224: Sequence | np.ndarray | torch.Tensor,
    audio_16k: np.ndarray | torch.Tensor,
    fps: Fraction | int | float = EVAL_FPS,
    *,
    vshift: int = VSHIFT,
    batch_size: int = 20,
) -> LseScores:
    """``(lse_d, lse_c, offset)`` of one face track (see the module docstring for the recipe).

    Args:
        model: loaded :class:`~lipsyncctl.nets.syncnet_eval.SyncNetEval`.
        frames_bgr_224: face crops (BGR, 0..255, ``(T, 224, 224, 3)``; other sizes are resized),
            cropped like syncnet_python (the official S3FD track crop is not part of this function).
        audio_16k: the track's mono 16 kHz audio, aligned with frame 0.
        fps: frame rate of ``frames_bgr_224``; other than 25, frames are picked nearest in time.
    """
    index = eval_frame_indices(len(frames_bgr_224), fps)
    frames = (
        frames_bgr_224
        if len(index) == len(frames_bgr_224) and fps == EVAL_FPS
        else _Reindexed(frames_bgr_224, index)
    )
    return sync_distances(model, frames, audio_16k, vshift=vshift, batch_size=batch_size).scores
