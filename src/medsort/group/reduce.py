"""Feature reduction for grouping: signed square root, L2, PCA, then a kNN-graph spectral embedding.

The linear part (:class:`~medsort.numeric.FeatureReducer`, from the numeric core) and the
non-linear part (:class:`SpectralEmbedding`)
are fitted on at most ``max_fit_samples`` rows; the remaining rows are mapped with ``transform``,
so memory stays linear in the number of rows.

Scale thresholds (see ``docs/scaling.md``): up to ``max_fit_samples`` rows everything is exact
and unchanged. Above it, transforms run in chunks of ``CHUNK_ROWS`` rows, and the
out-of-sample nearest neighbours come from the numeric core's FAISS IVF index over the fit
sample (when ``faiss`` is installed; exact scikit-learn search otherwise).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import eigsh, lobpcg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.neighbors import NearestNeighbors

from medsort.numeric import (
    CHUNK_ROWS,
    FaissNeighbours,
    FeatureReducer,
    exact_index,
    faiss_available,
    fit_sample_index,
    row_chunks,
)

__all__ = [
    "CHUNK_ROWS",
    "FaissNeighbours",
    "FeatureReducer",
    "SpectralEmbedding",
    "fit_sample_index",
    "knn_graph",
    "laplacian_eigenmaps",
    "row_chunks",
]


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
    index = exact_index(Z, k)
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
