"""Feature reduction for grouping: signed square root, L2, PCA, then a kNN-graph spectral embedding.

The linear part (:class:`FeatureReducer`) and the non-linear part (:class:`SpectralEmbedding`)
are fitted on at most ``max_fit_samples`` rows; the remaining rows are mapped with ``transform``,
so memory stays linear in the number of rows.

Scale thresholds (see ``docs/scaling.md``): up to ``max_fit_samples`` rows everything is exact
and unchanged. Above it, transforms run in chunks of ``CHUNK_ROWS`` rows, and the
out-of-sample nearest neighbours come from a FAISS IVF index over the fit sample (when
``faiss`` is installed; exact scikit-learn search otherwise).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import eigsh, lobpcg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

CHUNK_ROWS = 65536
"""Rows transformed at a time, so temporaries stay a few hundred MiB at any N."""
IVF_PROBES = 4
"""Inverted lists searched per query by the FAISS index (of about sqrt(n_fit) lists)."""


def row_chunks(n_rows: int, size: int = CHUNK_ROWS) -> list[slice]:
    """Consecutive row slices of at most ``size`` rows covering ``range(n_rows)``."""
    return [slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


class FaissNeighbours:
    """Approximate k-nearest-neighbour queries (FAISS IVF-Flat, L2) over fixed points.

    Used for out-of-sample rows when the fit was sampled: a million queries against the
    fit sample cost ``IVF_PROBES / sqrt(n_fit)`` of an exact search.

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

    def kneighbors(self, Z: np.ndarray, return_distance: bool = False) -> np.ndarray:
        """Indices of the ``n_neighbors`` nearest indexed points of each row of ``Z``."""
        del return_distance
        _, neighbours = self.index.search(
            np.ascontiguousarray(Z, dtype=np.float32), self.n_neighbors
        )
        return neighbours


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def fit_sample_index(n_rows: int, max_rows: int, random_state: int) -> np.ndarray:
    """Indices of the rows a non-linear step is fitted on (all rows when ``n_rows <= max_rows``).

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


class FeatureReducer(TransformerMixin, BaseEstimator):
    """Signed power normalisation, L2 normalisation and PCA of encoder features.

    Parameters
    ----------
    n_components : int, default=50
        PCA size (capped by the number of rows and features).
    power : float, default=0.5
        Exponent of the signed power normalisation applied before L2 (0.5 is the signed
        square root, which damps bursty CNN channels).
    max_fit_samples : int, default=50000
        PCA is fitted on a random sample of at most this many rows.
    random_state : int, default=0
        Seed for sampling and PCA.
    """

    def __init__(
        self,
        n_components: int = 50,
        power: float = 0.5,
        max_fit_samples: int = 50000,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.power = power
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def _normalise(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        X = np.sign(X) * np.abs(X) ** self.power
        return normalize(X)

    def fit(self, X: np.ndarray, y: None = None) -> FeatureReducer:
        """Fit the PCA on (a sample of) ``X``.

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
        idx = fit_sample_index(len(X), self.max_fit_samples, self.random_state)
        Z = self._normalise(X[idx])
        n_comp = max(1, min(self.n_components, Z.shape[0] - 1, Z.shape[1]))
        self.pca_ = PCA(
            n_components=n_comp, svd_solver="randomized", random_state=self.random_state
        ).fit(Z)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map raw features to the PCA space.

        Parameters
        ----------
        X : numpy.ndarray of shape (n, d)
            Raw encoder features.

        Returns
        -------
        numpy.ndarray of shape (n, n_components)
            Reduced features (float32).
        """
        if len(X) <= CHUNK_ROWS:
            return self.pca_.transform(self._normalise(X)).astype(np.float32)
        out = np.empty((len(X), self.pca_.n_components_), dtype=np.float32)
        for rows in row_chunks(len(X)):
            out[rows] = self.pca_.transform(self._normalise(X[rows]))
        return out


def knn_graph(Z: np.ndarray, n_neighbors: int) -> tuple[sp.csr_matrix, NearestNeighbors]:
    """Symmetric 0/1 kNN connectivity graph (no self loops) and the fitted neighbour index.

    Parameters
    ----------
    Z : numpy.ndarray of shape (n, d)
        Points.
    n_neighbors : int
        Neighbours per point (capped at ``n - 1``).

    Returns
    -------
    graph : scipy.sparse.csr_matrix of shape (n, n)
        ``max(A, A.T)`` of the directed kNN graph.
    index : sklearn.neighbors.NearestNeighbors
        Index over ``Z`` for out-of-sample queries.
    """
    k = max(1, min(n_neighbors, len(Z) - 1))
    index = NearestNeighbors(n_neighbors=k).fit(Z)
    graph = index.kneighbors_graph(mode="connectivity")
    graph = graph.maximum(graph.T).tocsr()
    return graph, index


def laplacian_eigenmaps(
    graph: sp.csr_matrix, n_components: int, random_state: int, shift_invert: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest eigenpairs of the normalised graph Laplacian.

    Parameters
    ----------
    graph : scipy.sparse.csr_matrix of shape (n, n)
        Symmetric affinity graph.
    n_components : int
        Number of eigenpairs, the trivial one included.
    random_state : int
        Seed of the solver's start vector.
    shift_invert : bool, default=True
        Solve with shift-invert (a sparse LU of the Laplacian: exact and fast on small
        graphs, but its fill-in makes it minutes on a 20,000-row kNN graph). ``False``
        runs Lanczos on the normalised adjacency ``I - L`` for its largest eigenpairs
        instead (LOBPCG, no factorisation; used for sampled fits of large data).

    Returns
    -------
    eigenvalues : numpy.ndarray of shape (n_components,)
        Ascending, in ``[0, 2]``; one near-zero value per (nearly) disconnected part.
    embedding : numpy.ndarray of shape (n, n_components)
        Eigenvectors scaled by ``D^-1/2`` (random-walk coordinates), columns matched.
    """
    n = graph.shape[0]
    lap, degree = laplacian(graph.astype(np.float64), normed=True, return_diag=True)
    m = min(n_components, n - 1)
    if n <= 200 or m >= n // 2:
        values, vectors = eigh(lap.toarray())
        values, vectors = values[:m], vectors[:, :m]
    elif not shift_invert:
        # a block solver: single-vector Lanczos misses repeated eigenvalues (one per
        # disconnected part), LOBPCG finds them all
        start = np.random.default_rng(random_state).standard_normal((n, m))
        adjacency = sp.identity(n, format="csr") - lap
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not reaching the tolerance"
            values, vectors = lobpcg(adjacency, start, largest=True, tol=1e-8, maxiter=500)
        values = 1.0 - values
        order = np.argsort(values)
        values, vectors = values[order], vectors[:, order]
    else:
        v0 = np.random.default_rng(random_state).uniform(-1, 1, n)
        values, vectors = eigsh(lap, k=m, sigma=-1e-3, which="LM", v0=v0)
        order = np.argsort(values)
        values, vectors = values[order], vectors[:, order]
    embedding = vectors / np.maximum(degree, 1e-12)[:, None]
    # fix signs so results do not depend on the solver
    signs = np.sign(embedding[np.abs(embedding).argmax(axis=0), range(m)])
    return np.clip(values, 0.0, 2.0), embedding * signs


class SpectralEmbedding(TransformerMixin, BaseEstimator):
    """Laplacian eigenmaps of a kNN graph, with out-of-sample ``transform``.

    The graph is built on at most ``max_fit_samples`` rows; other rows (and new data) get the
    mean embedding of their nearest fitted neighbours, as UMAP's ``transform`` initialises them.

    Parameters
    ----------
    n_neighbors : int, default=15
        Neighbours per point in the graph.
    n_components : int, default=10
        Non-trivial eigenvectors kept.
    max_fit_samples : int, default=20000
        Largest number of rows the graph is built on.
    random_state : int, default=0
        Seed for sampling and the eigensolver.
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        n_components: int = 10,
        max_fit_samples: int = 20000,
        random_state: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def fit(self, Z: np.ndarray, y: None = None) -> SpectralEmbedding:
        """Build the graph on (a sample of) ``Z`` and compute its eigenmaps.

        Parameters
        ----------
        Z : numpy.ndarray of shape (n, d)
            Reduced features.
        y : None
            Ignored.

        Returns
        -------
        SpectralEmbedding
            The fitted embedding; ``eigenvalues_`` includes the trivial zero.
        """
        idx = fit_sample_index(len(Z), self.max_fit_samples, self.random_state)
        graph, self.index_ = knn_graph(Z[idx], self.n_neighbors)
        sampled = len(idx) < len(Z)  # large data: no sparse LU (see laplacian_eigenmaps)
        values, vectors = laplacian_eigenmaps(
            graph, self.n_components + 1, self.random_state, shift_invert=not sampled
        )
        self.eigenvalues_ = values
        self.embedding_fit_ = vectors[:, 1:].astype(np.float32)
        self.fit_index_ = idx
        self.n_fit_rows_ = len(Z)
        self.query_index_ = self.index_
        if len(idx) < len(Z) and faiss_available():
            self.query_index_ = FaissNeighbours(Z[idx], self.index_.n_neighbors, self.random_state)
        return self

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """Embed new rows as the mean embedding of their nearest fitted neighbours.

        Parameters
        ----------
        Z : numpy.ndarray of shape (n, d)
            Reduced features.

        Returns
        -------
        numpy.ndarray of shape (n, n_components)
            Spectral coordinates.
        """
        index = getattr(self, "query_index_", self.index_)
        if len(Z) <= CHUNK_ROWS:
            neighbours = index.kneighbors(Z, return_distance=False)
            return self.embedding_fit_[neighbours].mean(axis=1)
        out = np.empty((len(Z), self.embedding_fit_.shape[1]), dtype=np.float32)
        for rows in row_chunks(len(Z)):
            neighbours = index.kneighbors(Z[rows], return_distance=False)
            out[rows] = self.embedding_fit_[neighbours].mean(axis=1)
        return out

    def fit_transform(self, Z: np.ndarray, y: None = None) -> np.ndarray:
        """Fit, then return the embedding of every row of ``Z``.

        Rows in the fit sample keep their own eigenmap coordinates; the rest are transformed.
        """
        self.fit(Z)
        out = np.empty((len(Z), self.embedding_fit_.shape[1]), dtype=np.float32)
        out[self.fit_index_] = self.embedding_fit_
        rest = np.setdiff1d(np.arange(len(Z)), self.fit_index_)
        if rest.size:
            out[rest] = self.transform(Z[rest])
        return out
