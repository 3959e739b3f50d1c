"""Refine stage: a few labels on top of the unsupervised groups.

``medsort suggest`` proposes images to label; ``medsort label`` spreads the labels over
every image (:class:`GraphLabelSpreading`, the default) or trains a supervised SparSam
classifier (:class:`SparSamClassifier`) on the embeddings already in the output folder.
"""

from medsort.refine.classifier import OTHER, FeatureMap, SparSamClassifier
from medsort.refine.label import label_folder
from medsort.refine.propagate import ClusterThenLabel, GraphLabelSpreading
from medsort.refine.suggest import suggest_folder

__all__ = [
    "OTHER",
    "ClusterThenLabel",
    "FeatureMap",
    "GraphLabelSpreading",
    "SparSamClassifier",
    "label_folder",
    "suggest_folder",
]
