"""Refine stage: a few labels on top of the unsupervised groups.

``medsort suggest`` proposes images to label; ``medsort label`` spreads the labels over
every image (:class:`GraphLabelSpreading`, the default) or trains a supervised SparSam
classifier (:class:`SparSamClassifier`) on the embeddings already in the output folder.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    # Lazy, so that `medsort --help` imports no pandas or scikit-learn.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
