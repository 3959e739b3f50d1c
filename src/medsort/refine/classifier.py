"""Few-label classifiers on frozen embeddings (SparSam, arXiv 2304.05163).

``FeatureMap`` is the shared preprocessing (power transform → PCA → unit length);
``SparSamClassifier`` is the purely supervised baseline (RBF SVM, kNN or logistic
regression trained on the labelled rows only).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import Normalizer
from sklearn.svm import SVC

from medsort.numeric import FeatureReducer

OTHER = "other"
"""Label given to images that fit none of the labelled classes."""


def unlabelled_mask(y: np.ndarray) -> np.ndarray:
    """True where ``y`` holds no label: ``None``, NaN, ``""`` or ``-1``.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Labels, any dtype.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    y = np.asarray(y, dtype=object)
    return np.array(
        [v is None or v == "" or v == -1 or (isinstance(v, float) and np.isnan(v)) for v in y],
        dtype=bool,
    )


class FeatureMap(FeatureReducer):
    """Power transform, standardisation, PCA and L2 normalisation of embeddings: the
    refine stage's configuration of :class:`~medsort.numeric.FeatureReducer`.

    Fitted on all images (labelled or not), so it needs no labels.

    Parameters
    ----------
    n_components : int
        PCA dimensions kept (capped by the number of rows and columns).
    power : {"sqrt", "yeo-johnson", None}
        ``"sqrt"``: signed square root then standardisation (the fixed power transform of
        PT-MAP, fast); ``"yeo-johnson"``: a fitted
        :class:`~sklearn.preprocessing.PowerTransformer` as in SparSam (slow for wide
        embeddings: about a minute for 1200 x 1280 on 2 cores); ``None``: standardise only.
    random_state : int
        Seed for the PCA and the fit sample.
    max_fit_samples : int
        The map is fitted on at most this many rows (a random sample), so memory stays
        bounded for a million images.

    Attributes
    ----------
    scaler_ : PowerTransformer or StandardScaler
    pca_ : PCA
    """

    def __init__(
        self,
        n_components: int = 128,
        power: str | None = "sqrt",
        random_state: int = 0,
        max_fit_samples: int = 50000,
    ) -> None:
        super().__init__(
            n_components=n_components,
            power=power,
            max_fit_samples=max_fit_samples,
            random_state=random_state,
            scaling="standard",
            unit_output=True,
            svd_solver="auto",
        )

    def fit(self, X: np.ndarray, y: object = None) -> FeatureMap:
        if self.power not in ("sqrt", "yeo-johnson", None):
            raise ValueError(f"Unknown power {self.power!r}: use sqrt, yeo-johnson or None.")
        return super().fit(X)


def fit_features(
    features: str, n_components: int, random_state: int, X: np.ndarray
) -> TransformerMixin:
    """A fitted feature map: ``"auto"`` is :class:`FeatureMap`; ``"passthrough"`` only
    L2-normalises (for rows already mapped, e.g. by a benchmark that maps once)."""
    if features == "auto":
        return FeatureMap(n_components, random_state=random_state).fit(X)
    if features == "passthrough":
        return Normalizer().fit(X)
    raise ValueError(f"Unknown features {features!r}: use auto or passthrough.")


def make_supervised(kind: str, random_state: int = 0) -> BaseEstimator:
    """The classic classifier of SparSam: ``"svm"``, ``"logreg"`` or ``"knn"``."""
    if kind == "svm":
        return SVC(
            kernel="rbf",
            C=1.0,
            class_weight="balanced",
            random_state=random_state,
        )
    if kind == "logreg":
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    if kind == "knn":
        return KNeighborsClassifier(n_neighbors=5, weights="distance", metric="cosine")
    raise ValueError(f"Unknown classifier {kind!r}: use svm, logreg or knn.")


class SparSamClassifier(ClassifierMixin, BaseEstimator):
    """Supervised baseline: :class:`FeatureMap` then SVM, kNN or logistic regression.

    Parameters
    ----------
    kind : {"svm", "logreg", "knn"}
        The classifier.
    n_components : int
        PCA dimensions of the feature map.
    features : {"auto", "passthrough"}
        See :func:`fit_features`.
    random_state : int
        Seed.

    Attributes
    ----------
    features_ : FeatureMap
        Fitted on every row of ``X`` (unlabelled rows included).
    model_ : estimator
        Fitted on the labelled rows only.
    classes_ : ndarray
    """

    def __init__(
        self,
        kind: str = "svm",
        n_components: int = 128,
        features: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.kind = kind
        self.n_components = n_components
        self.features = features
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> SparSamClassifier:
        """Fit on ``X``; rows whose ``y`` is unlabelled only shape the feature map."""
        y = np.asarray(y, dtype=object)
        known = ~unlabelled_mask(y)
        self.features_ = fit_features(self.features, self.n_components, self.random_state, X)
        Z = self.features_.transform(X)[known]
        labels = y[known].astype(str)
        self.classes_ = np.unique(labels)
        if len(self.classes_) == 1:
            self.model_ = None
            return self
        kind = self.kind
        if kind == "svm" and np.bincount(np.unique(labels, return_inverse=True)[1]).min() < 3:
            kind = "logreg"  # as benchmarked: under 3 rows per class, logistic regression
        self.model_ = make_supervised(kind, self.random_state)
        if kind == "knn":
            self.model_.set_params(n_neighbors=min(5, len(labels)))
        self.model_.fit(Z, labels)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        Z = self.features_.transform(X)
        if self.model_ is None:
            return np.ones((len(Z), 1))
        order = np.searchsorted(self.model_.classes_, self.classes_)
        if isinstance(self.model_, SVC):
            return _softmax(_one_vs_rest_scores(self.model_, Z))[:, order]
        return self.model_.predict_proba(Z)[:, order]

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return np.repeat(self.classes_, len(X))
        return self.model_.predict(self.features_.transform(X)).astype(object)


def _one_vs_rest_scores(svm: SVC, Z: np.ndarray) -> np.ndarray:
    """One score per class: SVC's one-vs-rest decision values (votes plus confidence)."""
    scores = svm.decision_function(Z)
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores


def _softmax(scores: np.ndarray) -> np.ndarray:
    # SVC's own probabilities (Platt scaling, probability=True) are deprecated in
    # scikit-learn 1.9 and go in 1.11; a softmax of the decision values ranks classes
    # exactly as predict does (it is not calibrated, nor was Platt on 10 labels).
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)
