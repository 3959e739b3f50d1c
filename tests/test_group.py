"""Tests of the grouping stage (src/medsort/group)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_set
from sklearn.datasets import make_blobs

from medsort.group import TwoLevelGrouper, cluster_accuracy, score_grouping


def blobs(n: int = 600, k: int = 4, seed: int = 0, offset: float = 0.0) -> tuple:
    """Well-separated non-negative blobs in 64-d (like pooled CNN features)."""
    X, y = make_blobs(n, n_features=64, centers=k, cluster_std=1.0, random_state=seed)
    return (np.abs(X) + offset).astype(np.float32), y


def test_cluster_accuracy_handles_unequal_counts() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(y, np.array([5, 5, 7, 7, 9, 9])) == 1.0
    assert cluster_accuracy(y, np.zeros(6, int)) == pytest.approx(2 / 6)
    assert cluster_accuracy(y, np.arange(6)) == pytest.approx(3 / 6)
    assert set(score_grouping(y, y)) == {"acc", "nmi", "ari"}


def test_recovers_exact_k_on_blobs() -> None:
    X, y = blobs()
    g = TwoLevelGrouper(random_state=0).fit(X)
    assert g.n_groups_ == 4
    assert cluster_accuracy(y, g.labels_) > 0.99


def test_attributes_shapes_and_predict_consistent() -> None:
    X, _ = blobs(k=3)
    g = TwoLevelGrouper(random_state=0).fit(X)
    n, groups = len(X), g.labels_.max() + 1
    assert g.modality_labels_.shape == g.labels_.shape == g.distances_.shape == (n,)
    assert g.map_2d_.shape == (n, 2) and np.isfinite(g.map_2d_).all()
    assert g.group_modality_.shape == (groups,)
    assert np.array_equal(g.group_modality_[g.labels_], g.modality_labels_)
    assert (g.distances_ >= 0).all()
    assert np.mean(g.predict(X) == g.labels_) > 0.98
    assert np.array_equal(g.fit_predict(X), g.labels_)


def test_n_clusters_forces_k() -> None:
    X, _ = blobs(k=4)
    for k in (2, 6):
        g = TwoLevelGrouper(n_clusters=k, random_state=0).fit(X)
        assert len(np.unique(g.labels_)) == k and g.n_modalities_ == 1


def test_deterministic() -> None:
    X, _ = blobs(seed=3)
    a = TwoLevelGrouper(random_state=0).fit(X)
    b = TwoLevelGrouper(random_state=0).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.allclose(a.map_2d_, b.map_2d_)


def test_two_modalities_split_then_conditions() -> None:
    Xa, ya = blobs(400, k=2, seed=1)
    Xb, yb = blobs(400, k=3, seed=2, offset=40.0)
    X = np.vstack([Xa, Xb])
    g = TwoLevelGrouper(random_state=0).fit(X)
    modality = np.repeat([0, 1], 400)
    # perfectly separated blobs are disconnected graph parts, so level 1 may split them too;
    # a modality group must never mix the two modalities
    for m in range(g.n_modalities_):
        assert len(np.unique(modality[g.modality_labels_ == m])) == 1
    truth = np.concatenate([ya, yb + 10])
    assert g.n_groups_ == 5 and cluster_accuracy(truth, g.labels_) > 0.99


def _embed(folder: Path, per_set: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import PIL.Image

    from medsort.embed.registry import create_encoder
    from medsort.preprocess import to_model_input, to_tensor_batch

    enc = create_encoder("efficientnet_lite0")
    feats, labels, modality = [], [], []
    for name in ("chest-xray-28", "lung-histology"):
        with open(folder / name / "labels.csv") as handle:
            rows = list(csv.DictReader(handle))[:per_set]
        images = [
            to_model_input(
                np.asarray(PIL.Image.open(folder / name / r["path"]).convert("RGB")), enc.config
            )
            for r in rows
        ]
        for i in range(0, len(images), 32):
            feats.append(enc.embed(to_tensor_batch(images[i : i + 32], enc.config)))
        labels += [f"{name}/{r['label']}" for r in rows]
        modality += [name] * len(rows)
    return np.concatenate(feats), np.array(labels), np.array(modality)


@pytest.mark.slow
def test_real_mixed_folder() -> None:
    folder = shared_set("lung-histology").parent
    shared_set("chest-xray-28")
    X, labels, modality = _embed(folder, per_set=75)
    g = TwoLevelGrouper(random_state=0).fit(X)
    assert cluster_accuracy(modality, g.modality_labels_) >= 0.99
    score = score_grouping(labels, g.labels_)
    # collapse to modality only would give ACC 0.4 and NMI ~0.6
    assert score["acc"] >= 0.7 and score["nmi"] >= 0.65, score


@pytest.mark.parametrize(
    ("n", "k", "dtype", "sample_size"),
    [(600, 4, np.float32, None), (400, 9, np.float64, None), (900, 3, np.float32, 500)],
)
def test_silhouette_equals_scikit_learns_to_the_last_bit(
    n: int, k: int, dtype: type, sample_size: int | None
) -> None:
    from sklearn.metrics import silhouette_score as reference

    from medsort.group.cluster import SILHOUETTE_BLOCK, silhouette_score

    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 5)).astype(dtype)
    X[: n // 3] += 1.5  # some structure, and groups of unequal sizes
    labels = rng.integers(0, k, n) * 7 + 3  # codes that are not 0..k-1
    labels[:2] = [-1, -1]  # a tiny group
    assert n > SILHOUETTE_BLOCK  # several blocks per chunk
    expected = reference(X, labels, sample_size=sample_size, random_state=0)
    assert silhouette_score(X, labels, sample_size=sample_size, random_state=0) == expected
