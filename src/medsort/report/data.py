"""The data the report's page works on, embedded in ``report.html`` as one JSON block.

Columns, not records, keep the page small: 10,000 images come to about 2 MB of JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsort.memo import NO_MEMO, Memo
from medsort.results import SortResult

N_NEIGHBOURS = 6
MAX_NEIGHBOUR_ROWS = 50_000
"""Above this many images the large view shows no nearest neighbours (N x N work)."""
MAX_MAP_POINTS = 20_000
MAX_PAGE_ITEMS = 50_000
"""Above this many images the page holds a spread of each group, not every image."""
KEEP_ENDS = 100
"""A sampled group always keeps this many of its most and of its least typical images."""
AUDIT_FILE = "audit.json"
QUALITY_FILE = "quality.csv"
OUTLIERS_FILE = "outliers.csv"
DUPLICATES_FILE = "duplicates.csv"
NEAR_DUPLICATES_FILE = "near_duplicates.csv"
PREDICTIONS_FILE = "predictions.csv"


def page_data(
    result: SortResult,
    out_dir: Path,
    thumbs: list[str],
    titles: dict[int, str],
    colors: dict[int, str],
    sizes: dict[int, int] | None = None,
    memo: Memo = NO_MEMO,
) -> dict[str, Any]:
    """Everything the page's script needs: items, groups, modality groups, the map.

    ``result`` holds the rows shown (see :func:`page_rows`); ``sizes`` the groups' true
    sizes when that is only part of them; the neighbour lists go through ``memo``.
    """
    a = result.assignments
    sizes = sizes or {}
    return {
        "run_id": run_id(result),
        "items": _items(result, thumbs),
        "predicted": predictions_by_row(a, out_dir),
        "flags": flags_by_row(a, out_dir),
        "neighbours": memoised_neighbours(result.embeddings, a["modality_group"].to_numpy(), memo),
        "groups": [
            {
                "id": int(g),
                "modality": int(members["modality_group"].iloc[0]),
                "title": titles[int(g)],
                "color": colors[int(g)],
                "size": len(members),
                "total": sizes.get(int(g), len(members)),
            }
            for g, members in a.groupby("group", sort=True)
        ],
        "map_rows": _map_rows(len(a)),
        "modality_views": [views_note(u) for u in result.run.views_per_modality_group or []],
        "input_dir": str(result.run.input_dir or ""),
        "encoder_licence": result.run.encoder_licence,
    }


def views_note(used: dict[str, Any]) -> str:
    """One line on which views carried a modality group's grouping (run.json's
    ``views_per_modality_group`` entry), e.g. "Grouped on: CNN 1, texture 0.5"."""
    weights = used.get("weights", {"cnn": 1.0})
    line = "Grouped on: " + ", ".join(
        f"{'CNN' if name == 'cnn' else name} {weight:g}" for name, weight in weights.items()
    )
    candidates = used.get("candidates", [])
    if len(candidates) > 1:
        line += f" (the weighting that {len(candidates) - 1} others agreed with most)"
    agreement = used.get("agreement", {})
    if agreement:
        line += ". Each view alone agrees with the groups: " + ", ".join(
            f"{'CNN' if name == 'cnn' else name} {value:.2f}" for name, value in agreement.items()
        )
    return line + "."


def page_rows(assignments: pd.DataFrame, limit: int = MAX_PAGE_ITEMS) -> np.ndarray | None:
    """The rows the page shows: all (``None``) up to ``limit`` images; above, per group
    its :data:`KEEP_ENDS` most and least typical images and an even spread by typicality
    in between, groups in proportion to their size."""
    if len(assignments) <= limit:
        return None
    share = limit / len(assignments)
    chosen = []
    frame = assignments.assign(_row=np.arange(len(assignments)))
    for _, members in frame.groupby("group", sort=True):
        ordered = members.sort_values(["distance", "_row"])["_row"].to_numpy()
        n = min(len(ordered), max(2 * KEEP_ENDS, int(round(len(ordered) * share))))
        middle = ordered[KEEP_ENDS:-KEEP_ENDS] if len(ordered) > 2 * KEEP_ENDS else ordered[:0]
        spread = middle[np.linspace(0, len(middle) - 1, max(0, n - 2 * KEEP_ENDS)).astype(int)]
        chosen.append(np.concatenate([ordered[:KEEP_ENDS], spread, ordered[-KEEP_ENDS:]]))
    return np.unique(np.concatenate(chosen))


def shown_part(result: SortResult, rows: np.ndarray | None) -> SortResult:
    """The result restricted to ``rows`` (the whole result for ``None``)."""
    if rows is None:
        return result
    items = (
        result.items.iloc[rows] if len(result.items) == len(result.assignments) else result.items
    )
    return SortResult(
        assignments=result.assignments.iloc[rows].reset_index(drop=True),
        items=items.reset_index(drop=True),
        embeddings=result.embeddings[rows],
        skipped=result.skipped,
        run=result.run,
    )


def run_id(result: SortResult) -> str:
    """Names the page's stored marks: the same sort keeps its marks across rebuilds."""
    run = result.run
    token = f"{run.input_dir}\0{len(result.assignments)}\0{run.encoder}"
    return hashlib.sha1(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _items(result: SortResult, thumbs: list[str]) -> dict[str, list]:
    a = result.assignments
    xy = _map_xy(a[["map_x", "map_y"]].to_numpy(dtype=float))
    items = result.items if len(result.items) == len(a) else pd.DataFrame(index=a.index)
    return {
        "path": a["path"].astype(str).tolist(),
        "item": a["item"].astype(str).tolist(),
        "modality": a["modality_group"].astype(int).tolist(),
        "group": a["group"].astype(int).tolist(),
        "distance": np.round(a["distance"].to_numpy(dtype=float), 4).tolist(),
        "x": xy[:, 0].tolist(),
        "y": xy[:, 1].tolist(),
        "format": _column(items, "format"),
        "width": _column(items, "width"),
        "height": _column(items, "height"),
        "thumb": thumbs,
    }


def _column(items: pd.DataFrame, name: str) -> list:
    if name not in items.columns:
        return [""] * len(items)
    return items[name].astype(str).tolist()


def _map_xy(xy: np.ndarray) -> np.ndarray:
    """Map positions in [0, 1]; percentiles, not min/max, so outliers do not squeeze it."""
    if len(xy) == 0 or not np.isfinite(xy).all():
        return np.full((len(xy), 2), 0.5)
    low, high = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    return np.round(np.clip((xy - low) / span, -0.02, 1.02), 4)


def _map_rows(n: int) -> list[int] | None:
    """The rows the map draws: all (``None``) or a fixed random sample."""
    if n <= MAX_MAP_POINTS:
        return None
    return np.sort(np.random.default_rng(0).choice(n, MAX_MAP_POINTS, replace=False)).tolist()


def memoised_neighbours(
    embeddings: np.ndarray, modality: np.ndarray, memo: Memo
) -> list[list[int]]:
    """:func:`nearest_neighbours`, remembered in ``memo`` (as one flat array and the
    length of each row's list)."""

    def packed() -> tuple[np.ndarray, np.ndarray]:
        lists = nearest_neighbours(embeddings, modality)
        flat = [row for listed in lists for row in listed]
        return np.asarray(flat, dtype=np.int64), np.asarray([len(x) for x in lists], np.int64)

    flat, lengths = memo.arrays("report-neighbours", packed, embeddings, modality, N_NEIGHBOURS)
    ends = np.cumsum(lengths).tolist()
    values = flat.tolist()
    return [values[end - n : end] for end, n in zip(ends, lengths.tolist(), strict=True)]


def nearest_neighbours(
    embeddings: np.ndarray, modality: np.ndarray, k: int = N_NEIGHBOURS
) -> list[list[int]]:
    """The ``k`` most similar rows (cosine) of each row within its modality group.

    Empty lists above :data:`MAX_NEIGHBOUR_ROWS` rows.
    """
    n = len(embeddings)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    if n > MAX_NEIGHBOUR_ROWS or n < 2:
        return neighbours
    Z = np.asarray(embeddings, dtype=np.float32)
    Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    for m in np.unique(modality):
        rows = np.flatnonzero(modality == m)
        kk = min(k, len(rows) - 1)
        if kk < 1:
            continue
        for start in range(0, len(rows), 2048):
            chunk = rows[start : start + 2048]
            sims = Z[chunk] @ Z[rows].T
            sims[np.arange(len(chunk)), np.arange(start, start + len(chunk))] = -np.inf
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
            for row, best in zip(chunk, np.take_along_axis(top, order, axis=1), strict=True):
                neighbours[row] = rows[best].tolist()
    return neighbours


def flags_by_row(assignments: pd.DataFrame, out_dir: Path) -> dict[str, list[str]]:
    """``{row: ["outlier in its group", "near duplicate of b.png", ...]}`` from the audit's
    tables, for the rows that have any; tables that are absent are skipped."""
    row_of = _row_of(assignments)
    flags: dict[str, list[str]] = {}

    def add(path: str, item: str, text: str) -> None:
        if (path, item) in row_of:
            flags.setdefault(str(row_of[(path, item)]), []).append(text)

    for r in _rows(out_dir / QUALITY_FILE, {"path", "item", "flags"}):
        for flag in filter(None, r["flags"].split(";")):
            add(r["path"], r["item"], "quality: " + flag.replace("_", " "))
    for r in _rows(out_dir / OUTLIERS_FILE, {"path", "item"}):
        add(r["path"], r["item"], "outlier: unlike the rest of its group")
    for r in _rows(out_dir / DUPLICATES_FILE, {"path", "item", "copy_of"}):
        if r["copy_of"] and r["copy_of"] != r["path"]:
            add(r["path"], r["item"], f"exact duplicate of {r['copy_of']}")
    for r in _rows(out_dir / NEAR_DUPLICATES_FILE, {"path_a", "item_a", "path_b", "item_b"}):
        add(r["path_a"], r["item_a"], f"near duplicate of {r['path_b']}")
        add(r["path_b"], r["item_b"], f"near duplicate of {r['path_a']}")
    return flags


def predictions_by_row(assignments: pd.DataFrame, out_dir: Path) -> dict[str, str]:
    """``{row: "pneumonia (0.93)"}`` from ``medsort label``'s predictions, if any."""
    row_of = _row_of(assignments)
    found = {}
    for r in _rows(out_dir / PREDICTIONS_FILE, {"path", "item", "label", "probability"}):
        row = row_of.get((r["path"], r["item"]))
        if row is not None:
            found[str(row)] = f"{r['label']} ({float(r['probability'] or 0):.2f})"
    return found


def group_explanations(out_dir: Path) -> dict[int, list[str]]:
    """The audit's distinguishing traits per group (``audit.json`` key
    ``group_explanations``); empty when the audit did not write them."""
    try:
        audit = json.loads((Path(out_dir) / AUDIT_FILE).read_text(encoding="utf-8"))
        found = audit.get("group_explanations") or {}
        return {int(g): [str(t) for t in traits] for g, traits in found.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _row_of(assignments: pd.DataFrame) -> dict[tuple[str, str], int]:
    pairs = zip(assignments["path"], assignments["item"], strict=True)
    return {key: n for n, key in enumerate(pairs)}


def _rows(path: Path, columns: set[str]) -> list[dict[str, str]]:
    """The rows of an audit table as dicts; none if it is absent or lacks ``columns``."""
    if not path.is_file():
        return []
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return []
    return table.to_dict("records") if columns <= set(table.columns) else []
