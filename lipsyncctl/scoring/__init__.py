"""Lip-sync quality scores: LSE-C / LSE-D with the evaluation SyncNet (:mod:`.lse`), the network's loading
and provenance (:mod:`.evaluator`), the official measurement (:mod:`.official`: S3FD face tracks of
:mod:`.facetrack` and the official crop; ``scale="official"``), and the labelled approximate fallback crop
(:mod:`.crops`; ``scale="approximate (not official)"``)."""

from lipsyncctl.scoring.lse import LseScores, SyncDistances, distance_table, lse_scores, sync_distances

__all__ = ["LseScores", "SyncDistances", "distance_table", "lse_scores", "sync_distances"]
