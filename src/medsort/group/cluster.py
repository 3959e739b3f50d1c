"""Spectral clustering of a kNN graph with the number of groups chosen automatically."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_chunked
from sklearn.preprocessing import LabelEncoder, normalize
from sklearn.utils import check_random_state, check_X_y
from threadpoolctl import threadpool_limits

from medsort.group.reduce import SpectralEmbedding, row_chunks


def spectral_coordinates(embedding: np.ndarray, k: int) -> np.ndarray:
    """Row-normalised first ``k`` eigenmap coordinates (the Ng-Jordan-Weiss space for ``k``)."""
    return normalize(embedding[:, :k])


def kmeans_labels(V: np.ndarray, k: int, random_state: int, n_init: int) -> KMeans:
    """Fit k-means with a fixed seed and return the fitted model."""
    return KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(V)


def sampled_rows(embedding: SpectralEmbedding, n_rows: int) -> np.ndarray | None:
    """The rows ``embedding`` was fitted on when it was fitted on a sample, else ``None``.

    Above ``max_fit_samples`` rows, k-means and the silhouette that picks ``k`` run on those
    rows (exact eigenmap coordinates); every row is then assigned to its nearest centre.
    """
    index = embedding.fit_index_
    return index if len(index) < n_rows else None


def nearest_centre(V: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (L2) of each row, in chunks: memory O(n + k·d)."""
    centres = np.asarray(centres, dtype=np.float32)
    half_norms = 0.5 * (centres**2).sum(axis=1)
    out = np.empty(len(V), dtype=np.int64)
    for rows in row_chunks(len(V)):
        out[rows] = (half_norms - V[rows] @ centres.T).argmin(axis=1)
    return out


def silhouette(V: np.ndarray, labels: np.ndarray, sample_size: int, random_state: int) -> float:
    """Silhouette of ``labels`` in ``V`` on at most ``sample_size`` rows (-1 if one group)."""
    if len(np.unique(labels)) < 2:
        return -1.0
    size = None if len(V) <= sample_size else sample_size
    return silhouette_score(V, labels, sample_size=size, random_state=random_state)


def silhouette_score(
    X: np.ndarray, labels: np.ndarray, sample_size: int | None = None, random_state: int = 0
) -> float:
    """scikit-learn's euclidean ``silhouette_score``, the same value to the last bit.

    scikit-learn sums each row's distances per group with one ``bincount`` per row, a
    Python loop that took half of the silhouette's time (a third of a second of a cold
    1200-image sort with its audit's reruns); here one ``bincount`` per block of rows
    adds the same numbers in the same order.
    """
    if sample_size is not None:
        X, labels = check_X_y(X, labels)
        indices = check_random_state(random_state).permutation(X.shape[0])[:sample_size]
        X, labels = X[indices], labels[indices]
    codes = LabelEncoder().fit_transform(labels)
    freqs = np.bincount(codes)
    if not 1 < len(freqs) < len(codes):
        raise ValueError(f"The silhouette needs 2 to n - 1 groups, not {len(freqs)}.")
    parts = list(
        pairwise_distances_chunked(
            X,
            reduce_func=lambda D, start: _silhouette_reduce(D, start, codes, freqs),
            metric="euclidean",
        )
    )
    intra = np.concatenate([a for a, _ in parts])
    inter = np.concatenate([b for _, b in parts])
    with np.errstate(divide="ignore", invalid="ignore"):
        intra /= (freqs - 1).take(codes, mode="clip")
        samples = inter - intra
        samples /= np.maximum(intra, inter)
    return float(np.mean(np.nan_to_num(samples)))


SILHOUETTE_BLOCK = 256
"""Rows summed per ``bincount``: its index array stays a few MB."""


def _silhouette_reduce(
    D: np.ndarray, start: int, codes: np.ndarray, freqs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean intra-group distance sums and nearest other group's mean distance of the rows
    ``start..`` whose distances to every row are ``D`` (scikit-learn's reduction)."""
    n, k = D.shape[0], len(freqs)
    sums = np.empty((n, k), dtype=D.dtype)
    for top in range(0, n, SILHOUETTE_BLOCK):
        block = D[top : top + SILHOUETTE_BLOCK]
        bins = (np.arange(len(block))[:, None] * k + codes[None, :]).ravel()
        totals = np.bincount(bins, weights=block.ravel(), minlength=len(block) * k)
        sums[top : top + len(block)] = totals.reshape(len(block), k)
    own = (np.arange(n), codes[start : start + n])
    intra = sums[own]
    sums[own] = np.inf
    sums /= freqs
    return intra, sums.min(axis=1)


class SpectralAutoK(ClusterMixin, BaseEstimator):
    """Spectral clustering of a kNN graph; ``k`` picked by silhouette in the spectral space.

    For each candidate ``k`` the rows' first ``k`` Laplacian-eigenmap coordinates are
    L2-normalised and clustered by k-means (Ng, Jordan and Weiss 2002); the ``k`` whose clustering
    has the highest silhouette in its own space is kept.

    Parameters
    ----------
    n_clusters : int or None, default=None
        Number of groups; ``None`` chooses it in ``[2, k_max]``.
    k_max : int, default=10
        Largest candidate ``k``.
    n_neighbors : int, default=15
        Neighbours per point in the kNN graph.
    min_rows_per_group : int, default=10
        Data with fewer than ``2 * min_rows_per_group`` rows form a single group.
    max_fit_samples : int, default=20000
        The graph is built on at most this many rows (others are mapped by ``transform``).
    silhouette_samples : int, default=4000
        Rows used to score each ``k``.
    n_init : int, default=4
        k-means restarts.
    single_group_tol : float, default=0.3
        With automatic ``k``, one group is returned when the second Laplacian eigenvalue is at
        least this: by Cheeger's inequality every cut of the graph then has conductance of at
        least half of it, i.e. the graph has no community structure (an isotropic blob gives
        0.4-0.7; the real sets measured gave 0.02-0.16).
    random_state : int, default=0
        Seed for every random step.

    Attributes
    ----------
    labels_ : numpy.ndarray of shape (n,)
        Group of each row, ``0..n_clusters_-1``.
    n_clusters_ : int
        Number of groups found.
    cluster_centers_ : numpy.ndarray of shape (n_clusters_, n_clusters_)
        Centres in the row-normalised spectral space.
    embedding_ : numpy.ndarray of shape (n, n_clusters_)
        Rows in that space.
    scores_ : dict
        Silhouette per candidate ``k``.
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        k_max: int = 10,
        n_neighbors: int = 15,
        min_rows_per_group: int = 10,
        max_fit_samples: int = 20000,
        silhouette_samples: int = 4000,
        n_init: int = 4,
        single_group_tol: float = 0.3,
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.k_max = k_max
        self.n_neighbors = n_neighbors
        self.min_rows_per_group = min_rows_per_group
        self.max_fit_samples = max_fit_samples
        self.silhouette_samples = silhouette_samples
        self.n_init = n_init
        self.single_group_tol = single_group_tol
        self.random_state = random_state

    def _candidates(self, n_rows: int) -> list[int]:
        if self.n_clusters is not None:
            return [int(self.n_clusters)]
        upper = min(self.k_max, n_rows // max(1, self.min_rows_per_group))
        return list(range(2, upper + 1)) or [1]

    def fit(self, Z: np.ndarray, y: None = None) -> SpectralAutoK:
        """Cluster ``Z`` (reduced features, e.g. from :class:`FeatureReducer`).

        Parameters
        ----------
        Z : numpy.ndarray of shape (n, d)
            Reduced features.
        y : None
            Ignored.

        Returns
        -------
        SpectralAutoK
            The fitted estimator.
        """
        return self._fit(Z, None)

    def _fit(
        self, Z: np.ndarray, fitted: tuple[SpectralEmbedding, np.ndarray] | None
    ) -> SpectralAutoK:
        """Fit, reusing ``(embedding model, coordinates)`` of ``Z`` when they are wide enough."""
        candidates = self._candidates(len(Z))
        if candidates == [1] or len(Z) < 3:
            return self._fit_single(Z)
        if max(candidates) >= len(Z):
            raise ValueError(f"n_clusters={max(candidates)} needs more than {len(Z)} rows.")
        if fitted is not None and fitted[1].shape[1] >= max(candidates):
            self.spectral_, E = fitted
        else:
            self.spectral_ = SpectralEmbedding(
                n_neighbors=self.n_neighbors,
                n_components=max(candidates),
                max_fit_samples=self.max_fit_samples,
                random_state=self.random_state,
            )
            E = self.spectral_.fit_transform(Z)
        self.scores_ = {}
        if self.n_clusters is None and self.spectral_.eigenvalues_[1] >= self.single_group_tol:
            return self._fit_single(Z)
        sample = sampled_rows(self.spectral_, len(E))
        best = None
        # large data: the candidates run on the fit sample only, where threads cost more
        # than they save (one thread, as for small data)
        with threadpool_limits(limits=None if sample is None else 1):
            for k in candidates:
                V = spectral_coordinates(E if sample is None else E[sample], k)
                model = kmeans_labels(V, k, self.random_state, self.n_init)
                score = silhouette(V, model.labels_, self.silhouette_samples, self.random_state)
                self.scores_[k] = score
                if best is None or score > best[0]:
                    best = (score, k, V, model)
        _, self.n_clusters_, self.embedding_, self.kmeans_ = best
        if sample is None:
            self.labels_ = self.kmeans_.labels_.astype(np.int64)
        else:  # large data: k-means fitted on the spectral fit sample, every row assigned
            self.embedding_ = spectral_coordinates(E, self.n_clusters_)
            self.labels_ = nearest_centre(self.embedding_, self.kmeans_.cluster_centers_)
        self.cluster_centers_ = self.kmeans_.cluster_centers_
        self.spectral_coords_ = E
        return self

    def _fit_single(self, Z: np.ndarray) -> SpectralAutoK:
        self.spectral_ = None
        self.scores_ = {}
        self.n_clusters_ = 1
        self.embedding_ = np.asarray(Z, dtype=np.float32)
        self.cluster_centers_ = self.embedding_.mean(axis=0, keepdims=True)
        self.labels_ = np.zeros(len(Z), dtype=np.int64)
        self.spectral_coords_ = self.embedding_
        return self

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """Map reduced features into the space the groups were formed in."""
        if self.spectral_ is None:
            return np.asarray(Z, dtype=np.float32)
        return spectral_coordinates(self.spectral_.transform(Z), self.n_clusters_)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """Group of new rows: nearest centre in the spectral space.

        Parameters
        ----------
        Z : numpy.ndarray of shape (n, d)
            Reduced features, from the same reducer as at fit time.

        Returns
        -------
        numpy.ndarray of shape (n,)
            Group labels.
        """
        if self.spectral_ is None:
            return np.zeros(len(Z), dtype=np.int64)
        return self.kmeans_.predict(self.transform(Z)).astype(np.int64)

    def centre_distances(self) -> np.ndarray:
        """Distance of each fitted row to its group's centre in :attr:`embedding_`."""
        centres = self.cluster_centers_[self.labels_]
        return np.linalg.norm(self.embedding_ - centres, axis=1)
