"""The audit's hygiene checks over a sort: exact and near duplicates, outliers and image
quality, as tables (the CSVs) and a summary (``audit.json``'s ``hygiene``). The measures
themselves are in :mod:`medsort.audit.hygiene`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medsort.audit import hygiene
from medsort.audit.settings import AuditSettings
from medsort.audit.store import DUPLICATES, NEAR_DUPLICATES, OUTLIERS, QUALITY
from medsort.memo import NO_MEMO, Memo
from medsort.results import SortResult


def hygiene_checks(
    result: SortResult,
    hashes: list[str],
    pixels: hygiene.PixelPass | None,
    settings: AuditSettings,
    memo: Memo = NO_MEMO,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Every hygiene check of a sort: the CSV tables by file name, and the summary of
    ``audit.json`` (``hygiene``). The neighbour searches and pair correlations, its
    costly steps, go through ``memo``."""
    assignments = result.assignments
    paths, items = assignments["path"].tolist(), assignments["item"].tolist()
    exact = hygiene.exact_duplicates(paths, items, hashes)
    x = hygiene.normalise(result.embeddings)
    k = settings.n_neighbours
    sims, idx = memo.arrays("hygiene-knn", lambda: hygiene.nearest_neighbours(x, k), x, k)
    _, threshold = hygiene.near_pairs(sims, idx, paths, hashes, z=settings.near_z)
    neighbour_lists = [idx]
    pixel_threshold = None
    if pixels is not None:
        usable = np.abs(pixels.descriptors).sum(axis=1) > 0
        p_sims, p_idx = memo.arrays(
            "hygiene-pixel-knn",
            lambda: hygiene.dihedral_neighbours(pixels.descriptors, k=5),
            pixels.descriptors,
        )
        _, pixel_threshold = hygiene.near_pairs(
            p_sims, p_idx, paths, hashes, z=settings.near_z, floor=settings.pixel_floor,
            ceiling=0.98, usable=usable,
        )  # fmt: skip
        neighbour_lists.append(p_idx)
    a, b = hygiene.candidate_pairs(*neighbour_lists)
    thresholds = {
        "cosine": threshold,
        "pixels": pixel_threshold if pixel_threshold is not None else 1.0,
        "hash_bits": settings.hash_bits,
    }
    near = hygiene.near_duplicate_table(
        a, b, x, pixels, paths, items, hashes, thresholds, settings.min_signals, memo
    )
    quality = quality_table(result, pixels)
    knn, z = hygiene.outlier_scores(sims)
    far = z > settings.outlier_z
    outliers = pd.DataFrame(
        {
            "path": assignments["path"][far],
            "item": assignments["item"][far],
            "group": assignments["group"][far],
            "knn_distance": np.round(knn[far], 5),
            "robust_z": np.round(z[far], 2),
        }
    ).sort_values("robust_z", ascending=False)
    summary = {
        "exact_duplicates": {
            "n_sets": int(exact["set"].nunique()) if len(exact) else 0,
            "n_items": len(exact),
            "n_removable": int((~exact["kept"].astype(bool)).sum()) if len(exact) else 0,
        },
        "near_duplicates": {
            "threshold": round(threshold, 5),
            "pixel_threshold": None if pixel_threshold is None else round(pixel_threshold, 4),
            "hash_bits": settings.hash_bits,
            "min_signals": settings.min_signals,
            "n_candidates": len(a),
            "n_pairs": len(near),
            "n_by_embedding": int(near["method"].astype(str).str.contains("embedding").sum()),
            "n_by_pixels": int(near["method"].astype(str).str.contains("pixels").sum()),
            "n_by_hash": int(near["method"].astype(str).str.contains("hash").sum()),
            "n_items": len(set(near["path_a"]) | set(near["path_b"])) if len(near) else 0,
        },
        "outliers": {
            "n_items": int(far.sum()),
            "median_knn_distance": round(float(np.median(knn)), 5) if len(knn) else None,
            "z": settings.outlier_z,
        },
        "quality": quality_summary(quality, settings),
    }
    flagged = quality[quality["flags"] != ""] if len(quality) else quality
    tables = {DUPLICATES: exact, NEAR_DUPLICATES: near, OUTLIERS: outliers, QUALITY: flagged}
    return tables, summary


def quality_table(result: SortResult, pixels: hygiene.PixelPass | None) -> pd.DataFrame:
    """Quality table per row (empty when pixels were not re-read)."""
    assignments, items = result.assignments, result.items
    columns = ["path", "item", "flags", "mean", "std", "entropy", "width", "height"]
    if pixels is None:
        return pd.DataFrame(columns=columns)
    per_row = pixels.stats
    width = items["width"] if "width" in items.columns else None
    height = items["height"] if "height" in items.columns else None
    table = pd.DataFrame({"path": assignments["path"], "item": assignments["item"]})
    table["flags"] = hygiene.quality_flags(per_row, width, height).to_numpy()
    for column in ("mean", "std", "entropy"):
        table[column] = per_row[column].round(3).to_numpy()
    table["width"] = width.to_numpy() if width is not None else ""
    table["height"] = height.to_numpy() if height is not None else ""
    return table[columns]


def quality_summary(quality: pd.DataFrame, settings: AuditSettings) -> dict[str, Any]:
    """``audit.json``'s ``hygiene.quality``: flagged items, counts by flag, items read."""
    if quality.empty:
        return {"n_items": 0, "by_flag": {}, "n_read": 0}
    flags = quality["flags"]
    names = [name for entry in flags if entry for name in entry.split(";")]
    return {
        "n_items": int((flags != "").sum()),
        "by_flag": {name: names.count(name) for name in sorted(set(names))},
        "n_read": int(quality["mean"].notna().sum()),
    }


def label_conflicts(near: pd.DataFrame, result: SortResult, labels: np.ndarray) -> int:
    """Near-duplicate pairs whose two images carry different known labels."""
    if near.empty:
        return 0
    label_of = dict(zip(result.assignments["path"], labels, strict=True))
    a = np.array([label_of.get(p, -1) for p in near["path_a"]])
    b = np.array([label_of.get(p, -1) for p in near["path_b"]])
    return int(np.sum((a != b) & (a >= 0) & (b >= 0)))
