"""TURTLE (Gadetsky, Jiang and Brbic, ICML 2024, "Let Go of Your Labels with Unsupervised
Transfer") on frozen feature blocks, in numpy only: the study behind docs/benchmarks.md
"Tried for issue 12 and dropped". Not part of the package.

The task encoder gives each row soft labels, the mean over representation spaces of
``softmax(weight-normalised linear map of that space)``. Each outer step fits fresh linear
classifiers, one per space, to those labels for a few Adam steps (the inner problem; the paper's
cold start), then moves the task encoder to lower their cross-entropy against its labels
(first-order: the inner classifiers are held fixed) minus ``gamma`` times the entropy of each
space's mean label distribution (keeps every group in use). Restarts are run side by side as a
leading array axis; the restart with the lowest final outer loss is kept. The label-free
generalisation score of the paper (cross-validated linear-probe accuracy of the labels, averaged
over spaces) is :func:`generalisation_score`.
"""

from __future__ import annotations

import numpy as np


def standardised(Z: np.ndarray) -> np.ndarray:
    """Centred and scaled to unit mean row norm, so one learning rate suits every space.

    Columns keep their relative variances: whitening them makes every direction of a PCA block
    equally easy to learn, and TURTLE then finds balanced splits along noise (measured: chest
    NMI 0.001, lung 0.035 on the whitened CNN block alone).
    """
    Z = np.asarray(Z, dtype=np.float64)
    Z = Z - Z.mean(axis=0)
    return Z / np.sqrt(max(float(np.mean((Z * Z).sum(axis=1))), 1e-12))


def softmax(A: np.ndarray) -> np.ndarray:
    A = A - A.max(axis=-1, keepdims=True)
    E = np.exp(A)
    return E / E.sum(axis=-1, keepdims=True)


class Adam:
    """Adam on a list of arrays (updated in place)."""

    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray], b1: float = 0.9, b2: float = 0.999) -> None:
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.maximum(p, 1e-12))).sum(axis=-1)


class Turtle:
    """Numpy TURTLE on a few feature blocks.

    Parameters
    ----------
    n_clusters : int
        Number of groups.
    gamma : float
        Weight of the entropy of the mean label distribution (paper default 10).
    n_iter : int
        Outer (task encoder) steps.
    inner_steps : int
        Adam steps of the inner classifiers per outer step (paper: 10, cold start).
    outer_lr, inner_lr : float
        Adam learning rates (features have unit mean row norm, see :func:`standardised`).
    n_restarts : int
        Independent random starts run together; the lowest final loss is kept.
    warm_start : bool
        Keep the inner classifiers between outer steps instead of starting them afresh.
    random_state : int
        Seed.
    """

    def __init__(
        self,
        n_clusters: int,
        gamma: float = 10.0,
        n_iter: int = 300,
        inner_steps: int = 10,
        outer_lr: float = 0.05,
        inner_lr: float = 0.1,
        n_restarts: int = 4,
        warm_start: bool = False,
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.gamma = gamma
        self.n_iter = n_iter
        self.inner_steps = inner_steps
        self.outer_lr = outer_lr
        self.inner_lr = inner_lr
        self.n_restarts = n_restarts
        self.warm_start = warm_start
        self.random_state = random_state

    # ---- pieces -----------------------------------------------------------------------------
    def _init_linear(self, rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
        bound = 1.0 / np.sqrt(d)
        R, K = self.n_restarts, self.n_clusters
        return rng.uniform(-bound, bound, (R, d, K)), rng.uniform(-bound, bound, (R, 1, K))

    def _fresh_inner(self, rng: np.random.Generator, spaces: list[np.ndarray]) -> tuple[list, list]:
        pairs = [self._init_linear(rng, Z.shape[1]) for Z in spaces]
        return [w for w, _ in pairs], [b for _, b in pairs]

    def _task_labels(self, spaces, V, g, c):
        """Per-space soft labels ``(R, n, K)`` and the weight-normalised maps."""
        per_space, units = [], []
        for Z, v, gg, cc in zip(spaces, V, g, c, strict=True):
            norm = np.sqrt((v * v).sum(axis=1, keepdims=True))  # (R, 1, K): one norm per output
            u = v / np.maximum(norm, 1e-12)
            per_space.append(softmax(Z @ (u * gg) + cc))
            units.append((u, norm))
        return per_space, units

    def _inner(self, spaces, labels, W, b):
        """Fit the inner classifiers to ``labels`` for ``inner_steps`` Adam steps."""
        n = labels.shape[1]
        opt = Adam([*W, *b], self.inner_lr)
        for _ in range(self.inner_steps):
            grads_w, grads_b = [], []
            for Z, w, bb in zip(spaces, W, b, strict=True):
                dB = (softmax(Z @ w + bb) - labels) / n
                grads_w.append(Z.T @ dB)
                grads_b.append(dB.sum(axis=1, keepdims=True))
            opt.step([*grads_w, *grads_b])
        return W, b

    def outer_loss_and_grads(self, spaces, V, g, c, W, b) -> tuple[np.ndarray, list]:
        """The outer loss per restart (inner classifiers ``W, b`` held fixed) and its gradient
        with respect to the task encoder ``[*V, *g, *c]``."""
        n, S = len(spaces[0]), len(spaces)
        per_space, units = self._task_labels(spaces, V, g, c)
        labels = sum(per_space) / S
        log_r = [
            np.log(np.maximum(softmax(Z @ w + bb), 1e-12))
            for Z, w, bb in zip(spaces, W, b, strict=True)
        ]
        d_labels = -sum(log_r) / n  # d(sum_s mean CE)/d labels
        loss = (-(labels * sum(log_r)).sum(axis=(1, 2)) / n) - self.gamma * sum(
            entropy(q.mean(axis=1)) for q in per_space
        )
        grads_v, grads_g, grads_c = [], [], []
        for Z, q, (u, norm), gg in zip(spaces, per_space, units, g, strict=True):
            mean_q = q.mean(axis=1, keepdims=True)
            dq = d_labels / S + self.gamma * (np.log(np.maximum(mean_q, 1e-12)) + 1) / n
            dA = q * (dq - (dq * q).sum(axis=-1, keepdims=True))
            dTheta = Z.T @ dA
            dg = (dTheta * u).sum(axis=1, keepdims=True)
            grads_v.append(gg / np.maximum(norm, 1e-12) * (dTheta - dg * u))
            grads_g.append(dg)
            grads_c.append(dA.sum(axis=1, keepdims=True))
        return loss, [*grads_v, *grads_g, *grads_c]

    # ---- fit --------------------------------------------------------------------------------
    def fit(self, spaces: list[np.ndarray]) -> Turtle:
        """Find the labelling of the rows that linear classifiers in every space learn best."""
        rng = np.random.default_rng(self.random_state)
        spaces = [np.asarray(Z, dtype=np.float64) for Z in spaces]
        S = len(spaces)
        V, c = zip(*(self._init_linear(rng, Z.shape[1]) for Z in spaces), strict=True)
        V, c = list(V), list(c)
        g = [np.sqrt((v * v).sum(axis=1, keepdims=True)) for v in V]  # torch weight_norm init
        outer = Adam([*V, *g, *c], self.outer_lr)
        W = b = None
        for _ in range(self.n_iter):
            per_space, units = self._task_labels(spaces, V, g, c)
            labels = sum(per_space) / S
            if W is None or not self.warm_start:
                W, b = self._fresh_inner(rng, spaces)
            W, b = self._inner(spaces, labels, W, b)
            self.loss_, grads = self.outer_loss_and_grads(spaces, V, g, c, W, b)
            outer.step(grads)
        per_space, _ = self._task_labels(spaces, V, g, c)
        soft = sum(per_space) / len(spaces)
        self.best_restart_ = int(np.argmin(self.loss_))
        self.soft_labels_ = soft[self.best_restart_]
        self.restart_labels_ = soft.argmax(axis=-1)
        self.labels_ = self.soft_labels_.argmax(axis=1)
        return self


def generalisation_score(
    spaces: list[np.ndarray], labels: np.ndarray, n_folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """Cross-validated linear-probe agreement with ``labels``, averaged over spaces.

    ``acc`` is the paper's score (accuracy of an L2 logistic regression, C=1, trained on the
    other folds); ``kappa`` corrects it for the agreement a classifier guessing with the label
    frequencies would reach (otherwise fewer groups always score higher).
    """
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    folds = np.array_split(np.random.default_rng(seed).permutation(len(labels)), n_folds)
    accs = []
    for Z in spaces:
        pred = np.empty_like(labels)
        for k, test in enumerate(folds):
            train = np.concatenate([f for j, f in enumerate(folds) if j != k])
            if len(np.unique(labels[train])) < 2:
                pred[test] = labels[train][0]
                continue
            model = LogisticRegression(C=1.0, max_iter=300).fit(Z[train], labels[train])
            pred[test] = model.predict(Z[test])
        accs.append(float(np.mean(pred == labels)))
    acc = float(np.mean(accs))
    freq = np.bincount(labels) / len(labels)
    chance = float((freq**2).sum())
    return {"acc": acc, "kappa": (acc - chance) / max(1 - chance, 1e-12)}
