"""The numeric core shared by grouping, refinement and the audit.

One kNN policy: exact search up to :data:`EXACT_KNN_ROWS` rows, a FAISS IVF-Flat index
(:class:`FaissNeighbours`) above it where ``faiss`` is installed, exact search otherwise.
One feature reducer (:class:`FeatureReducer`: signed power, scaling, PCA, optionally unit
length), and the chunking and sampling helpers that keep memory linear in the rows.

This module imports no other ``medsort`` module, so every stage may use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import PowerTransformer, StandardScaler, normalize

CHUNK_ROWS = 65536
"""Rows transformed at a time, so temporaries stay a few hundred MiB at any N."""
EXACT_KNN_ROWS = 20000
"""Up to this many rows neighbours are exact; above, FAISS IVF (when installed)."""
IVF_PROBES = 4
"""Inverted lists searched per query by the FAISS index (of about sqrt(n_fit) lists)."""
EXACT_BLOCK_ROWS = 512
"""Query rows scored at a time by the exact cosine search (memory ``block x n``)."""


def row_chunks(n_rows: int, size: int | None = None) -> list[slice]:
    """Consecutive row slices of at most ``size`` (default :data:`CHUNK_ROWS`) rows
    covering ``range(n_rows)``."""
    size = CHUNK_ROWS if size is None else size
    return [slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def fit_sample_index(n_rows: int, max_rows: int, random_state: int) -> np.ndarray:
    """Indices of the rows a step is fitted on (all rows when ``n_rows <= max_rows``).

    Parameters
    ----------
    n_rows : int
        Number of rows available.
    max_rows : int
        Largest fit sample.
    random_state : int
        Seed of the random sample.

    Returns
    -------
    numpy.ndarray
        Sorted row indices.
    """
    if n_rows <= max_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


# --- nearest neighbours ------------------------------------------------------------------


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def use_faiss(n_rows: int) -> bool:
    """The policy: approximate search above :data:`EXACT_KNN_ROWS` rows, where FAISS is."""
    return n_rows > EXACT_KNN_ROWS and faiss_available()


class FaissNeighbours:
    """Approximate k-nearest-neighbour queries (FAISS IVF-Flat, L2) over fixed points.

    A million queries against ``n`` indexed points cost ``IVF_PROBES / sqrt(n)`` of an
    exact search.

    Parameters
    ----------
    points : numpy.ndarray of shape (n, d)
        Indexed points.
    n_neighbors : int
        Neighbours returned per query.
    random_state : int
        Seed of the coarse quantiser's k-means.
    """

    def __init__(self, points: np.ndarray, n_neighbors: int, random_state: int) -> None:
        import faiss

        points = np.ascontiguousarray(points, dtype=np.float32)
        dim = points.shape[1]
        n_lists = max(1, min(int(np.sqrt(len(points))), len(points) // 39))  # 39 per list
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, n_lists)
        self.index.cp.seed = random_state
        self.index.cp.niter = 10
        self.index.train(points)
        self.index.add(points)
        self.index.nprobe = min(IVF_PROBES, n_lists)
        self.n_neighbors = n_neighbors

    def __getstate__(self) -> dict[str, object]:
        import faiss

        return {"index": faiss.serialize_index(self.index), "n_neighbors": self.n_neighbors}

    def __setstate__(self, state: dict[str, object]) -> None:
        import faiss

        self.index = faiss.deserialize_index(state["index"])
        self.n_neighbors = state["n_neighbors"]

    def kneighbors(
        self, Z: np.ndarray, return_distance: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Indices of the ``n_neighbors`` nearest indexed points of each row of ``Z``
        (``-1`` where fewer were found); with ``return_distance``, ``(distances, indices)``
        with Euclidean distances, as scikit-learn's ``kneighbors``."""
        squared, neighbours = self.index.search(
            np.ascontiguousarray(Z, dtype=np.float32), self.n_neighbors
        )
        if return_distance:
            return np.sqrt(np.maximum(squared, 0.0)), neighbours
        return neighbours


def exact_index(Z: np.ndarray, n_neighbors: int) -> NearestNeighbors:
    """An exact (scikit-learn) neighbour index over ``Z``."""
    return NearestNeighbors(n_neighbors=n_neighbors).fit(Z)


def nearest_neighbours(Z: np.ndarray, k: int, random_state: int = 0) -> np.ndarray:
    """The ``k`` nearest rows of every row of ``Z``, itself first (Euclidean).

    Exact up to :data:`EXACT_KNN_ROWS` rows, FAISS IVF above (see :func:`use_faiss`): a
    million rows in minutes, not hours.
    """
    if use_faiss(len(Z)):
        return self_first(FaissNeighbours(Z, k, random_state).kneighbors(Z))
    return exact_index(Z, k).kneighbors(Z, return_distance=False)


def cosine_neighbours(
    x: np.ndarray, k: int, random_state: int = 0, block: int = EXACT_BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and indices of the ``k`` nearest *other* rows of unit rows ``x``.

    The same policy as :func:`nearest_neighbours`: exact (in blocks of ``block`` rows,
    memory ``block x n``, never ``n x n``) up to :data:`EXACT_KNN_ROWS` rows, FAISS IVF
    above (on unit rows L2 order is cosine order, ``cos = 1 - d^2 / 2``).
    """
    k = min(k, len(x) - 1)
    if k < 1:
        return np.zeros((len(x), 0), np.float32), np.zeros((len(x), 0), np.int64)
    if not use_faiss(len(x)):
        return blockwise_top_k(lambda rows: x[rows] @ x.T, len(x), k, block)
    distances, idx = FaissNeighbours(x, k + 1, random_state).kneighbors(x, return_distance=True)
    return drop_self((1.0 - distances**2 / 2.0).astype(np.float32), idx)


def blockwise_top_k(
    score_rows: Callable[[np.ndarray], np.ndarray], n: int, k: int, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` scores per row of an implicit ``n x n`` score matrix, self excluded.

    ``score_rows(rows)`` returns the scores of ``rows`` against all ``n`` rows.
    """
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        scores = score_rows(rows)
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        sims[rows] = np.take_along_axis(values, order, axis=1)
        idx[rows] = np.take_along_axis(top, order, axis=1)
    return sims, idx


def self_first(neighbours: np.ndarray) -> np.ndarray:
    """Approximate neighbour lists with each row itself in column 0.

    An approximate search may miss a row itself, or place a duplicate first; callers
    drop column 0 as "self", so put each row there (``-1``, fewer found, becomes self).
    """
    rows = np.arange(len(neighbours))
    out = neighbours.copy()
    missing = out == -1
    out[missing] = np.broadcast_to(rows[:, None], out.shape)[missing]
    is_self = out == rows[:, None]
    position = np.where(is_self.any(axis=1), is_self.argmax(axis=1), out.shape[1] - 1)
    out[rows, position] = out[:, 0]
    out[:, 0] = rows
    return out


def drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row from its own neighbour list (keeping one column less)."""
    rows = np.arange(len(idx))[:, None]
    order = np.argsort(idx == rows, axis=1, kind="stable")[:, : idx.shape[1] - 1]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


# --- feature reduction -------------------------------------------------------------------


class FeatureReducer(TransformerMixin, BaseEstimator):
    """Signed power normalisation, scaling and PCA of encoder features.

    Parameters
    ----------
    n_components : int, default=50
        PCA size (capped by the number of rows and features).
    power : float, "sqrt", "yeo-johnson" or None, default=0.5
        Exponent of the signed power normalisation (``"sqrt"`` is 0.5, the signed square
        root, which damps bursty CNN channels); ``"yeo-johnson"`` a fitted
        :class:`~sklearn.preprocessing.PowerTransformer` (standardises, slow for wide
        embeddings); ``None`` none.
    max_fit_samples : int, default=50000
        Fitted on a random sample of at most this many rows.
    random_state : int, default=0
        Seed for sampling and PCA.
    scaling : {"l2", "standard"}, default="l2"
        After the power: unit length per row, or per-feature standardisation.
    unit_output : bool, default=False
        L2-normalise the PCA output (rows on the unit sphere, for cosine graphs).
    svd_solver : str, default="randomized"
        The PCA's solver.

    Attributes
    ----------
    scaler_ : StandardScaler, PowerTransformer or None
    pca_ : PCA
    """

    def __init__(
        self,
        n_components: int = 50,
        power: float | str | None = 0.5,
        max_fit_samples: int = 50000,
        random_state: int = 0,
        scaling: str = "l2",
        unit_output: bool = False,
        svd_solver: str = "randomized",
    ) -> None:
        self.n_components = n_components
        self.power = power
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state
        self.scaling = scaling
        self.unit_output = unit_output
        self.svd_solver = svd_solver

    def _pre(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.power is None or self.power == "yeo-johnson":
            return X
        exponent = 0.5 if self.power == "sqrt" else float(self.power)
        return np.sign(X) * np.abs(X) ** exponent

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        if self.scaler_ is None:
            return normalize(self._pre(X))
        return np.nan_to_num(self.scaler_.transform(self._pre(X)))

    def fit(self, X: np.ndarray, y: None = None) -> FeatureReducer:
        """Fit the scaling and the PCA on (a sample of) ``X``.

        Parameters
        ----------
        X : numpy.ndarray of shape (n, d)
            Raw encoder features.
        y : None
            Ignored.

        Returns
        -------
        FeatureReducer
            The fitted reducer.
        """
        if not isinstance(self.power, float | int) and self.power not in (
            "sqrt",
            "yeo-johnson",
            None,
        ):
            raise ValueError(
                f"Unknown power {self.power!r}: use a number, sqrt, yeo-johnson or None."
            )
        if self.scaling not in ("l2", "standard"):
            raise ValueError(f"Unknown scaling {self.scaling!r}: use l2 or standard.")
        X = X[fit_sample_index(len(X), self.max_fit_samples, self.random_state)]
        self.scaler_ = None
        if self.power == "yeo-johnson":
            self.scaler_ = PowerTransformer().fit(np.asarray(X, dtype=np.float64))
        elif self.scaling == "standard":
            self.scaler_ = StandardScaler().fit(self._pre(X))
        Z = self._scaled(X)
        n_comp = max(1, min(self.n_components, Z.shape[0] - 1, Z.shape[1]))
        self.pca_ = PCA(
            n_components=n_comp, svd_solver=self.svd_solver, random_state=self.random_state
        ).fit(Z)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map raw features to the PCA space, :data:`CHUNK_ROWS` rows at a time.

        Parameters
        ----------
        X : numpy.ndarray of shape (n, d)
            Raw encoder features.

        Returns
        -------
        numpy.ndarray of shape (n, n_components)
            Reduced features (float32).
        """
        out = np.empty((len(X), self.pca_.n_components_), dtype=np.float32)
        for rows in row_chunks(len(X)):
            Z = self.pca_.transform(self._scaled(X[rows]))
            out[rows] = normalize(np.nan_to_num(Z)) if self.unit_output else Z
        return out
