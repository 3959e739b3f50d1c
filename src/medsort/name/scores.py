"""From per-image label probabilities to one name per group, with a confidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

UNNAMED = "unnamed"


@dataclass(frozen=True)
class GroupName:
    """The name chosen for one group (or modality group).

    ``candidate`` is the best-scoring label even when it was not confident enough;
    ``name`` is ``candidate`` or ``"unnamed"``.
    """

    group: int
    name: str
    candidate: str
    confidence: float
    runner_up: str
    runner_up_confidence: float
    size: int
    margin: float = 0.0
    """``confidence - runner_up_confidence``: how clearly the best label wins."""

    @property
    def named(self) -> bool:
        return self.name != UNNAMED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_same_names(
    labels: Sequence[str], probabilities: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Sum the columns of labels that share a name (e.g. ``covid-19`` of X-ray and CT)."""
    names = list(dict.fromkeys(labels))
    if len(names) == len(labels):
        return list(labels), probabilities
    merged = np.zeros((probabilities.shape[0], len(names)))
    for column, label in enumerate(labels):
        merged[:, names.index(label)] += probabilities[:, column]
    return names, merged


def name_group(
    group: int,
    labels: Sequence[str],
    probabilities: np.ndarray,
    min_confidence: float,
    min_margin: float = 0.0,
) -> GroupName:
    """Name one group from its members' label probabilities.

    Parameters
    ----------
    group : int
        The group's number.
    labels : sequence of str
        Column names of ``probabilities``.
    probabilities : ndarray of shape (n_members, n_labels)
        Per-member probabilities (rows sum to one).
    min_confidence : float
        Below this mean probability of the best label the group stays ``"unnamed"``.
    min_margin : float
        Below this lead of the best label over the runner-up it stays ``"unnamed"`` too.

    Returns
    -------
    GroupName
        ``confidence`` is the members' mean probability of the chosen label.
    """
    mean = probabilities.mean(axis=0) if len(probabilities) else np.zeros(len(labels))
    order = np.argsort(-mean, kind="stable")
    best = int(order[0])
    second = int(order[1]) if len(order) > 1 else None
    confidence = float(mean[best])
    margin = confidence - (float(mean[second]) if second is not None else 0.0)
    sure = confidence >= min_confidence and margin >= min_margin and len(probabilities) > 0
    return GroupName(
        group=int(group),
        name=labels[best] if sure else UNNAMED,
        candidate=labels[best],
        confidence=round(confidence, 4),
        runner_up="" if second is None else labels[second],
        runner_up_confidence=0.0 if second is None else round(float(mean[second]), 4),
        size=len(probabilities),
        margin=round(margin, 4),
    )


def top_k_strings(labels: Sequence[str], probabilities: np.ndarray, k: int = 3) -> list[str]:
    """Per row, ``"pneumonia:0.71;normal:0.20;covid-19:0.09"`` (the ``k`` best labels)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        ";".join(f"{labels[j]}:{probabilities[i, j]:.2f}" for j in row)
        for i, row in enumerate(order)
    ]
