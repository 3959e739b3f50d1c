"""How stable each group is: does it come back when the grouping is rerun on a subsample?

Each rerun fits the group stage (:class:`medsort.group.TwoLevelGrouper`, with the sort's
own ``n_clusters``) on a random ``fraction`` of the rows with another seed, reusing the
embeddings of the output folder. A group's score is the Jaccard index of its members in
the subsample with the best-matching rerun group, averaged over the reruns (Hennig 2007,
"cluster-wise assessment of cluster stability"): about 1 means it comes back every
time; below :data:`UNSTABLE` it is more a cut through a continuum than a group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

UNSTABLE = 0.6
"""Hennig's rule of thumb: clusters below 0.6 mean Jaccard are 'dissolved'."""


def best_jaccard(members: np.ndarray, labels: np.ndarray) -> float:
    """Largest Jaccard index between a boolean member mask and any group of ``labels``."""
    if not members.any():
        return float("nan")
    best = 0.0
    for label in np.unique(labels):
        other = labels == label
        union = np.sum(members | other)
        best = max(best, float(np.sum(members & other) / union) if union else 0.0)
    return best


def group_stability(
    embeddings: np.ndarray,
    groups: np.ndarray,
    n_clusters: int | None = None,
    n_runs: int = 5,
    fraction: float = 0.8,
    random_state: int = 0,
) -> dict[str, Any]:
    """Mean best-match Jaccard of every group over ``n_runs`` subsampled reruns.

    Parameters
    ----------
    embeddings : ndarray of shape (n, d)
        The sort's item vectors.
    groups : ndarray of shape (n,)
        The sort's final group per row.
    n_clusters : int, optional
        As the sort was run (``None``: automatic number of groups, on two levels).
    n_runs : int
        Reruns, each on another random subsample and seed.
    fraction : float
        Share of the rows in each subsample.
    random_state : int
        Seed of the subsamples and reruns.

    Returns
    -------
    dict
        ``per_group`` ({group id: mean Jaccard}), ``unstable`` (ids below
        :data:`UNSTABLE`), ``overall`` (size-weighted mean), ``n_runs``, ``fraction``,
        ``n_groups`` (the sort's) and ``rerun_groups`` (how many groups each rerun found).
    """
    from medsort.group import TwoLevelGrouper

    groups = np.asarray(groups)
    ids = np.unique(groups)
    n = len(groups)
    size = int(round(fraction * n))
    if len(ids) < 2 or size < 20:
        return {"per_group": {}, "unstable": [], "overall": None, "n_runs": 0}
    rng = np.random.default_rng(random_state)
    scores = {int(g): [] for g in ids}
    rerun_groups = []
    for run in range(n_runs):
        rows = np.sort(rng.choice(n, size=size, replace=False))
        model = TwoLevelGrouper(n_clusters=n_clusters, random_state=random_state + run + 1)
        labels = model.fit(embeddings[rows]).labels_
        rerun_groups.append(int(model.n_groups_))
        for g in ids:
            members = groups[rows] == g
            if members.any():
                scores[int(g)].append(best_jaccard(members, labels))
    per_group = {g: round(float(np.mean(v)), 3) for g, v in scores.items() if v}
    weights = np.array([np.sum(groups == g) for g in per_group])
    overall = float(np.average(list(per_group.values()), weights=weights))
    return {
        "per_group": per_group,
        "unstable": [g for g, v in per_group.items() if v < UNSTABLE],
        "overall": round(overall, 3),
        "n_runs": n_runs,
        "fraction": fraction,
        "threshold": UNSTABLE,
        "n_groups": int(len(ids)),
        "rerun_groups": rerun_groups,
    }
