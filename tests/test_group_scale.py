"""The large-data path of the grouping (sampled fits, FAISS neighbours, chunked transforms).

``max_fit_samples`` is set low so a few thousand rows take the path a million rows take.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from medsort.group import TwoLevelGrouper
from medsort.group import reduce as reduce_module
from medsort.group.cluster import nearest_centre
from medsort.group.reduce import FaissNeighbours, SpectralEmbedding, row_chunks

pytest.importorskip("faiss")


def blobs(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    centres = 2.0 + 1.5 * rng.standard_normal((k, 128))
    X = centres[truth] + rng.uniform(0.3, 1.2, (k, 128))[truth] * rng.standard_normal((n, 128))
    return np.maximum(X, 0).astype(np.float32), truth


def test_sampled_fit_recovers_clusters_and_predicts_consistently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reduce_module, "CHUNK_ROWS", 700)  # several chunks at this size
    X, truth = blobs(4000, 6)
    grouper = TwoLevelGrouper(n_clusters=6, max_fit_samples=1000).fit(X)
    _, model = grouper.modality_models_[0]
    assert isinstance(model.spectral_.query_index_, FaissNeighbours)
    assert adjusted_rand_score(truth, grouper.labels_) > 0.9
    assert grouper.map_2d_.shape == (4000, 2) and np.isfinite(grouper.distances_).all()
    agreement = np.mean(grouper.predict(X[:500]) == grouper.labels_[:500])
    assert agreement > 0.95
    restored = pickle.loads(pickle.dumps(grouper))
    np.testing.assert_array_equal(restored.predict(X[:200]), grouper.predict(X[:200]))


def test_small_data_keeps_the_exact_index() -> None:
    Z = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    embedding = SpectralEmbedding(n_components=3, max_fit_samples=1000).fit(Z)
    assert embedding.query_index_ is embedding.index_


def test_helpers() -> None:
    assert [(s.start, s.stop) for s in row_chunks(5, 2)] == [(0, 2), (2, 4), (4, 5)]
    V = np.array([[0, 0], [10, 0], [9, 1]], dtype=np.float32)
    centres = np.array([[10, 0], [0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(nearest_centre(V, centres), [1, 0, 0])
