"""Grouping stage: unsupervised modality and condition groups from encoder features."""

from medsort.group.cluster import SpectralAutoK
from medsort.group.metrics import cluster_accuracy, score_grouping
from medsort.group.reduce import FeatureReducer, SpectralEmbedding
from medsort.group.two_level import TwoLevelGrouper

__all__ = [
    "FeatureReducer",
    "SpectralAutoK",
    "SpectralEmbedding",
    "TwoLevelGrouper",
    "cluster_accuracy",
    "score_grouping",
]
