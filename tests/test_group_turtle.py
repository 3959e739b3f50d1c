"""The numpy TURTLE of the issue-12 study (``benchmarks/turtle_numpy.py``): its gradient and
its defining behaviour, so the figures in docs/benchmarks.md ("TURTLE, the actual
optimisation") come from a correct implementation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

SPEC = importlib.util.spec_from_file_location(
    "turtle_numpy", Path(__file__).resolve().parents[1] / "benchmarks" / "turtle_numpy.py"
)
turtle_numpy = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(turtle_numpy)


def test_outer_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    spaces = [rng.normal(size=(30, 4)), rng.normal(size=(30, 3))]
    model = turtle_numpy.Turtle(3, gamma=2.0, n_restarts=2)
    V, c = map(list, zip(*(model._init_linear(rng, Z.shape[1]) for Z in spaces), strict=True))
    g = [rng.uniform(0.5, 2.0, size=(2, 1, 3)) for _ in spaces]
    W, b = model._fresh_inner(rng, spaces)
    params = [*V, *g, *c]
    _, grads = model.outer_loss_and_grads(spaces, V, g, c, W, b)
    eps = 1e-6
    for p, grad in zip(params, grads, strict=True):
        for index in [(0, 0, 0), (1, 0, 2), (1, p.shape[1] - 1, 1)]:
            saved = p[index]
            p[index] = saved + eps
            up = model.outer_loss_and_grads(spaces, V, g, c, W, b)[0].sum()
            p[index] = saved - eps
            down = model.outer_loss_and_grads(spaces, V, g, c, W, b)[0].sum()
            p[index] = saved
            assert abs((up - down) / (2 * eps) - grad[index]) < 1e-6


def test_keeps_the_labelling_every_space_can_learn() -> None:
    """Space A holds the groups and a stronger unrelated split (a batch effect); space B holds
    only the groups. TURTLE on both follows the groups; on A alone it follows the batch."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 150)
    batch = rng.permutation(y)
    A = rng.normal(size=(len(y), 6))
    B = rng.normal(size=(len(y), 6))
    A[:, 0] += 4.0 * y
    A[:, 1] += 8.0 * batch
    B[:, 0] += 4.0 * y
    spaces = [turtle_numpy.standardised(A), turtle_numpy.standardised(B)]
    both = turtle_numpy.Turtle(2, n_iter=200, n_restarts=2).fit(spaces).labels_
    alone = turtle_numpy.Turtle(2, n_iter=200, n_restarts=2).fit(spaces[:1]).labels_
    assert normalized_mutual_info_score(y, both) > 0.8
    assert normalized_mutual_info_score(batch, alone) > 0.8
