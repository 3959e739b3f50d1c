"""``medsort eval``: score a sort against known labels (never used to form groups)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medsort.group.metrics import score_grouping
from medsort.results import SortResult


def evaluate(out_dir: Path, truth_csv: Path) -> dict[str, float]:
    """ACC (Hungarian-matched), NMI and ARI of the final and modality groups.

    ``truth_csv`` has ``path,label`` with paths relative to the sorted input folder.
    Items whose file has no label are left out and counted.
    """
    result = SortResult.load(out_dir)
    truth = read_truth(truth_csv)
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
