"""``medsort eval``: score a sort against known labels (never used to form groups)."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import pandas as pd

from medsort.group.metrics import score_grouping
from medsort.results import SortResult


def evaluate(out_dir: Path, truth_csv: Path, quiet: bool = True) -> dict[str, float]:
    """ACC (Hungarian-matched), NMI and ARI of the final and modality groups.

    ``truth_csv`` has ``path,label``; see :func:`match_truth_paths` for the paths it
    accepts. Items whose file has no label are left out and counted.
    """
    result = SortResult.load(out_dir)
    truth = read_truth(truth_csv)
    truth["path"], notes = match_truth_paths(
        truth["path"].tolist(), result.assignments["path"].tolist(), result.input_dir.name
    )
    if notes and not quiet:
        print(f"medsort: {truth_csv}: {notes}", file=sys.stderr)
    merged = result.assignments.merge(truth, on="path", how="inner")
    if merged.empty:
        raise ValueError(
            f"No path of {truth_csv} matches assignments.csv; paths must be relative to "
            f"the input folder {result.input_dir}."
        )
    scores = score_grouping(merged["label"].to_numpy(), merged["group"].to_numpy())
    modality = score_grouping(merged["label"].to_numpy(), merged["modality_group"].to_numpy())
    return {
        **scores,
        "n_scored": len(merged),
        "n_unlabelled": len(result.assignments) - len(merged),
        "n_groups": int(result.assignments["group"].nunique()),
        "n_classes": int(truth["label"].nunique()),
        "modality_nmi": modality["nmi"],
    }


def read_truth(truth_csv: Path) -> pd.DataFrame:
    """``path,label`` with forward-slash paths."""
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(truth.columns)
    if missing:
        raise ValueError(f"{truth_csv} needs the columns path,label (missing {sorted(missing)}).")
    truth["path"] = [p.replace("\\", "/").removeprefix("./") for p in truth["path"]]
    return truth[["path", "label"]]


def match_truth_paths(
    truth_paths: list[str], sorted_paths: list[str], input_name: str
) -> tuple[list[str], str]:
    """Truth paths rewritten to the ``assignments.csv`` paths they mean, and a note on
    how they were matched (``""`` when all were exact).

    A path may be relative to the input folder (``a/b.png``), to its parent
    (``images/a/b.png`` for the input folder ``images``), or a bare file name where
    exactly one sorted file has that name. Others are kept as they are (and unmatched).
    """
    known = set(sorted_paths)
    by_name: dict[str, list[str]] = {}
    for path in known:
        by_name.setdefault(PurePosixPath(path).name, []).append(path)
    prefix = f"{input_name}/"
    matched, via_parent, via_name = [], 0, 0
    for path in truth_paths:
        if path in known:
            matched.append(path)
        elif path.startswith(prefix) and path[len(prefix) :] in known:
            matched.append(path[len(prefix) :])
            via_parent += 1
        elif len(by_name.get(PurePosixPath(path).name, [])) == 1:
            matched.append(by_name[PurePosixPath(path).name][0])
            via_name += 1
        else:
            matched.append(path)
    notes = []
    if via_parent:
        notes.append(f"{via_parent} path(s) relative to the input folder's parent")
    if via_name:
        notes.append(f"{via_name} path(s) matched by their unique file name")
    return matched, "; ".join(notes)
