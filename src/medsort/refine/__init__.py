"""Refine stage: a few labels on top of the unsupervised groups.

``medsort suggest`` proposes images to label; ``medsort label`` spreads the labels over
every image (:class:`GraphLabelSpreading`, the default) or trains a supervised SparSam
classifier (:class:`SparSamClassifier`) on the embeddings already in the output folder.
"""

from __future__ import annotations

from medsort.lazy import lazy_exports

_EXPORTS = {
    "OTHER": "medsort.refine.classifier",
    "FeatureMap": "medsort.refine.classifier",
    "SparSamClassifier": "medsort.refine.classifier",
    "label_folder": "medsort.refine.label",
    "ClusterThenLabel": "medsort.refine.propagate",
    "GraphLabelSpreading": "medsort.refine.propagate",
    "suggest_folder": "medsort.refine.suggest",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
