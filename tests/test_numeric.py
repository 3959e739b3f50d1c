"""The numeric core: one kNN policy (exact, FAISS IVF above a size) and one feature reducer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from medsort import numeric
from medsort.refine.classifier import FeatureMap


def _unit_clusters(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 24))
    X = centres[rng.integers(0, 6, n)] + 0.4 * rng.normal(size=(n, 24))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_exact_cosine_neighbours_are_the_most_similar_other_rows() -> None:
    x = _unit_clusters(300)
    sims, idx = numeric.cosine_neighbours(x, 5, block=64)  # several blocks
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    best = np.sort(full, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(sims, best, atol=1e-5)
    assert not (idx == np.arange(300)[:, None]).any()
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, axis=1), atol=1e-6)


def test_faiss_cosine_neighbours_agree_with_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    x = _unit_clusters(3000)
    exact_sims, exact_idx = numeric.cosine_neighbours(x, 8)
    monkeypatch.setattr(numeric, "EXACT_KNN_ROWS", 1000)
    assert numeric.use_faiss(len(x))
    sims, idx = numeric.cosine_neighbours(x, 8)
    assert idx.shape == exact_idx.shape and not (idx == np.arange(3000)[:, None]).any()
    found = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(idx, exact_idx, strict=True)])
    assert found > 0.85
    valid = idx >= 0
    pairs = np.einsum("nd,nkd->nk", x, x[np.clip(idx, 0, None)])
    np.testing.assert_allclose(sims[valid], pairs[valid], atol=1e-4)


def test_nearest_neighbours_put_each_row_first(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _unit_clusters(500)
    x[1] = x[0]  # a duplicate may come before the row itself
    exact = numeric.nearest_neighbours(x, 4)
    assert set(exact[:2, :2].ravel()) == {0, 1}
    if numeric.faiss_available():
        monkeypatch.setattr(numeric, "EXACT_KNN_ROWS", 100)
        approximate = numeric.nearest_neighbours(x, 4)
        assert (approximate[:, 0] == np.arange(500)).all()


def test_the_reducer_keeps_its_configuration_through_clone() -> None:
    X = np.abs(np.random.default_rng(1).normal(size=(120, 40))).astype(np.float32)
    feature_map = FeatureMap(n_components=8)
    twin = clone(feature_map)
    assert twin.get_params() == feature_map.get_params()
    Z = feature_map.fit_transform(X)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)  # unit output
    np.testing.assert_array_equal(twin.fit_transform(X), Z)
    reduced = numeric.FeatureReducer(n_components=8).fit_transform(X)
    assert reduced.shape == (120, 8) and reduced.dtype == np.float32
    assert not np.allclose(np.linalg.norm(reduced, axis=1), 1.0)  # PCA output as it is
    with pytest.raises(ValueError, match="power"):
        numeric.FeatureReducer(power="cube").fit(X)


def test_chunked_transform_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    X = np.random.default_rng(2).normal(size=(300, 30)).astype(np.float32)
    reducer = numeric.FeatureReducer(n_components=5).fit(X)
    whole = reducer.transform(X)
    monkeypatch.setattr(numeric, "CHUNK_ROWS", 64)
    np.testing.assert_allclose(reducer.transform(X), whole, atol=1e-6)
