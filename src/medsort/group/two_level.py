"""Two-level grouping: modality groups first, then condition groups within each modality."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from medsort.group.cluster import SpectralAutoK, nearest_centre, sampled_rows
from medsort.group.multiview import (
    ViewBlocks,
    candidate_weightings,
    mean_row_norm,
    most_agreed,
    view_agreement,
    weighted_blocks,
)
from medsort.group.reduce import (
    FeatureReducer,
    SpectralEmbedding,
    fit_sample_index,
    row_chunks,
)

SMALL_PROBLEM_ROWS = 20000
MODALITY_MIN_FIT_ROWS = 20000
"""Smallest graph fit sample of one modality group on large data (see
:meth:`TwoLevelGrouper._modality_fit_rows`)."""
MODALITY_PCA_ROWS = 35000
"""PCA fit sample of one modality group on large data (20,000 rows cost ARI at 1M: 0.914)."""


def _thread_limit(n_rows: int) -> threadpool_limits:
    """One BLAS/OpenMP thread for small problems, where thread start-up and spinning cost more
    than they save (about 10x CPU time on a busy 2-core machine); no limit for large ones."""
    return threadpool_limits(limits=1 if n_rows < SMALL_PROBLEM_ROWS else None)


def count_disconnected_parts(
    eigenvalues: np.ndarray, tol: float, gap_tol: float, min_gap: float
) -> int:
    """Number of (nearly) disconnected graph parts in a kNN graph.

    The largest ``m`` whose ``m``-th smallest Laplacian eigenvalue is below ``tol``, or
    below ``gap_tol`` and at least ``min_gap`` times smaller than the next one. The gap
    rule catches small folders, whose kNN graphs are denser (a clean split there leaves
    an eigenvalue near 0.01), without splitting one large blob: its eigenvalues shrink as
    it gets more rows, but they shrink together.
    """
    values = np.sort(np.asarray(eigenvalues, dtype=float))
    parts = 1
    for m in range(1, len(values)):
        below = values[m]
        above = values[m + 1] if m + 1 < len(values) else np.inf
        gapped = below < gap_tol and above > min_gap * max(below, 1e-6)
        if below < tol or gapped:
            parts = m + 1
    return parts


def transform_rows(reducer: FeatureReducer, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``reducer.transform(X[rows])`` without copying all of ``X[rows]`` at once."""
    out = np.empty((len(rows), reducer.pca_.n_components_), dtype=np.float32)
    for part in row_chunks(len(rows)):
        out[part] = reducer.transform(X[rows[part]])
    return out


def merge_small_groups(labels: np.ndarray, Z: np.ndarray, min_size: int) -> np.ndarray:
    """Reassign rows of groups smaller than ``min_size`` to the nearest large group's centre.

    Returns labels renumbered ``0..M-1`` in order of first appearance of each kept group.
    """
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[counts >= min_size]
    if keep.size == 0:
        return np.zeros(len(labels), dtype=np.int64)
    centres = np.stack([Z[labels == g].mean(axis=0) for g in keep])
    small = ~np.isin(labels, keep)
    out = labels.copy()
    if small.any():
        dist = ((Z[small, None, :] - centres[None]) ** 2).sum(axis=-1)
        out[small] = keep[dist.argmin(axis=1)]
    _, first = np.unique(out, return_index=True)
    order = out[np.sort(first)]
    return np.searchsorted(order, out, sorter=np.argsort(order)).astype(np.int64)


class TwoLevelGrouper(ClusterMixin, BaseEstimator):
    """Group images by modality, then by condition within each modality, without labels.

    Level 1 splits modalities only where the kNN graph of the features falls apart into (nearly)
    disconnected parts: normalised-Laplacian eigenvalues near zero (see
    :func:`count_disconnected_parts`),
    each part holding at least ``modality_min_fraction`` of the rows. A
    single-modality folder therefore stays one group unless its split is very clear. Level 2
    refits the reduction inside each modality group and runs :class:`SpectralAutoK`.

    With hand-crafted ``views`` given to :meth:`fit` (see :mod:`medsort.embed.views`), level 2
    picks ``k`` on the CNN features as without them, then forms the ``k`` groups under a few
    weightings of the views beside the CNN block (``candidate_weightings`` in
    :mod:`medsort.group.multiview`: the CNN alone, every view at ``view_weight``, each view
    alone at each of ``single_view_weights``) and keeps the partition that agrees most with
    the others (``most_agreed``); no labels are involved. Modality groups larger than
    ``max_fit_samples`` rows use the joint weighting only. Level 1 uses the CNN features
    only (modality purity is already perfect there).

    With ``reference`` features given to :meth:`fit` (the ImageNet encoder's, when ``X``
    comes from an encoder adapted on the folder, :mod:`medsort.adapt`), level 1 and the
    number of groups of each modality group come from ``reference``, and only the groups
    themselves are formed in ``X``: adaptation reshapes the groups, but its own ``k`` was
    the main loss on small grey sets (docs/benchmarks.md, "Self-supervised adaptation").

    Parameters
    ----------
    n_clusters : int or None, default=None
        If given, level 1 is skipped and exactly this many flat groups are formed.
    n_components : int, default=50
        PCA size of :class:`FeatureReducer`.
    n_neighbors : int, default=15
        kNN graph size at both levels.
    k_max : int, default=10
        Largest number of condition groups per modality.
    modality_tol : float, default=0.005
        Laplacian-eigenvalue threshold for a modality split.
    modality_gap_tol : float, default=0.02
        Larger threshold that also splits when the next eigenvalue is ``modality_gap``
        times larger.
    modality_gap : float, default=10.0
        See ``modality_gap_tol``.
    modality_min_fraction : float, default=0.02
        Smallest modality group, as a fraction of the rows (and at least 10 rows).
    max_fit_samples : int, default=20000
        Non-linear steps are fitted on at most this many rows, the rest transformed.
    view_weight : float, default=0.2
        Weight of each hand-crafted view block against the CNN block in the joint candidate
        (0 ignores views altogether).
    single_view_weights : tuple of float, default=(0.5, 1.0)
        Weights of one view at a time in the other candidates; ``()`` keeps only the joint
        candidate.
    view_components : int, default=32
        PCA size of each view block.
    random_state : int, default=0
        Seed for every random step (results are deterministic).

    Attributes
    ----------
    modality_labels_ : numpy.ndarray of shape (n,)
        Modality group per row, ``0..M-1``.
    labels_ : numpy.ndarray of shape (n,)
        Final group per row, unique across modalities, ``0..G-1``.
    group_modality_ : numpy.ndarray of shape (G,)
        Modality group of each final group.
    distances_ : numpy.ndarray of shape (n,)
        Distance of each row to its final group's centre in the row-normalised spectral space
        of its modality.
    map_2d_ : numpy.ndarray of shape (n, 2)
        2-D coordinates for a scatter map (PCA of each modality's Laplacian eigenmaps, modality
        groups placed side by side).
    n_modalities_ : int
        Number of modality groups.
    n_groups_ : int
        Number of final groups.
    views_used_ : list of dict
        Per modality group: the views its condition groups were formed in, their weights,
        where ``k`` came from, and each view's agreement with the groups
        (:func:`~medsort.group.multiview.view_agreement`).
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        n_components: int = 50,
        n_neighbors: int = 15,
        k_max: int = 10,
        modality_tol: float = 0.005,
        modality_gap_tol: float = 0.02,
        modality_gap: float = 10.0,
        modality_min_fraction: float = 0.02,
        max_fit_samples: int = 20000,
        view_weight: float = 0.2,
        single_view_weights: tuple[float, ...] = (0.5, 1.0),
        view_components: int = 32,
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.k_max = k_max
        self.modality_tol = modality_tol
        self.modality_gap_tol = modality_gap_tol
        self.modality_gap = modality_gap
        self.modality_min_fraction = modality_min_fraction
        self.max_fit_samples = max_fit_samples
        self.view_weight = view_weight
        self.single_view_weights = single_view_weights
        self.view_components = view_components
        self.random_state = random_state

    # ---- building blocks -------------------------------------------------------------------
    def _reducer(self) -> FeatureReducer:
        return FeatureReducer(
            n_components=self.n_components,
            max_fit_samples=max(self.max_fit_samples, 50000),
            random_state=self.random_state,
        )

    def _condition_clusterer(
        self, n_clusters: int | None, max_fit_samples: int | None = None
    ) -> SpectralAutoK:
        return SpectralAutoK(
            n_clusters=n_clusters,
            k_max=self.k_max,
            n_neighbors=self.n_neighbors,
            max_fit_samples=self.max_fit_samples if max_fit_samples is None else max_fit_samples,
            random_state=self.random_state,
        )

    def _modality_fit_rows(self, n_modality_rows: int, n_rows: int) -> int:
        """Largest graph fit sample of a modality group of ``n_modality_rows`` of ``n_rows``.

        Up to ``max_fit_samples`` rows in all, every modality group is fitted on all of its rows,
        as before. Above it, each group's sample is its share of ``max_fit_samples`` (the
        sampling density of level 1), at least ``MODALITY_MIN_FIT_ROWS`` and at most
        ``max_fit_samples``, so the sampled rows stay near ``max_fit_samples`` in total instead
        of ``max_fit_samples`` per group.

        Parameters
        ----------
        n_modality_rows : int
            Rows of the modality group.
        n_rows : int
            Rows of the whole data.

        Returns
        -------
        int
            ``max_fit_samples`` for the group's :class:`SpectralAutoK`.
        """
        if n_rows <= self.max_fit_samples:
            return self.max_fit_samples
        share = int(np.ceil(self.max_fit_samples * n_modality_rows / n_rows))
        return min(self.max_fit_samples, max(MODALITY_MIN_FIT_ROWS, share))

    def _split_modalities(self, Z: np.ndarray) -> np.ndarray:
        """Level 1: modality group per row (all zeros unless the graph clearly falls apart)."""
        if len(Z) < 4:
            return np.zeros(len(Z), dtype=np.int64)
        embedding = SpectralEmbedding(
            n_neighbors=self.n_neighbors,
            n_components=min(self.k_max, len(Z) - 2),
            max_fit_samples=self.max_fit_samples,
            random_state=self.random_state,
        )
        E = embedding.fit_transform(Z)
        self._level1_embedding = (embedding, E)
        self.modality_eigenvalues_ = embedding.eigenvalues_
        n_parts = count_disconnected_parts(
            embedding.eigenvalues_, self.modality_tol, self.modality_gap_tol, self.modality_gap
        )
        if n_parts < 2:
            return np.zeros(len(Z), dtype=np.int64)
        # the null space of the Laplacian (trivial vector dropped): constant on each part
        labels = self._modality_kmeans(embedding, E[:, : n_parts - 1], n_parts)
        min_size = max(10, int(np.ceil(self.modality_min_fraction * len(Z))))
        return merge_small_groups(labels.astype(np.int64), Z, min_size)

    def _modality_kmeans(
        self, embedding: SpectralEmbedding, coords: np.ndarray, n_parts: int
    ) -> np.ndarray:
        """k-means of the null-space coordinates; fitted on the spectral fit sample when the
        embedding was sampled (large data), then every row goes to its nearest centre."""
        kmeans = KMeans(n_parts, n_init=4, random_state=self.random_state)
        sample = sampled_rows(embedding, len(coords))
        if sample is None:
            return kmeans.fit_predict(coords)
        kmeans.fit(coords[sample])
        return nearest_centre(coords, kmeans.cluster_centers_)

    # ---- public API ------------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        y: None = None,
        views: dict[str, np.ndarray] | None = None,
        reference: np.ndarray | None = None,
    ) -> TwoLevelGrouper:
        """Form modality groups, then condition groups within each.

        Parameters
        ----------
        X : numpy.ndarray of shape (n, d)
            Raw encoder features (float32).
        y : None
            Ignored.
        views : dict of str to numpy.ndarray of shape (n, d_view), optional
            Hand-crafted views of the same rows, e.g. ``Embedded.views``.
        reference : numpy.ndarray of shape (n, d_ref), optional
            Features of the same rows from another encoder (the ImageNet one, next to an
            encoder adapted on the folder): the modality groups and the number of condition
            groups of each are taken from a grouping of ``reference`` alone, and only the
            condition groups themselves are formed in ``X`` (with the views). Ignored when
            ``n_clusters`` is given.

        Returns
        -------
        TwoLevelGrouper
            The fitted grouper.
        """
        X = np.asarray(X, dtype=np.float32)
        self.__dict__.pop("_refit_input", None)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError("X must be a non-empty (n, d) array.")
        if reference is not None and len(reference) != len(X):
            raise ValueError(f"reference has {len(reference)} rows for {len(X)} features.")
        self._views = self._checked_views(views, len(X))
        with _thread_limit(len(X)):
            self._fit(X, self._reference_split(reference))
        del self._views
        return self

    def _reference_split(self, reference: np.ndarray | None) -> tuple[np.ndarray, list[int]] | None:
        """Modality group per row and condition groups per modality group of a grouping of
        ``reference`` alone (None: no reference, or ``n_clusters`` given)."""
        if reference is None or self.n_clusters is not None:
            return None
        fitted = clone(self).fit(np.asarray(reference, dtype=np.float32))
        counts = np.bincount(fitted.group_modality_, minlength=fitted.n_modalities_)
        return fitted.modality_labels_, [int(count) for count in counts]

    def _checked_views(
        self, views: dict[str, np.ndarray] | None, n_rows: int
    ) -> dict[str, np.ndarray]:
        if not views or self.view_weight <= 0:
            return {}
        for name, array in views.items():
            if len(array) != n_rows:
                raise ValueError(f"view {name!r} has {len(array)} rows for {n_rows} features.")
        return dict(views)

    def _fit(self, X: np.ndarray, split: tuple[np.ndarray, list[int]] | None = None) -> None:
        self.reducer_ = self._reducer().fit(X)
        Z = self.reducer_.transform(X)
        self._level1_embedding = None
        if split is not None:
            self.modality_labels_ = split[0].astype(np.int64)
        elif self.n_clusters is None:
            self.modality_labels_ = self._split_modalities(Z)
        else:
            self.modality_labels_ = np.zeros(len(X), dtype=np.int64)
        self.n_modalities_ = int(self.modality_labels_.max()) + 1
        self.modality_classifier_ = KNeighborsClassifier(
            n_neighbors=min(self.n_neighbors, len(Z))
        ).fit(Z, self.modality_labels_)
        self._fit_conditions(X, Z, None if split is None else split[1])

    def _fit_conditions(
        self, X: np.ndarray, Z: np.ndarray, reference_k: list[int] | None = None
    ) -> None:
        """Level 2: cluster each modality group and assemble the flat outputs (with
        ``reference_k``, modality group ``m`` gets ``reference_k[m]`` groups)."""
        n = len(X)
        self.labels_ = np.zeros(n, dtype=np.int64)
        self.distances_ = np.zeros(n, dtype=np.float64)
        self.map_2d_ = np.zeros((n, 2), dtype=np.float64)
        self.modality_models_: list[tuple[FeatureReducer, SpectralAutoK]] = []
        self.view_models_: list[tuple[float, ViewBlocks, dict[str, float]] | None] = []
        self.views_used_: list[dict[str, object]] = []
        self.group_offsets_: list[int] = []
        group_modality: list[int] = []
        offset = 0
        for m in range(self.n_modalities_):
            rows = np.flatnonzero(self.modality_labels_ == m)
            if self.n_modalities_ == 1:
                reducer, Zm = self.reducer_, Z
            else:
                reducer = self._modality_reducer(X, rows, large=n > self.max_fit_samples)
                Zm = transform_rows(reducer, X, rows)
            shared = self._level1_embedding if self.n_modalities_ == 1 else None
            fit_rows = self._modality_fit_rows(len(rows), n)
            k = self.n_clusters if reference_k is None else reference_k[m]
            model = self._condition_clusterer(k, fit_rows)._fit(Zm, shared)
            model = self._with_views(model, Zm, rows, fit_rows)
            if reference_k is not None:
                self.views_used_[-1]["k_from"] = "reference"
            self.labels_[rows] = model.labels_ + offset
            self.distances_[rows] = model.centre_distances()
            self.map_2d_[rows] = self._layout(model.spectral_coords_, m)
            self.modality_models_.append((reducer, model))
            self.group_offsets_.append(offset)
            group_modality += [m] * model.n_clusters_
            offset += model.n_clusters_
        self.group_modality_ = np.asarray(group_modality, dtype=np.int64)
        self.n_groups_ = offset

    def _with_views(
        self, model: SpectralAutoK, Zm: np.ndarray, rows: np.ndarray, fit_rows: int
    ) -> SpectralAutoK:
        """Re-form ``model``'s ``k`` groups with the views, under the weighting the candidates
        agree on most (``model`` itself if there are no views)."""
        used: dict[str, object] = {"views": ["cnn"], "weights": {"cnn": 1.0}, "k_from": "cnn"}
        if not self._views or model.n_clusters_ < 2:
            self.view_models_.append(None)
            self.views_used_.append(used)
            return model
        blocks = ViewBlocks(
            n_components=self.view_components,
            weight=1.0,
            max_fit_samples=max(self.max_fit_samples, 50000),
            random_state=self.random_state,
        )
        view_rows = {name: array[rows] for name, array in self._views.items()}
        parts = blocks.blocks(blocks.fit(view_rows).transform(view_rows))
        scale = mean_row_norm(Zm)
        singles = self.single_view_weights if len(rows) <= self.max_fit_samples else ()
        candidates = candidate_weightings(blocks.names_, self.view_weight, tuple(singles))
        models = [
            self._candidate_model(model, Zm / scale, parts, weights, fit_rows)
            for weights in candidates
        ]
        best, agreement = most_agreed([m.labels_ for m in models])
        chosen, weights = models[best], candidates[best]
        kept_any = any(weight > 0 for weight in weights.values())
        self.view_models_.append((scale, blocks, weights) if kept_any else None)
        kept = [name for name in blocks.names_ if weights.get(name, 0.0) > 0]
        used["views"] = ["cnn", *kept]
        used["weights"] = {"cnn": 1.0, **{name: weights[name] for name in kept}}
        used["candidates"] = [
            {"weights": {"cnn": 1.0, **w}, "mean_nmi_to_others": round(a, 3)}
            for w, a in zip(candidates, agreement, strict=True)
        ]
        used["agreement"] = view_agreement(
            {"cnn": Zm / scale, **parts}, chosen.labels_, self.random_state
        )
        self.views_used_.append(used)
        return chosen

    def _candidate_model(
        self,
        model: SpectralAutoK,
        base: np.ndarray,
        parts: dict[str, np.ndarray],
        weights: dict[str, float],
        fit_rows: int,
    ) -> SpectralAutoK:
        """``model``'s ``k`` groups formed again in the CNN block plus weighted view blocks."""
        if not any(weight > 0 for weight in weights.values()):
            return model
        joined = weighted_blocks(base, parts, weights)
        return self._condition_clusterer(model.n_clusters_, fit_rows)._fit(joined, None)

    def _modality_reducer(
        self, X: np.ndarray, rows: np.ndarray, large: bool = False
    ) -> FeatureReducer:
        """A reducer fitted on the rows of one modality (only its fit sample is copied).

        With ``large`` (more than ``max_fit_samples`` rows in all), its PCA is fitted on at
        most ``max(max_fit_samples, MODALITY_PCA_ROWS)`` rows of the group.
        """
        reducer = self._reducer()
        if large:
            reducer.set_params(max_fit_samples=max(self.max_fit_samples, MODALITY_PCA_ROWS))
        sample = fit_sample_index(len(rows), reducer.max_fit_samples, reducer.random_state)
        return reducer.fit(X[rows[sample]])

    def _layout(self, coords: np.ndarray, modality: int) -> np.ndarray:
        """2-D map of one modality group: PCA of its eigenmaps, standardised, shifted right.

        Rows are normalised first, as for the clustering itself: raw eigenmap coordinates
        put a few loosely connected images far out and squeeze the rest into a corner.
        """
        if len(coords) < 3 or coords.shape[1] < 2:
            flat = np.zeros((len(coords), 2))
        else:
            unit = coords / np.maximum(np.linalg.norm(coords, axis=1, keepdims=True), 1e-12)
            flat = PCA(2, random_state=self.random_state).fit_transform(unit)
            flat = flat / np.maximum(flat.std(axis=0), 1e-12)
        return flat + np.array([8.0 * modality, 0.0])

    def predict(self, X: np.ndarray, views: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Final group of new rows: modality by kNN vote, then the nearest condition centre.

        Parameters
        ----------
        X : numpy.ndarray of shape (n, d)
            Raw encoder features.
        views : dict of str to numpy.ndarray, optional
            The same views as at fit time (needed when the grouper was fitted with views).

        Returns
        -------
        numpy.ndarray of shape (n,)
            Final group labels in ``0..G-1``.
        """
        X = np.asarray(X, dtype=np.float32)
        self._refit_if_memoised()
        with _thread_limit(len(X)):
            return self._predict(X, views or {})

    def _refit_if_memoised(self) -> None:
        """A grouper taken from a memo (:mod:`medsort.group.memoised`) has its groups but
        not the fitted models that predict: fit them on the same rows (same groups)."""
        refit = self.__dict__.pop("_refit_input", None)
        if refit is not None:
            X, views, reference = refit
            self.fit(X, views=views, reference=reference)

    def _predict(self, X: np.ndarray, views: dict[str, np.ndarray]) -> np.ndarray:
        modality = self.predict_modality(X)
        out = np.zeros(len(X), dtype=np.int64)
        for m, (reducer, model) in enumerate(self.modality_models_):
            rows = np.flatnonzero(modality == m)
            if rows.size:
                Z = reducer.transform(X[rows])
                if self.view_models_[m] is not None:
                    scale, blocks, weights = self.view_models_[m]
                    V = blocks.transform({name: array[rows] for name, array in views.items()})
                    Z = weighted_blocks(Z / scale, blocks.blocks(V), weights)
                out[rows] = model.predict(Z) + self.group_offsets_[m]
        return out

    def predict_modality(self, X: np.ndarray) -> np.ndarray:
        """Modality group of new rows (majority of their nearest fitted rows)."""
        self._refit_if_memoised()
        Z = self.reducer_.transform(np.asarray(X, dtype=np.float32))
        return self.modality_classifier_.predict(Z).astype(np.int64)

    def fit_predict(
        self,
        X: np.ndarray,
        y: None = None,
        views: dict[str, np.ndarray] | None = None,
        reference: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fit and return :attr:`labels_`."""
        return self.fit(X, views=views, reference=reference).labels_
