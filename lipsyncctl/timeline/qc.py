"""What the QC report shows of a rendered shot besides its scores: frames and thumbnails.

Sync confidence (LSE-C, higher = better in sync) and distance (LSE-D, lower = better) come from
:mod:`lipsyncctl.scoring` (the evaluation SyncNet, ``lipsyncctl models fetch syncnet-v2``; on the official
scale when ``sfd-face`` is installed too, else on the labelled approximate one). Without the SyncNet the
scores are ``None`` and the report says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    """RGB frames ``first .. first + count - 1`` of ``path``."""
    from lipsyncctl.timeline.mediaio import read_frames

    return list(read_frames(path, first, count))
