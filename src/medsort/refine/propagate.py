"""Semi-supervised refinement: spread a few labels over a kNN graph of all images.

``GraphLabelSpreading`` follows Zhou et al. (2004) with the sparse kNN graph and
``similarity ** gamma`` weights of Iscen et al. (CVPR 2019, "Label propagation for deep
semi-supervised learning"). It also says "other" for images the labels do not reach:
the spread mass at labelled images held out of the graph's seeds sets how much mass an
image of a labelled class normally receives, and images far below that get ``OTHER``.

Given the unsupervised groups, the labels also add to the structure the grouping found:
each group votes for the (class-balanced) majority of its labelled members, weighted by
how consistently they agree (:func:`group_votes`), and the weight of that vote against the
spread prediction is chosen on labelled images held out of the seeds, so groups that do not
match the classes (or too few labels to tell) leave the prediction as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from medsort.numeric import exact_index, nearest_neighbours, row_chunks
from medsort.refine.classifier import OTHER, SparSamClassifier, fit_features, unlabelled_mask

OTHER_SHARE_BELOW = 0.45
"""At most this share of probability stays with the classes in a group without labels."""


def knn_affinity(Z: np.ndarray, n_neighbors: int, gamma: float) -> sp.csr_matrix:
    """Symmetric sparse affinity ``W = A + A.T`` of a kNN graph on unit rows of ``Z``.

    ``A[i, j] = max(cos(z_i, z_j), 0) ** gamma`` for the ``n_neighbors`` nearest ``j != i``.
    """
    n = len(Z)
    k = min(n_neighbors, n - 1)
    neighbours = nearest_neighbours(Z, k + 1)[:, 1:]
    similarity = np.empty(neighbours.shape, dtype=np.float32)
    for part in row_chunks(n, size=8192):  # Z[neighbours[part]] holds k rows per row
        similarity[part] = np.einsum("nd,nkd->nk", Z[part], Z[neighbours[part]])
    similarity = np.clip(similarity, 0.0, None) ** gamma
    similarity[neighbours == np.arange(n)[:, None]] = 0.0  # no self-loops
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((similarity.ravel(), (rows, neighbours.ravel())), shape=(n, n))
    A.eliminate_zeros()
    return (A + A.T).tocsr()


def normalized_affinity(W: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 W D^-1/2``."""
    degree = np.asarray(W.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    return sp.diags(scale) @ W @ sp.diags(scale)


def spread(S: sp.csr_matrix, Y: np.ndarray, alpha: float, tol: float = 1e-6) -> np.ndarray:
    """Solve ``(I - alpha S) F = Y`` for every column of ``Y`` by conjugate gradients."""
    F = np.zeros_like(Y, dtype=np.float64)
    R = Y.astype(np.float64).copy()
    P = R.copy()
    rr = (R * R).sum(axis=0)
    target = tol**2 * np.maximum(rr, 1e-300)
    for _ in range(1000):
        if np.all(rr <= target):
            break
        AP = P - alpha * (S @ P)
        step = rr / np.maximum((P * AP).sum(axis=0), 1e-300)
        F += P * step
        R -= AP * step
        rr_new = (R * R).sum(axis=0)
        P = R + P * (rr_new / np.maximum(rr, 1e-300))
        rr = rr_new
    return F


def seed_matrix(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """One column per class; each class's labelled rows share a total weight of 1."""
    Y = np.zeros((len(codes), n_classes))
    known = codes >= 0
    Y[np.flatnonzero(known), codes[known]] = 1.0
    return Y / np.maximum(Y.sum(axis=0, keepdims=True), 1.0)


def relative_mass(F: np.ndarray) -> np.ndarray:
    """Top-class mass times the number of images predicted in that class.

    Each class spreads a total of about the same mass over its images, so this puts
    large and small classes on one scale (about 1 for a typical member).
    """
    top = F.argmax(axis=1)
    counts = np.bincount(top, minlength=F.shape[1])
    return F[np.arange(len(F)), top] * counts[top]


def group_votes(
    groups: np.ndarray, codes: np.ndarray, n_classes: int, prior: float, power: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class vote and reliability of every group from its labelled members.

    Parameters
    ----------
    groups : ndarray of shape (n,)
        Group of every row.
    codes : ndarray of int, shape (n,)
        Class code of every labelled row, -1 where unlabelled.
    n_classes : int
        Number of classes.
    prior : float
        Pseudo-count of labelled members: a group with ``m`` of them counts ``m / (m + prior)``.
    power : float
        Exponent of the agreement (top minus second class share of the vote); groups with
        mixed labels get a weight near 0.

    Returns
    -------
    votes : ndarray of shape (n_groups, n_classes)
        Class-balanced label shares per group (0 for groups without a labelled member).
    reliability : ndarray of shape (n_groups,)
        ``agreement ** power * m / (m + prior)`` in [0, 1].
    inverse : ndarray of int, shape (n,)
        Index into the rows of ``votes`` of every row.
    """
    _, inverse = np.unique(groups, return_inverse=True)
    known = codes >= 0
    class_weight = 1.0 / np.maximum(np.bincount(codes[known], minlength=n_classes), 1)
    counts = np.zeros((inverse.max() + 1, n_classes))
    np.add.at(counts, (inverse[known], codes[known]), class_weight[codes[known]])
    members = np.bincount(inverse[known], minlength=len(counts)).astype(float)
    return (*_vote_reliability(counts, members, prior, power), inverse)


def _vote_reliability(
    counts: np.ndarray, members: np.ndarray, prior: float, power: float
) -> tuple[np.ndarray, np.ndarray]:
    total = counts.sum(axis=1, keepdims=True)
    votes = np.where(total > 0, counts / np.maximum(total, 1e-12), 0.0)
    ranked = np.sort(votes, axis=1)
    second = ranked[:, -2] if votes.shape[1] > 1 else np.zeros(len(votes))
    agreement = np.clip(ranked[:, -1] - second, 0.0, 1.0) ** power
    return votes, agreement * members / (members + prior)


PRIOR_FALLBACK = 0.5
"""Weight of a prior that cannot be checked on held-out labels but beats chance."""


def _balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(truth, predicted))


def _best_blend(
    P: np.ndarray, Q: np.ndarray, truth: np.ndarray, scale: np.ndarray | float = 1.0
) -> float:
    """The smallest ``w`` on a 0..1 grid whose ``(1 - v) P + v Q``, ``v = w * scale`` (a
    per-row factor), is most often right, class-balanced."""
    best, best_w = -np.inf, 0.0
    for w in np.linspace(0.0, 1.0, 11):
        v = w * scale
        accuracy = _balanced_accuracy(((1.0 - v) * P + v * Q).argmax(axis=1), truth)
        if accuracy > best + 1e-9:
            best, best_w = accuracy, float(w)
    return best_w


def _blend_into_classes(D: np.ndarray, Q: np.ndarray, w: np.ndarray | float) -> None:
    """Mix ``Q`` into the class columns of ``D`` (``OTHER`` last) with weight ``w``, in
    place, keeping each row's ``OTHER`` probability."""
    keep = 1.0 - D[:, -1:]
    P = D[:, :-1] / np.maximum(keep, 1e-12)
    D[:, :-1] = ((1.0 - w) * P + w * Q) * keep


class GraphLabelSpreading(ClassifierMixin, BaseEstimator):
    """Label spreading over a kNN graph of all images, with an open-set "other".

    Parameters
    ----------
    n_neighbors : int
        Neighbours per image in the graph.
    alpha : float
        How far labels spread (0..1); higher reaches further.
    gamma : float
        Edge weight is ``cosine similarity ** gamma``.
    n_components : int
        PCA dimensions of the :class:`~medsort.refine.classifier.FeatureMap`.
    features : {"auto", "passthrough"}
        See :func:`~medsort.refine.classifier.fit_features`.
    probe_weight : float
        Weight of a balanced logistic-regression probe on the labelled rows, averaged with
        the spread probabilities (0 = spreading only).
    group_vote : bool
        With ``groups`` in :meth:`fit`, blend in each group's vote (see :func:`group_votes`).
    group_prior : float
        Pseudo-count of labelled members behind a group's reliability.
    group_power : float
        Exponent of the agreement of a group's labelled members.
    open_set : bool
        Give ``OTHER`` to images the labels do not reach.
    quantile : float
        Low quantile of held-out labelled images' relative mass that sets the threshold.
    margin : float
        The threshold is ``margin`` times that quantile.
    n_folds : int
        Folds of labelled images held out to calibrate the threshold.
    random_state : int
        Seed.

    Attributes
    ----------
    classes_ : ndarray of str
        The labelled classes (without ``OTHER``).
    features_ : transformer
    embedding_ : ndarray of shape (n, n_components)
        The fitted rows in feature space, for inductive :meth:`predict_proba`.
    mass_ : ndarray of shape (n, n_classes)
        Spread (unnormalised) class mass of every fitted row.
    probe_ : LogisticRegression or None
        The linear probe on the labelled rows.
    prior_scale_ : float
        Weight of the ``prior`` given to :meth:`fit` (0 without one).
    group_scale_ : float
        Weight of the group votes chosen on held-out labelled rows (0: not used).
    group_weights_ : ndarray of shape (n,) or None
        Weight of its group's vote in every fitted row's probabilities.
    threshold_ : float
        Relative mass below which a row is ``OTHER`` (0 when open-set is off or cannot be
        calibrated: a class needs two labels).
    label_distributions_ : ndarray of shape (n, n_classes + 1)
        Probabilities of each class and, last, of ``OTHER``.
    transduction_ : ndarray of str
        The label of every fitted row.
    """

    def __init__(
        self,
        n_neighbors: int = 10,
        alpha: float = 0.9,
        gamma: float = 3.0,
        n_components: int = 128,
        features: str = "auto",
        probe_weight: float = 0.5,
        group_vote: bool = True,
        group_prior: float = 1.0,
        group_power: float = 2.0,
        open_set: bool = True,
        quantile: float = 0.05,
        margin: float = 0.5,
        n_folds: int = 5,
        random_state: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.gamma = gamma
        self.n_components = n_components
        self.features = features
        self.probe_weight = probe_weight
        self.group_vote = group_vote
        self.group_prior = group_prior
        self.group_power = group_power
        self.open_set = open_set
        self.quantile = quantile
        self.margin = margin
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        prior: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> GraphLabelSpreading:
        """Fit on every row of ``X``; unlabelled rows of ``y`` are None, NaN, "" or -1.

        With ``groups`` (e.g. the unsupervised groups) and ``group_vote``, each group's
        reliable label vote is blended in; with ``groups`` and ``open_set``, every image of
        a group without a labelled member is ``OTHER``. ``prior`` gives class probabilities
        of every row that do not come from the labels (e.g. a zero-shot text prior), columns
        in the order of ``classes_``, or a function of ``classes_`` that returns them; its
        weight is learned on held-out labels (see :meth:`_add_prior`).
        """
        y = np.asarray(y, dtype=object)
        known = ~unlabelled_mask(y)
        if not known.any():
            raise ValueError("Label spreading needs at least one labelled image.")
        self.classes_ = np.unique(y[known].astype(str))
        codes = np.full(len(y), -1)
        codes[known] = np.searchsorted(self.classes_, y[known].astype(str))
        self.features_ = fit_features(self.features, self.n_components, self.random_state, X)
        self.embedding_ = self.features_.transform(X)
        S = normalized_affinity(knn_affinity(self.embedding_, self.n_neighbors, self.gamma))
        self.mass_ = spread(S, seed_matrix(codes, len(self.classes_)), self.alpha)
        use_groups = self.group_vote and groups is not None
        held_mass, held_proba, seeded = (
            self._cross_validate(S, codes)
            if self.open_set or use_groups or prior is not None
            else ([], None, None)
        )
        self.threshold_ = (
            float(self.margin * np.quantile(np.concatenate(held_mass), self.quantile))
            if self.open_set and held_mass
            else 0.0
        )
        self.probe_ = self._fit_probe(self.embedding_[known], y[known].astype(str))
        self.label_distributions_ = self._distributions(self.mass_, self.embedding_)
        self.prior_scale_ = 0.0
        if prior is not None:
            prior = prior(self.classes_) if callable(prior) else prior
            held_proba = self._add_prior(np.asarray(prior, dtype=float), codes, held_proba, seeded)
        self.group_scale_, self.group_weights_ = 0.0, None
        if use_groups:
            self._add_group_votes(np.asarray(groups), codes, held_proba)
        if self.open_set and groups is not None:
            self._mark_unlabelled_groups(np.asarray(groups), known)
        self.transduction_ = self._labels(self.label_distributions_)
        return self

    def _mark_unlabelled_groups(self, groups: np.ndarray, known: np.ndarray) -> None:
        """Give ``OTHER`` most of the probability in groups with no labelled member."""
        unreached = ~np.isin(groups, np.unique(groups[known]))
        D = self.label_distributions_
        # Strictly below a half, so OTHER wins even with a single labelled class.
        D[unreached, :-1] *= (
            OTHER_SHARE_BELOW
            * (1.0 - D[unreached, -1:])
            / np.maximum(D[unreached, :-1].sum(axis=1, keepdims=True), 1e-12)
        )
        D[unreached, -1] = 1.0 - D[unreached, :-1].sum(axis=1)

    def _cross_validate(
        self, S: sp.csr_matrix, codes: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Spread (and probe) with folds of labelled rows held out of the seeds.

        Returns the relative masses of held-out rows whose class is still seeded (for the
        open-set threshold), the held-out class probabilities of every labelled row and
        whether its class was still seeded without it.
        """
        rng = np.random.default_rng(self.random_state)
        labelled = np.flatnonzero(codes >= 0)
        n_classes = len(self.classes_)
        folds = rng.permutation(len(labelled)) % max(2, min(self.n_folds, len(labelled)))
        held_mass: list[np.ndarray] = []
        held_proba = np.full((len(labelled), n_classes), 1.0 / n_classes)
        seeded = np.zeros(len(labelled), dtype=bool)
        for fold in np.unique(folds):
            held = labelled[folds == fold]
            seeds = codes.copy()
            seeds[held] = -1
            present = np.isin(codes[held], seeds[seeds >= 0])
            seeded[folds == fold] = present
            if not present.any():
                continue
            F = spread(S, seed_matrix(seeds, n_classes), self.alpha)
            relative = relative_mass(F)
            own = F[held, codes[held]] >= F[held].max(axis=1) - 1e-15
            held_mass.append(np.where(own, relative[held], 0.0)[present])
            held_proba[folds == fold] = self._held_out_proba(F[held], seeds, held)
        return held_mass, held_proba, seeded

    def _add_prior(
        self, prior: np.ndarray, codes: np.ndarray, held_proba: np.ndarray, seeded: np.ndarray
    ) -> np.ndarray:
        """Blend ``prior`` into the probabilities; return the held-out ones blended alike.

        The weight is the one on a grid of 0..1 that gives the best class-balanced accuracy
        on labelled rows predicted without their own label, among rows whose class kept
        another label. With one label per class no such row exists; the prior then gets
        :data:`PRIOR_FALLBACK` weight if it names the labelled images' classes clearly
        better than chance (the prior never saw the labels, so this is a fair test), else
        none.
        """
        if prior.shape != (len(codes), len(self.classes_)):
            raise ValueError(
                f"prior has shape {prior.shape}; expected ({len(codes)}, {len(self.classes_)})."
            )
        labelled = np.flatnonzero(codes >= 0)
        own = codes[labelled]
        if seeded.any():
            own_prior = prior[labelled][seeded]
            self.prior_scale_ = _best_blend(held_proba[seeded], own_prior, own[seeded])
        else:
            chance = 1.0 / len(self.classes_)
            accuracy = _balanced_accuracy(prior[labelled].argmax(axis=1), own)
            self.prior_scale_ = PRIOR_FALLBACK if accuracy >= 1.5 * chance else 0.0
        w = self.prior_scale_
        _blend_into_classes(self.label_distributions_, prior, w)
        return (1.0 - w) * held_proba + w * prior[labelled]

    def _held_out_proba(self, F: np.ndarray, seeds: np.ndarray, held: np.ndarray) -> np.ndarray:
        """Row-normalised spread mass of held-out rows, averaged with a fold probe."""
        total = F.sum(axis=1, keepdims=True)
        P = np.where(total > 0, F / np.maximum(total, 1e-300), 1.0 / F.shape[1])
        train = seeds >= 0
        if self.probe_weight <= 0 or len(np.unique(seeds[train])) < 2:
            return P
        probe = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        probe.fit(self.embedding_[train], seeds[train])
        Q = np.zeros_like(P)
        Q[:, probe.classes_] = probe.predict_proba(self.embedding_[held])
        return (1.0 - self.probe_weight) * P + self.probe_weight * Q

    def _add_group_votes(
        self, groups: np.ndarray, codes: np.ndarray, held_proba: np.ndarray
    ) -> None:
        """Blend each group's vote into the probabilities, scaled by held-out accuracy.

        The scale is the smallest on a grid of 0..1 that gives the best class-balanced
        accuracy on labelled rows, each predicted without its own label (held out of the
        seeds and left out of its group's vote; see :func:`_best_blend`).
        """
        n_classes = len(self.classes_)
        votes, reliability, inverse = group_votes(
            groups, codes, n_classes, self.group_prior, self.group_power
        )
        labelled = np.flatnonzero(codes >= 0)
        own = codes[labelled]
        class_weight = 1.0 / np.bincount(own, minlength=n_classes)
        counts = votes * 0.0
        np.add.at(counts, (inverse[labelled], own), class_weight[own])
        members = np.bincount(inverse[labelled], minlength=len(votes)).astype(float)
        loo_counts = counts[inverse[labelled]]
        loo_counts[np.arange(len(labelled)), own] -= class_weight[own]
        loo_votes, loo_reliability = _vote_reliability(
            np.maximum(loo_counts, 0.0),
            members[inverse[labelled]] - 1,
            self.group_prior,
            self.group_power,
        )
        self.group_scale_ = _best_blend(held_proba, loo_votes, own, loo_reliability[:, None])
        self.group_weights_ = self.group_scale_ * reliability[inverse]
        _blend_into_classes(self.label_distributions_, votes[inverse], self.group_weights_[:, None])

    def _fit_probe(self, Z: np.ndarray, labels: np.ndarray) -> LogisticRegression | None:
        if self.probe_weight <= 0 or len(self.classes_) < 2:
            return None
        probe = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        return probe.fit(Z, labels)

    def _blend(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Row-normalised spread mass, averaged with the probe's probabilities."""
        total = F.sum(axis=1, keepdims=True)
        P = np.where(total > 0, F / np.maximum(total, 1e-300), 1.0 / F.shape[1])
        if self.probe_ is None:
            return P
        order = np.searchsorted(self.probe_.classes_, self.classes_)
        probe = self.probe_.predict_proba(Z)[:, order]
        return (1.0 - self.probe_weight) * P + self.probe_weight * probe

    def _distributions(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Class probabilities with ``OTHER`` as the last column."""
        P = self._blend(F, Z)
        relative = relative_mass(F)
        if self.threshold_ > 0:
            p_other = self.threshold_ / (self.threshold_ + np.maximum(relative, 0.0))
        else:
            p_other = np.zeros(len(F))
        return np.column_stack([P * (1.0 - p_other)[:, None], p_other])

    def _labels(self, distributions: np.ndarray) -> np.ndarray:
        names = np.append(self.classes_, OTHER)
        return names[distributions.argmax(axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (classes, then ``OTHER``) of new rows from their fitted neighbours."""
        Z = self.features_.transform(X)
        k = min(self.n_neighbors, len(self.embedding_))
        distances, neighbours = exact_index(self.embedding_, k).kneighbors(Z)
        weights = np.clip(1.0 - distances**2 / 2.0, 0.0, None) ** self.gamma
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        mass = np.einsum("nk,nkc->nc", weights, self.mass_[neighbours])
        return self._distributions_like_fit(mass, Z)

    def _distributions_like_fit(self, mass: np.ndarray, Z: np.ndarray) -> np.ndarray:
        # relative_mass needs the class sizes of the fitted rows, not of the new ones
        counts = np.bincount(self.mass_.argmax(axis=1), minlength=self.mass_.shape[1])
        top = mass.argmax(axis=1)
        relative = mass[np.arange(len(mass)), top] * counts[top]
        P = self._blend(mass, Z)
        if self.threshold_ > 0:
            p_other = self.threshold_ / (self.threshold_ + relative)
        else:
            p_other = np.zeros(len(mass))
        return np.column_stack([P * (1.0 - p_other)[:, None], p_other])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._labels(self.predict_proba(X))


class ClusterThenLabel(ClassifierMixin, BaseEstimator):
    """k-means on all images; each cluster takes the balanced majority of its labels.

    Clusters without a labelled member take the mean prediction of a
    :class:`SparSamClassifier` over their members.

    Parameters
    ----------
    n_clusters : int
        Number of k-means clusters.
    n_components : int
        PCA dimensions of the feature map.
    features : {"auto", "passthrough"}
        See :func:`~medsort.refine.classifier.fit_features`.
    random_state : int
        Seed.

    Attributes
    ----------
    classes_, transduction_, label_distributions_, clusters_
    """

    def __init__(
        self,
        n_clusters: int = 30,
        n_components: int = 128,
        features: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.features = features
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> ClusterThenLabel:
        y = np.asarray(y, dtype=object)
        known = ~unlabelled_mask(y)
        base = SparSamClassifier("svm", self.n_components, self.features, self.random_state)
        base.fit(X, y)
        self.classes_ = base.classes_
        proba = base.predict_proba(X)
        Z = base.features_.transform(X)
        k = min(self.n_clusters, len(Z))
        self.clusters_ = KMeans(k, n_init=1, random_state=self.random_state).fit_predict(Z)
        codes = np.searchsorted(self.classes_, y[known].astype(str))
        weight = 1.0 / np.bincount(codes, minlength=len(self.classes_))
        dist = np.zeros((len(Z), len(self.classes_)))
        for cluster in range(k):
            members = self.clusters_ == cluster
            in_known = members[known]
            if in_known.any():
                votes = np.bincount(
                    codes[in_known], weights=weight[codes[in_known]], minlength=len(self.classes_)
                )
                dist[members] = votes / votes.sum()
            else:
                dist[members] = proba[members].mean(axis=0)
        self.label_distributions_ = dist
        self.transduction_ = self.classes_[dist.argmax(axis=1)]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.transduction_
