"""The refine stage on synthetic data: the neighbour graph (exact for small folders, FAISS
for large ones), the sampled feature map, the SVM's probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from medsort import numeric
from medsort.refine import propagate
from medsort.refine.classifier import FeatureMap, SparSamClassifier


def _clusters(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 32))
    X = centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, 32))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_faiss_graph_matches_the_exact_one(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    Z = _clusters(3000)
    exact = propagate.knn_affinity(Z, 10, 3.0)
    monkeypatch.setattr(numeric, "EXACT_KNN_ROWS", 1000)
    approximate = propagate.knn_affinity(Z, 10, 3.0)
    assert approximate.diagonal().max() == 0  # no self-loops
    assert abs(approximate - approximate.T).max() < 1e-6  # symmetric
    shared = exact.multiply(approximate).nnz / exact.nnz
    assert shared > 0.85  # 4 of about 55 inverted lists probed
    # and labels spread over either graph agree
    seeds = np.full((len(Z), 2), 0.0)
    seeds[:5, 0], seeds[-5:, 1] = 1.0, 1.0
    labels = [
        propagate.spread(propagate.normalized_affinity(W), seeds, 0.9).argmax(axis=1)
        for W in (exact, approximate)
    ]
    assert (labels[0] == labels[1]).mean() > 0.97


def test_feature_map_fitted_on_a_sample_transforms_every_row() -> None:
    X = np.abs(_clusters(5000)) * 10
    full = FeatureMap(n_components=16).fit(X)
    sampled = FeatureMap(n_components=16, max_fit_samples=1000).fit(X)
    Z_full, Z_sampled = full.transform(X), sampled.transform(X)
    assert Z_sampled.shape == (5000, 16) and np.isfinite(Z_sampled).all()
    np.testing.assert_allclose(np.linalg.norm(Z_sampled, axis=1), 1.0, atol=1e-5)
    # the same neighbourhoods either way
    near_full = np.argsort(-(Z_full[:50] @ Z_full.T), axis=1)[:, 1:11]
    near_sampled = np.argsort(-(Z_sampled[:50] @ Z_sampled.T), axis=1)[:, 1:11]
    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(near_full, near_sampled, strict=True)]
    )
    assert overlap > 0.6


def test_svm_probabilities_rank_classes_as_its_predictions() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    truth = np.repeat(["a", "b", "c"], 40)
    X = np.abs(centres[np.repeat([0, 1, 2], 40)] + rng.normal(size=(120, 16)))
    y = np.full(120, None, dtype=object)
    y[::8] = truth[::8]  # 5 labels per class
    model = SparSamClassifier("svm").fit(X, y)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (model.classes_[proba.argmax(axis=1)] == model.predict(X)).mean() > 0.98
    assert (model.predict(X) == truth).mean() > 0.9
