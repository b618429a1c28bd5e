"""Lip-sync quality scores: LSE-C / LSE-D with the evaluation SyncNet (:mod:`.lse`), the network's loading
and provenance (:mod:`.evaluator`), and the face crops scored (:mod:`.crops`)."""

from lipsyncctl.scoring.lse import LseScores, SyncDistances, distance_table, lse_scores, sync_distances

__all__ = ["LseScores", "SyncDistances", "distance_table", "lse_scores", "sync_distances"]
