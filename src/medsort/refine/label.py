"""``medsort label``: train on a few labelled images, predict every image of an output folder."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from medsort.embed.registry import create_encoder, encoder_has_text
from medsort.io.outputs import read_csv, write_csv, write_text
from medsort.refine.classifier import OTHER, SparSamClassifier, unlabelled_mask
from medsort.refine.options import (
    DEFAULT_METHOD,
    METHODS,
    PREDICTIONS,
    REFINE_RUN,
    TEXT_PRIOR_MODES,
)
from medsort.refine.propagate import GraphLabelSpreading
from medsort.results import SortResult

LABELS_USED = "labels_used.csv"
PREDICTION_COLUMNS = [
    "path", "item", "label", "probability", "top3", "group", "disagrees_with_group",
]  # fmt: skip
MAX_LABELS_PER_CLASS = 5
"""``--text-prior auto`` uses the prior while the median class has at most this many labels."""


def make_model(method: str = DEFAULT_METHOD, open_set: bool = True) -> BaseEstimator:
    """The estimator behind ``medsort label --method``."""
    if method == "spread":
        return GraphLabelSpreading(open_set=open_set)
    if method in ("svm", "logreg", "knn"):
        return SparSamClassifier(kind=method)
    raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")


def read_labels(path: Path) -> pd.DataFrame:
    """A ``path,label`` CSV (optional ``item``); rows without a label are dropped.

    Plain ``ValueError`` messages for a folder, an empty or non-UTF-8 file, missing
    columns, no label at all and the same image given two different labels; exact
    repeats are kept once. Files medsort wrote itself (``labels_used.csv``) are read
    back as they were before neutralising (:mod:`medsort.io.outputs`).
    """
    path = Path(path)
    table = _label_table(path)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(
            f"Labels file {path} needs columns path,label (missing: {', '.join(sorted(missing))})."
        )
    table["path"] = table["path"].str.strip()
    table["label"] = table["label"].str.strip()
    blank = table["label"] == ""
    if blank.all():
        raise ValueError(f"Labels file {path} has no labels: every label cell is empty.")
    if blank.any():
        print(f"medsort: {int(blank.sum())} row(s) without a label ignored", file=sys.stderr)
    table = table[~blank].drop_duplicates().reset_index(drop=True)
    _check_conflicts(table, path)
    return table


def _label_table(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise ValueError(f"Labels file {path} is a folder: give a CSV file with path,label.")
    if not path.is_file():
        raise FileNotFoundError(f"Labels file not found: {path}")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Labels file {path} is not UTF-8 text (byte 0x{raw[error.start]:02x} at position "
            f"{error.start}): save it as a UTF-8 CSV."
        ) from None
    if not raw.strip():
        raise ValueError(f"Labels file {path} is empty: it needs a header line path,label.")
    reader = read_csv if path.name == LABELS_USED else _read_user_csv
    try:
        return reader(path)
    except pd.errors.ParserError as error:
        raise ValueError(f"Labels file {path} is not a readable CSV: {error}") from None


def _read_user_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def _check_conflicts(table: pd.DataFrame, path: Path) -> None:
    keys = ["path", "item"] if "item" in table.columns else ["path"]
    counts = table.groupby(keys)["label"].nunique()
    conflicts = counts[counts > 1]
    if len(conflicts):
        names = ", ".join(str(k if isinstance(k, str) else k[0]) for k in conflicts.index[:3])
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise ValueError(
            f"Labels file {path} gives different labels to the same image: {names}{more}."
        )


def match_labels(assignments: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """One label per assignments row (``None`` where unlabelled), matched by path[+item].

    Without an ``item`` column (or with an empty item) a label covers every item of the file.
    """
    y = np.full(len(assignments), None, dtype=object)
    by_key = {
        (p, i): n
        for n, (p, i) in enumerate(zip(assignments["path"], assignments["item"], strict=True))
    }
    by_path: dict[str, list[int]] = {}
    for n, p in enumerate(assignments["path"]):
        by_path.setdefault(p, []).append(n)
    items = labels["item"] if "item" in labels.columns else [""] * len(labels)
    unmatched = 0
    for path, item, label in zip(labels["path"], items, labels["label"], strict=True):
        rows = [by_key[(path, item)]] if (path, item) in by_key else by_path.get(path, [])
        if item and (path, item) not in by_key:
            rows = []
        unmatched += not rows
        y[rows] = label
    if unmatched:
        print(
            f"medsort: {unmatched} labelled path(s) not found in the output folder", file=sys.stderr
        )
    if unlabelled_mask(y).all():
        raise ValueError("None of the labelled paths is in the output folder.")
    return y


def format_top3(proba: np.ndarray, names: np.ndarray) -> list[str]:
    """``"a:0.80;b:0.15;c:0.05"`` per row, most probable first."""
    order = np.argsort(-proba, axis=1)[:, :3]
    return [
        ";".join(f"{names[j]}:{row[j]:.2f}" for j in top)
        for row, top in zip(proba, order, strict=True)
    ]


def fit_predict(
    result: SortResult,
    y: np.ndarray,
    method: str = DEFAULT_METHOD,
    open_set: bool = True,
    text_prior: str = "auto",
) -> tuple[np.ndarray, np.ndarray, BaseEstimator]:
    """Probabilities of every row, the column names (``OTHER`` last for spreading) and the
    fitted model.

    ``text_prior`` (spreading only): ``"on"`` blends in the encoder's zero-shot text
    prior, ``"auto"`` does so when the encoder has text and there are at most
    :data:`MAX_LABELS_PER_CLASS` labels per class, ``"off"``
    never does.
    """
    model = make_model(method, open_set)
    groups = result.assignments["group"].to_numpy()
    if isinstance(model, GraphLabelSpreading):
        prior = _text_prior_for(result, y, text_prior)
        model.fit(result.embeddings, y, groups=groups, prior=prior)
        return model.label_distributions_, np.append(model.classes_, OTHER), model
    if text_prior == "on":
        raise ValueError("--text-prior on needs --method spread.")
    model.fit(result.embeddings, y)
    return model.predict_proba(result.embeddings), model.classes_, model


def _text_prior_for(
    result: SortResult, y: np.ndarray, mode: str
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The zero-shot prior as a function of the classes, or None where it is not used."""
    if mode not in TEXT_PRIOR_MODES:
        raise ValueError(f"Unknown text prior {mode!r}: use one of {', '.join(TEXT_PRIOR_MODES)}.")
    if mode == "off" or (mode == "auto" and not few_labels(y[~unlabelled_mask(y)])):
        return None
    spec = result.run.encoder_spec or result.run.encoder or ""
    if not encoder_has_text(spec):
        if mode == "on":
            raise ValueError(
                f"Encoder {spec} has no text model; sort with --encoder biomedclip:DIR "
                "to use --text-prior."
            )
        return None
    # Imported here: the text prior needs torch (seconds to import), plain labelling not.
    from medsort.refine.text_prior import text_prior

    encoder = create_encoder(spec)
    return lambda classes: text_prior(result.embeddings, encoder, list(classes))


def few_labels(y_known: np.ndarray) -> bool:
    """Whether the median labelled class has at most :data:`MAX_LABELS_PER_CLASS` labels."""
    _, counts = np.unique(np.asarray(y_known, dtype=str), return_counts=True)
    return bool(len(counts)) and float(np.median(counts)) <= MAX_LABELS_PER_CLASS


def predictions_table(
    assignments: pd.DataFrame, proba: np.ndarray, names: np.ndarray
) -> pd.DataFrame:
    """The rows of ``predictions.csv``."""
    best = proba.argmax(axis=1)
    table = pd.DataFrame(
        {
            "path": assignments["path"].to_numpy(),
            "item": assignments["item"].to_numpy(),
            "label": names[best],
            "probability": np.round(proba[np.arange(len(proba)), best], 4),
            "top3": format_top3(proba, names),
            "group": assignments["group"].to_numpy(),
        }
    )
    majority = table.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    table["disagrees_with_group"] = (
        table["label"].to_numpy() != table["group"].map(majority).to_numpy()
    )
    return table[PREDICTION_COLUMNS]


def label_folder(
    out_dir: Path,
    labels_csv: Path,
    method: str = DEFAULT_METHOD,
    open_set: bool = True,
    text_prior: str = "auto",
) -> pd.DataFrame:
    """Train on ``labels_csv``, write ``predictions.csv`` and remember the labels used."""
    out_dir = Path(out_dir)
    result = SortResult.load(out_dir)
    labels = read_labels(Path(labels_csv))
    y = match_labels(result.assignments, labels)
    proba, names, model = fit_predict(result, y, method, open_set, text_prior)
    table = predictions_table(result.assignments, proba, names)
    write_csv(table, out_dir / PREDICTIONS)
    write_csv(labels, out_dir / LABELS_USED)
    run = {
        "method": method,
        "open_set": open_set,
        "text_prior": text_prior,
        "text_prior_weight": getattr(model, "prior_scale_", 0.0),
        "group_vote_weight": getattr(model, "group_scale_", 0.0),
        "labels": str(Path(labels_csv).resolve()),
        "n_labelled": int((~unlabelled_mask(y)).sum()),
    }
    write_text(out_dir / REFINE_RUN, json.dumps(run, indent=2))
    return table
