"""The audit's costly, deterministic steps through a :class:`~medsort.memo.Memo`: the
attribute models with their permutation tests and the stability reruns give the same
numbers for the same inputs, so a re-run of the same sort takes them from the memo
(about 1.7 s of a cached re-run of 1200 images)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from medsort.audit import scoring, stability
from medsort.audit.attributes import Attribute
from medsort.audit.settings import AuditSettings
from medsort.audit.store import json_default
from medsort.memo import Memo, digest
from medsort.results import SortResult


def audit_attributes(
    result: SortResult,
    attributes: list[Attribute],
    labels: np.ndarray | None,
    settings: AuditSettings,
    memo: Memo,
) -> list[dict[str, Any]]:
    """:func:`medsort.audit.scoring.audit_attributes`, remembered in ``memo``."""
    described = [(a.name, a.source, a.kind, list(a.levels), a.codes) for a in attributes]
    key = digest(
        "audit-attributes",
        result.embeddings,
        result.assignments["group"].to_numpy(),
        result.assignments["modality_group"].to_numpy(),
        labels,
        asdict(settings),
        *[part for attribute in described for part in attribute],
    )
    found = memo.load("audit-attributes", key)
    if found is not None and isinstance(found[1], list):
        return found[1]
    rows = scoring.audit_attributes(result, attributes, labels, settings)
    memo.save("audit-attributes", key, {}, rows, default=json_default)
    return rows


def group_stability(
    embeddings: np.ndarray,
    groups: np.ndarray,
    n_clusters: int | None,
    n_runs: int,
    random_state: int,
    memo: Memo,
) -> dict[str, Any]:
    """:func:`medsort.audit.stability.group_stability`, remembered in ``memo`` (its
    integer group ids, JSON object keys, are kept as pairs)."""
    key = digest(
        "audit-stability", embeddings, np.asarray(groups), n_clusters, n_runs, random_state
    )
    found = memo.load("audit-stability", key)
    if found is not None and isinstance(found[1], dict) and "per_group" in found[1]:
        fields = found[1]
        return {**fields, "per_group": {int(g): v for g, v in fields["per_group"]}}
    stable = stability.group_stability(
        embeddings, groups, n_clusters=n_clusters, n_runs=n_runs, random_state=random_state
    )
    pairs = {**stable, "per_group": [[g, v] for g, v in stable["per_group"].items()]}
    memo.save("audit-stability", key, {}, pairs, default=json_default)
    return stable
