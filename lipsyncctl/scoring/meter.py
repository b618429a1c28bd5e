"""The sync measurement of a QC: one object that scores a clip on the best scale installed.

:class:`SyncMeter` holds the evaluation SyncNet (``syncnet-v2``) and, when ``sfd-face`` is installed too, the
official scorer (S3FD tracks, 2.8x crop: :data:`~lipsyncctl.scoring.official.SCALE_OFFICIAL`); otherwise it
measures on the labelled approximate scale (a centred crop around the faces the configured detector finds:
:func:`~lipsyncctl.scoring.crops.approximate_sync`). ``sync --timeline``'s QC and ``lipsyncctl score`` measure
through it, so a clip gets the same numbers from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.scoring.crops import approximate_sync
from lipsyncctl.scoring.official import SCALE_APPROXIMATE, SCALE_OFFICIAL, SyncScores

if TYPE_CHECKING:
    from lipsyncctl.scoring.evaluator import EvalSyncNet
    from lipsyncctl.scoring.lse import FrameSource
    from lipsyncctl.scoring.official import OfficialScorer

#: what to run where the evaluation SyncNet is missing
FETCH_HINT = "run `lipsyncctl models fetch syncnet-v2 sfd-face` on a machine that is online (sfd-face: the official scale)"


@dataclass
class SyncMeter:
    """``syncnet``: the evaluation SyncNet; ``official``: its official scorer (None without ``sfd-face``);
    ``detector``: the face detector of the approximate scale (needed only when ``official`` is None)."""

    syncnet: EvalSyncNet
    official: OfficialScorer | None = None
    detector: Any | None = None

    @property
    def scale(self) -> str:
        return SCALE_OFFICIAL if self.official is not None else SCALE_APPROXIMATE

    def score(self, frames: FrameSource, audio_16k: np.ndarray, fps: Fraction, *, count: int | None = None) -> SyncScores:
        """LSE-C / LSE-D / offset of ``frames`` (RGB; a sequence, or a callable that opens a fresh pass over
        ``count`` frames: read twice, never held) against mono 16 kHz ``audio_16k`` aligned with frame 0."""
        if self.official is not None:
            return self.official.score(frames, audio_16k, fps, count=count)
        return approximate_sync(self.syncnet.model, frames, audio_16k, fps, self.detector, count=count)


def open_meter(device: Any, detector: str) -> SyncMeter:
    """The meter of what is installed: the official scale with ``sfd-face``, else the approximate one with a
    ``detector`` backend face detector (taken from the spares: give it back with :func:`close_meter`).

    Raises:
        MissingModelError: the evaluation SyncNet (``syncnet-v2``) is not installed; the approximate scale's
            face detector is missing.
    """
    from lipsyncctl.errors import MissingModelError
    from lipsyncctl.faces.detect import take_detector
    from lipsyncctl.scoring.evaluator import EVAL_MODEL, load_eval_syncnet
    from lipsyncctl.scoring.official import load_official_scorer

    syncnet = load_eval_syncnet(device)
    if syncnet is None:
        raise MissingModelError(f"measuring lip sync needs the evaluation SyncNet {EVAL_MODEL!r}, which is not "
                                "installed", hint=FETCH_HINT)
    official = load_official_scorer(syncnet.model, device)
    return SyncMeter(syncnet, official, None if official is not None else take_detector(detector, "cpu"))


def close_meter(meter: SyncMeter, detector: str) -> None:
    """Give the meter's face detector back to the spares (:func:`open_meter`'s ``detector`` backend)."""
    from lipsyncctl.faces.detect import give_back_detector

    if meter.detector is not None:
        give_back_detector(detector, "cpu", meter.detector)
