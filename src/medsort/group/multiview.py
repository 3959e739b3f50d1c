"""Several views of each image in one grouping space: the CNN block plus weighted
hand-crafted blocks (colour, texture; see :mod:`medsort.embed.views`).

How much each view counts is chosen on the folder itself, without labels: the same ``k``
groups are formed under a few candidate weightings, and the partition that agrees most
with all the others (average NMI, the "median partition" of a cluster ensemble, Strehl and
Ghosh 2002) is kept. A view that only adds noise on a folder (colour on grey ultrasound)
gives partitions nobody else agrees with, so weightings that lean on it lose.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from medsort.group.reduce import fit_sample_index, row_chunks


def mean_row_norm(Z: np.ndarray) -> float:
    """Root mean squared row norm (the scale each block is divided by)."""
    return float(np.sqrt(max(np.mean(np.einsum("ij,ij->i", Z, Z)), 1e-12)))


class ViewBlocks(TransformerMixin, BaseEstimator):
    """Standardise, PCA-reduce and scale each hand-crafted view to unit mean row norm.

    Each block then weighs ``weight`` relative to a CNN block of unit mean row norm, however
    many raw values the view has.

    Parameters
    ----------
    n_components : int, default=32
        PCA size of each view.
    weight : float, default=0.2
        Scale of every view block against the CNN block.
    max_fit_samples : int, default=50000
        Scaler and PCA are fitted on at most this many rows.
    random_state : int, default=0
        Seed for sampling and PCA.

    Attributes
    ----------
    names_ : list of str
        Views in block order.
    models_ : dict
        View name -> ``(scaler, pca, scale)``.
    """

    def __init__(
        self,
        n_components: int = 32,
        weight: float = 0.2,
        max_fit_samples: int = 50000,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.weight = weight
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def fit(self, views: dict[str, np.ndarray], y: None = None) -> ViewBlocks:
        """Fit one scaler + PCA per view on (a sample of) its rows."""
        self.names_ = sorted(views)
        self.models_: dict[str, tuple[StandardScaler, PCA, float]] = {}
        for name in self.names_:
            X = np.asarray(views[name], dtype=np.float32)
            sample = X[fit_sample_index(len(X), self.max_fit_samples, self.random_state)]
            scaler = StandardScaler().fit(sample)
            size = max(1, min(self.n_components, sample.shape[0] - 1, sample.shape[1]))
            pca = PCA(size, random_state=self.random_state).fit(scaler.transform(sample))
            scale = mean_row_norm(pca.transform(scaler.transform(sample)))
            self.models_[name] = (scaler, pca, scale)
        return self

    def transform(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted blocks side by side, ``(n, sum of PCA sizes)`` float32."""
        missing = [name for name in self.names_ if name not in views]
        if missing:
            raise ValueError(f"views missing for prediction: {', '.join(missing)}")
        n = len(views[self.names_[0]])
        width = sum(model[1].n_components_ for model in self.models_.values())
        out = np.empty((n, width), dtype=np.float32)
        for part in row_chunks(n):
            out[part] = np.hstack([self._block(name, views[name][part]) for name in self.names_])
        return out

    def _block(self, name: str, X: np.ndarray) -> np.ndarray:
        scaler, pca, scale = self.models_[name]
        return pca.transform(scaler.transform(np.asarray(X, dtype=np.float32))) * (
            self.weight / scale
        )

    def blocks(self, Z: np.ndarray) -> dict[str, np.ndarray]:
        """Split a :meth:`transform` output back into its view blocks."""
        out, start = {}, 0
        for name in self.names_:
            width = self.models_[name][1].n_components_
            out[name] = Z[:, start : start + width]
            start += width
        return out


def candidate_weightings(
    names: list[str], joint_weight: float, single_weights: tuple[float, ...]
) -> list[dict[str, float]]:
    """Weight of each view block (the CNN block weighs 1) in every candidate grouping space.

    With ``single_weights`` empty there is one candidate: every view at ``joint_weight``.
    Otherwise the CNN alone, every view at ``joint_weight``, and each view alone beside the
    CNN at each of ``single_weights``. Order matters for ties: earlier candidates win.

    Parameters
    ----------
    names : list of str
        View names.
    joint_weight : float
        Weight of every view in the joint candidate.
    single_weights : tuple of float
        Weights of one view at a time.

    Returns
    -------
    list of dict
        View name -> weight (views left out weigh 0) per candidate.
    """
    joint = {name: joint_weight for name in names}
    if not single_weights:
        return [joint]
    singles = [{name: weight} for name in names for weight in single_weights]
    return [{}, joint, *singles]


def most_agreed(partitions: list[np.ndarray]) -> tuple[int, list[float]]:
    """Index of the partition with the highest mean NMI to all the others, and those means.

    The selection rule of cluster ensembles (Strehl and Ghosh 2002): with no labels, the
    partition that shares most information with every other candidate is the one least
    driven by what only one candidate sees. Ties go to the earliest partition.
    """
    n = len(partitions)
    if n == 1:
        return 0, [1.0]
    scores = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            scores[i, j] = scores[j, i] = normalized_mutual_info_score(partitions[i], partitions[j])
    means = [float(row.sum() / (n - 1)) for row in scores]
    best = max(range(n), key=lambda i: (round(means[i], 9), -i))
    return best, means


def weighted_blocks(
    base: np.ndarray, blocks: dict[str, np.ndarray], weights: dict[str, float]
) -> np.ndarray:
    """The CNN block beside each view block scaled by its weight (weight 0: left out)."""
    kept = [blocks[name] * weight for name, weight in sorted(weights.items()) if weight > 0]
    return np.hstack([base, *kept]) if kept else base


def view_agreement(
    blocks: dict[str, np.ndarray], labels: np.ndarray, random_state: int, max_rows: int = 5000
) -> dict[str, float]:
    """NMI between ``labels`` and k-means (same k) in each view alone, on at most
    ``max_rows`` rows: which views carry the grouping (1 = that view alone gives it)."""
    k = int(labels.max()) + 1
    if k < 2:
        return {name: 1.0 for name in blocks}
    rows = fit_sample_index(len(labels), max_rows, random_state)
    out = {}
    for name, Z in blocks.items():
        alone = KMeans(k, n_init=2, random_state=random_state).fit_predict(Z[rows])
        out[name] = round(float(normalized_mutual_info_score(labels[rows], alone)), 3)
    return out
