"""The audit's costly, deterministic steps through a :class:`~medsort.memo.Memo`: the
attributes found, the attribute models with their permutation tests and the stability
reruns give the same results for the same inputs, so a re-run of the same sort takes
them from the memo (about 1.9 s of a cached re-run of 1200 images)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from medsort.audit import scoring, stability
from medsort.audit.attributes import Attribute, Ignored
from medsort.audit.attributes import collect_attributes as collect
from medsort.audit.settings import AuditSettings
from medsort.audit.store import json_default
from medsort.memo import Memo, digest
from medsort.results import SortResult


def collect_attributes(
    items: pd.DataFrame, metadata: pd.DataFrame | None, exclude: tuple[str, ...], memo: Memo
) -> tuple[list[Attribute], list[Ignored]]:
    """:func:`medsort.audit.attributes.collect_attributes`, remembered in ``memo``."""
    key = digest("audit-collect", *_table_parts(items), *_table_parts(metadata), list(exclude))
    found = memo.load("audit-collect", key)
    if found is not None:
        restored = _attributes_from(*found)
        if restored is not None:
            return restored
    attributes, ignored = collect(items, metadata, exclude=exclude)
    fields = {
        "attributes": [[a.name, a.source, a.kind, list(a.levels)] for a in attributes],
        "ignored": [[i.name, i.reason] for i in ignored],
    }
    codes = {f"a{i}": a.codes for i, a in enumerate(attributes)}
    memo.save("audit-collect", key, codes, fields, default=json_default)
    return attributes, ignored


def _table_parts(table: pd.DataFrame | None) -> list[Any]:
    """A table as digest parts: its columns, their dtypes and every cell (numbers by their
    bytes, anything else by type and ``repr``: a missing value is not the text "nan")."""
    if table is None:
        return [None]
    parts: list[Any] = [[str(c) for c in table.columns], [str(d) for d in table.dtypes]]
    for _, column in table.items():
        values = column.to_numpy()
        if values.dtype.kind in "biufc":
            parts.append(values)
        else:
            parts.append([[type(v).__name__, repr(v)] for v in values.tolist()])
    return parts


def _attributes_from(
    arrays: dict[str, np.ndarray], fields: Any
) -> tuple[list[Attribute], list[Ignored]] | None:
    try:
        attributes = [
            Attribute(name, source, kind, arrays[f"a{i}"], list(levels))
            for i, (name, source, kind, levels) in enumerate(fields["attributes"])
        ]
        ignored = [Ignored(name, reason) for name, reason in fields["ignored"]]
    except (KeyError, TypeError, ValueError):
        return None
    return attributes, ignored


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


def remembered_stability(
    embeddings: np.ndarray,
    groups: np.ndarray,
    n_clusters: int | None,
    n_runs: int,
    random_state: int,
    memo: Memo,
) -> dict[str, Any] | None:
    """What :func:`group_stability` gave before for these inputs, or ``None``."""
    key = _stability_key(embeddings, groups, n_clusters, n_runs, random_state)
    return _remembered_stability(memo, key)


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
    key = _stability_key(embeddings, groups, n_clusters, n_runs, random_state)
    found = _remembered_stability(memo, key)
    if found is not None:
        return found
    stable = stability.group_stability(
        embeddings, groups, n_clusters=n_clusters, n_runs=n_runs, random_state=random_state
    )
    pairs = {**stable, "per_group": [[g, v] for g, v in stable["per_group"].items()]}
    memo.save("audit-stability", key, {}, pairs, default=json_default)
    return stable


def _stability_key(
    embeddings: np.ndarray, groups: np.ndarray, n_clusters: int | None, n_runs: int, seed: int
) -> str:
    return digest("audit-stability", embeddings, np.asarray(groups), n_clusters, n_runs, seed)


def _remembered_stability(memo: Memo, key: str) -> dict[str, Any] | None:
    found = memo.load("audit-stability", key)
    if found is None or not isinstance(found[1], dict) or "per_group" not in found[1]:
        return None
    fields = found[1]
    return {**fields, "per_group": {int(g): v for g, v in fields["per_group"]}}
