"""Scores for a grouping against reference labels (for evaluation only, never for fitting)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    _, true_idx = np.unique(y_true, return_inverse=True)
    _, pred_idx = np.unique(y_pred, return_inverse=True)
    table = np.zeros((pred_idx.max() + 1, true_idx.max() + 1), dtype=np.int64)
    np.add.at(table, (pred_idx, true_idx), 1)
    return table


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy after the best one-to-one matching of groups to classes.

    Groups and classes are matched by the Hungarian method
    (:func:`scipy.optimize.linear_sum_assignment`) on their contingency table. When there are
    more groups than classes, the unmatched groups count as errors; when there are fewer, the
    unmatched classes do.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Reference labels (any hashable values).
    y_pred : array-like of shape (n,)
        Group labels.

    Returns
    -------
    float
        Fraction of rows whose group is matched to their class, in ``[0, 1]``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred must have the same shape.")
    if y_true.size == 0:
        return 0.0
    table = _contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / y_true.size)


def score_grouping(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Matched accuracy, normalised mutual information and adjusted Rand index.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Reference labels.
    y_pred : array-like of shape (n,)
        Group labels.

    Returns
    -------
    dict
        ``{"acc": ..., "nmi": ..., "ari": ...}`` as floats.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }
