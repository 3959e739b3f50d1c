"""Utility and detectability of attributes (after Data AUDIT, arXiv 2304.03218).

For an attribute ``A`` and a target ``T`` (the groups, or the true labels when given):

utility
    How much ``A`` and ``T`` tell about each other: the mutual information ``I(A; T)``
    divided by ``min(H(A), H(T))`` (0 = independent, 1 = one determines the other),
    *adjusted for chance* like AMI: ``(I - E0[I]) / (max - E0[I])`` with ``E0`` the mean
    over label permutations. The same permutations give the p-value.
detectability
    How much of ``A`` an image model reads from the embeddings *beyond* ``T``:
    a cross-validated logistic regression on PCA of the embeddings predicts ``Â``, and
    ``I(A; Â | T) / H(A | T)`` (stratified by ``T``, chance-adjusted with permutations of
    ``Â`` within each stratum) measures it. Without conditioning (``I(A; Â) / H(A)``) it
    says how visible ``A`` is at all.
beyond the label (groups only, with labels)
    ``I(A; G | Y) / H(A | Y)``: do the groups follow ``A`` even among images of one class?

p-values are Benjamini–Hochberg corrected over every test of the audit, and a finding
also needs a minimum effect size, so that large sets do not flag trivial associations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

EPS = 1e-12


def codes_of(values: np.ndarray) -> np.ndarray:
    """Integer codes ``0..k-1`` of any label array."""
    return np.unique(np.asarray(values), return_inverse=True)[1].astype(np.int64)


def entropy(a: np.ndarray) -> float:
    """Shannon entropy of integer codes, in bits."""
    p = np.bincount(a) / max(len(a), 1)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """``I(A; B)`` in bits from the joint counts of two integer code arrays."""
    return conditional_mi(a, b, np.zeros(len(a), dtype=np.int64))


def conditional_entropy(a: np.ndarray, y: np.ndarray) -> float:
    """``H(A | Y)`` in bits."""
    return entropy(a) - mutual_info(a, y)


def conditional_mi(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """``I(A; B | Y) = sum_y p(y) I(A; B | Y=y)`` in bits."""
    if len(a) == 0:
        return 0.0
    shape = (int(y.max()) + 1, int(a.max()) + 1, int(b.max()) + 1)
    flat = (y * shape[1] + a) * shape[2] + b
    counts = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape)
    return float(_cmi_counts(counts))


def _cmi_counts(counts: np.ndarray) -> np.ndarray:
    """Conditional mutual information (bits) of joint counts shaped ``(..., ky, ka, kb)``."""
    p = counts / counts.sum(axis=(-3, -2, -1), keepdims=True)
    py = p.sum(axis=(-2, -1), keepdims=True)
    pya = p.sum(axis=-1, keepdims=True)
    pyb = p.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = p * np.log2(p * py / (pya * pyb))
    return np.nansum(terms, axis=(-3, -2, -1))


@dataclass
class Score:
    """A chance-adjusted information score with its permutation p-value.

    Attributes
    ----------
    value : float
        Adjusted normalised score, clipped to ``[0, 1]``.
    raw_bits : float
        The unadjusted (conditional) mutual information in bits.
    p : float
        Permutation p-value (see :func:`permutation_test`).
    """

    value: float
    raw_bits: float
    p: float


def permutation_test(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray | None,
    n_permutations: int,
    rng: np.random.Generator,
) -> tuple[float, np.ndarray]:
    """Observed ``I(A; B | Y)`` and its null distribution, ``B`` permuted within each ``Y``.

    All permutations are drawn at once (a sort of ``y + U(0, 1)`` shuffles within strata)
    and counted with one ``bincount``.
    """
    y = np.zeros(len(a), dtype=np.int64) if y is None else y
    order = np.argsort(y, kind="stable")
    a, b, y = a[order], b[order], y[order]
    shape = (int(y.max()) + 1, int(a.max()) + 1, int(b.max()) + 1)
    size = int(np.prod(shape))
    base = (y * shape[1] + a) * shape[2]
    observed = float(_cmi_counts(np.bincount(base + b, minlength=size).reshape(shape)))
    null = []
    chunk = max(1, 2_000_000 // max(len(a), 1))
    for start in range(0, n_permutations, chunk):
        m = min(chunk, n_permutations - start)
        shuffle = np.argsort(y[None, :] + rng.random((m, len(a))), axis=1)
        flat = np.arange(m)[:, None] * size + base[None, :] + b[shuffle]
        counts = np.bincount(flat.ravel(), minlength=m * size).reshape(m, *shape)
        null.append(_cmi_counts(counts))
    return observed, np.concatenate(null) if null else np.zeros(0)


def permutation_p(observed: float, null: np.ndarray, tail_at: int = 10) -> float:
    """Permutation p-value, ``(1 + #null >= observed) / (1 + n)``.

    In the far tail (fewer than ``tail_at`` null values reach the observed one) the p-value
    is extrapolated from a gamma distribution fitted to the null by moments, as
    permutation counts cannot resolve the small p-values a multiple-testing correction
    needs (tail approximation, Winkler et al. 2016).
    """
    exceed = int(np.sum(null >= observed - EPS))
    empirical = (1 + exceed) / (1 + len(null))
    if exceed >= tail_at or len(null) < 20:
        return float(empirical)
    mean, var = float(null.mean()), float(null.var())
    if mean <= EPS or var <= EPS:
        return float(empirical)
    from scipy.stats import gamma  # imported on use: scipy.stats takes a second to import

    tail = gamma.sf(observed, a=mean**2 / var, scale=var / mean)
    return float(min(empirical, max(tail, 1e-300)))


def utility(a: np.ndarray, t: np.ndarray, n_permutations: int, rng: np.random.Generator) -> Score:
    """Chance-adjusted ``I(A; T) / min(H(A), H(T))`` with a permutation p-value."""
    observed, null = permutation_test(a, t, None, n_permutations, rng)
    return _adjusted(observed, null, min(entropy(a), entropy(t)))


def conditional_score(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray | None,
    n_permutations: int,
    rng: np.random.Generator,
) -> Score:
    """Chance-adjusted ``I(A; B | Y) / H(A | Y)``; ``B`` is permuted within each ``Y``.

    ``y=None`` gives the unconditional ``I(A; B) / H(A)``.
    """
    observed, null = permutation_test(a, b, y, n_permutations, rng)
    ceiling = entropy(a) if y is None else conditional_entropy(a, y)
    return _adjusted(observed, null, ceiling)


def _adjusted(observed: float, null: np.ndarray, ceiling: float) -> Score:
    expected = float(null.mean()) if len(null) else 0.0
    if ceiling - expected <= EPS:
        return Score(value=0.0, raw_bits=observed, p=1.0)
    value = (observed - expected) / (ceiling - expected)
    p = permutation_p(observed, null)
    return Score(value=float(np.clip(value, 0.0, 1.0)), raw_bits=observed, p=p)


def image_features(embeddings: np.ndarray, n_components: int = 32, random_state: int = 0):
    """PCA of the L2-normalised embeddings: the input of every attribute classifier."""
    x = np.asarray(embeddings, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)
    n_components = max(1, min(n_components, x.shape[0] - 1, x.shape[1]))
    if x.shape[0] < 3:  # nothing to learn from: no attribute can be cross-validated anyway
        return x[:, :n_components] - x[:, :n_components].mean(axis=0)
    return PCA(n_components=n_components, random_state=random_state).fit_transform(x)


def predict_attribute(
    features: np.ndarray, a: np.ndarray, n_splits: int = 5, random_state: int = 0
) -> np.ndarray | None:
    """Cross-validated prediction ``Â`` of attribute codes from image features.

    Logistic regression (balanced class weights) on standardised PCA features, stratified
    ``n_splits``-fold. ``None`` when a level is too rare to cross-validate.
    """
    smallest = int(np.bincount(a)[np.bincount(a) > 0].min())
    n_splits = min(n_splits, smallest)
    if n_splits < 2 or len(np.unique(a)) < 2:
        return None
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.5, max_iter=300, class_weight="balanced"),
    )
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return cross_val_predict(model, features, a, cv=folds)


def balanced_accuracy(a: np.ndarray, predicted: np.ndarray) -> float:
    return float(balanced_accuracy_score(a, predicted))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same order as ``p``."""
    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.clip(q, 0, 1)
    return out
