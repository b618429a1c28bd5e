"""Lip-sync quality scores (LSE-C / LSE-D with SyncNet v2), computed from face crops and audio."""

from lipsyncctl.scoring.lse import LseScores, SyncDistances, distance_table, lse_scores, sync_distances

__all__ = ["LseScores", "SyncDistances", "distance_table", "lse_scores", "sync_distances"]
