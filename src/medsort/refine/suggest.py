"""``medsort suggest``: which images to label first, and next.

Without labels: the most typical image of every group (modality groups first covered),
then a farthest-point spread over all images. With labels: the images the model is least
sure about (or that no label reaches), spread over groups and kept apart in feature space.
Diversity uses distances to the chosen images only, never an N x N matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medsort.io.outputs import write_csv
from medsort.refine.classifier import FeatureMap, unlabelled_mask
from medsort.refine.label import LABELS_USED, fit_predict, match_labels, read_labels
from medsort.results import SortResult

TO_LABEL = "to_label.csv"
TO_LABEL_COLUMNS = ["path", "item", "group", "reason", "label"]
POOL_FACTOR = 10


def typical_first(assignments: pd.DataFrame, n: int) -> list[int]:
    """Row indices: the most typical image of each group, one group at a time.

    Groups are visited so that each modality group is reached early; within a group,
    images go by ``distance`` to the group centre.
    """
    ranked = assignments.assign(_row=np.arange(len(assignments))).sort_values(
        ["distance", "_row"], kind="stable"
    )
    ranked["_rank"] = ranked.groupby("group").cumcount()
    ranked["_mrank"] = ranked.groupby("modality_group")["_rank"].rank(method="first")
    firsts = ranked[ranked["_rank"] == 0].sort_values(["_mrank", "group"])
    return firsts["_row"].to_list()[:n]


def farthest_points(
    Z: np.ndarray, chosen: list[int], n: int, candidates: np.ndarray, score: np.ndarray
) -> list[int]:
    """Greedy k-center picks from ``candidates``: maximise ``score * distance to chosen``.

    Parameters
    ----------
    Z : ndarray of shape (n_rows, d)
        Unit-length features.
    chosen : list of int
        Rows already chosen (or labelled); new picks keep away from them.
    n : int
        How many to add.
    candidates : ndarray of int
        Rows that may be picked.
    score : ndarray of shape (n_rows,)
        Usefulness of each row (e.g. uncertainty); 1 for plain diversity.
    """
    picks: list[int] = []
    if len(candidates) == 0 or n <= 0:
        return picks
    C = Z[candidates]
    if chosen:
        nearest = (1.0 - C @ Z[chosen].T).min(axis=1)
    else:
        nearest = np.full(len(candidates), 1.0)
    nearest = np.maximum(nearest, 0.0)
    for _ in range(min(n, len(candidates))):
        gain = score[candidates] * nearest
        best = int(np.argmax(gain))
        if gain[best] <= 0 and picks:
            break
        picks.append(int(candidates[best]))
        nearest = np.minimum(nearest, np.maximum(1.0 - C @ C[best], 0.0))
        nearest[best] = -1.0
    return picks


def uncertainty(proba: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``1 - margin`` between the two most probable labels, and a reason per row."""
    top = np.sort(proba, axis=1)[:, ::-1]
    second = top[:, 1] if proba.shape[1] > 1 else np.zeros(len(proba))
    order = np.argsort(-proba, axis=1)
    reasons = []
    for row, (a, b) in zip(proba, order[:, :2] if proba.shape[1] > 1 else order, strict=False):
        if names[a] == "other":
            reasons.append(f"no label reaches it (other {row[a]:.2f}): maybe a new class")
        else:
            reasons.append(f"uncertain: {names[a]} {row[a]:.2f} vs {names[b]} {row[b]:.2f}")
    return 1.0 - (top[:, 0] - second), reasons


def suggest(result: SortResult, n: int, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The next ``n`` images to label, as rows of ``to_label.csv``."""
    assignments = result.assignments
    Z = FeatureMap().fit_transform(result.embeddings)
    if labels is None or labels.empty:
        return _first_batch(assignments, Z, n)
    y = match_labels(assignments, labels)
    proba, names, _ = fit_predict(result, y)
    score, reasons = uncertainty(proba, names)
    labelled = np.flatnonzero(~unlabelled_mask(y))
    open_rows = np.flatnonzero(unlabelled_mask(y))
    pool = open_rows[np.argsort(-score[open_rows], kind="stable")[: POOL_FACTOR * n]]
    picks = _spread_over_groups(Z, labelled.tolist(), pool, score, assignments, n)
    return _table(assignments, picks, [reasons[i] for i in picks])


def _spread_over_groups(
    Z: np.ndarray,
    chosen: list[int],
    pool: np.ndarray,
    score: np.ndarray,
    assignments: pd.DataFrame,
    n: int,
) -> list[int]:
    """Farthest-point picks with at most ``ceil(n / groups in pool)`` from each group."""
    groups = assignments["group"].to_numpy()
    cap = int(np.ceil(n / max(1, len(np.unique(groups[pool])))))
    picks: list[int] = []
    while len(picks) < n:
        used = np.array([groups[p] for p in picks])
        allowed = pool[[not np.isin(p, picks) and (used == groups[p]).sum() < cap for p in pool]]
        if len(allowed) == 0:
            cap += 1
            if cap > n:
                break
            continue
        new = farthest_points(Z, chosen + picks, 1, allowed, score)
        if not new:
            break
        picks.extend(new)
    return picks


def _first_batch(assignments: pd.DataFrame, Z: np.ndarray, n: int) -> pd.DataFrame:
    picks = typical_first(assignments, n)
    reasons = [f"most typical image of group {assignments['group'].iloc[i]}" for i in picks]
    rest = np.setdiff1d(np.arange(len(assignments)), picks)
    more = farthest_points(Z, picks, n - len(picks), rest, np.ones(len(assignments)))
    reasons += ["far from every image chosen so far (coverage)"] * len(more)
    return _table(assignments, picks + more, reasons)


def _table(assignments: pd.DataFrame, rows: list[int], reasons: list[str]) -> pd.DataFrame:
    chosen = assignments.iloc[rows]
    return pd.DataFrame(
        {
            "path": chosen["path"].to_numpy(),
            "item": chosen["item"].to_numpy(),
            "group": chosen["group"].to_numpy(),
            "reason": reasons,
            "label": "",
        },
        columns=TO_LABEL_COLUMNS,
    )


def suggest_folder(out_dir: Path, n: int = 20, labels_csv: Path | None = None) -> pd.DataFrame:
    """Write ``OUT_DIR/to_label.csv``; labels from ``labels_csv`` or the last ``label`` run."""
    out_dir = Path(out_dir)
    result = SortResult.load(out_dir)
    if labels_csv is None and (out_dir / LABELS_USED).is_file():
        labels_csv = out_dir / LABELS_USED
    labels = read_labels(Path(labels_csv)) if labels_csv is not None else None
    table = suggest(result, n, labels)
    write_csv(table, out_dir / TO_LABEL)
    return table
