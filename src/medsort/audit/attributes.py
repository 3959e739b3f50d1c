"""Attributes an image may carry besides its content, found automatically and discretised.

Sources: the per-item metadata the readers keep (``items.csv``: format, width, height, mode,
bit depth, compression, file size, DICOM tags...), the appearance attributes measured from
the pixels in the read pass (brightness, sharpness, vignette...), the sub-folder of each
path, the aspect ratio, and every column of an optional user CSV (``path`` plus e.g.
``site,sex,age``).

Every attribute becomes integer codes ``0..k-1`` with a text label per code:

* text columns are categorical; levels seen fewer than ``min_count`` times are pooled
  into ``other``, and at most ``max_levels`` levels are kept;
* numeric columns with few distinct values (sizes, bit depths) are categorical too;
  the others are cut into ``n_bins`` quantile bins;
* empty cells are a level of their own (``missing``): missing DICOM tags can be a site marker.

Constant attributes and identifier-like ones (nearly one value per image) are left out
with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from medsort.io.appearance import NAMES as APPEARANCE

MISSING = "missing"
OTHER = "other"
KEY_COLUMNS = ("path", "item")
FILE_COLUMNS = ("format", "width", "height", "mode", "bit_depth", "compression", "file_size")
ID_NAME = re.compile(r"(^|[_\s])(id|uid|index|number|no|key)$", re.IGNORECASE)
NUMERIC_TEXT = re.compile(r"\.0+$")


@dataclass
class Attribute:
    """One discretised attribute.

    Attributes
    ----------
    name : str
        Column name (``sub_folder`` and ``aspect`` are derived from the path and size).
    source : str
        ``"file"`` (format, size...), ``"path"``, ``"image"`` (appearance measured from the
        pixels, :mod:`medsort.io.appearance`), ``"dicom"`` (other reader metadata) or
        ``"metadata"`` (the user's CSV).
    kind : str
        ``"categorical"`` or ``"binned"`` (quantile bins of a numeric column).
    codes : ndarray of shape (n_items,)
        Level of each item, ``0..len(levels)-1``.
    levels : list of str
        Text of each level.
    """

    name: str
    source: str
    kind: str
    codes: np.ndarray
    levels: list[str]

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.levels))


@dataclass
class Ignored:
    """An attribute left out of the audit, and why."""

    name: str
    reason: str


def collect_attributes(
    items: pd.DataFrame,
    metadata: pd.DataFrame | None = None,
    exclude: tuple[str, ...] = (),
    n_bins: int = 5,
    max_levels: int = 12,
    min_count: int | None = None,
) -> tuple[list[Attribute], list[Ignored]]:
    """Find and discretise every attribute of the items.

    Parameters
    ----------
    items : DataFrame
        ``items.csv``: ``path``, ``item`` and the readers' metadata, one row per item.
    metadata : DataFrame, optional
        The user's columns, already aligned to ``items`` row by row (see
        :func:`align_metadata`).
    exclude : tuple of str
        Column names never to audit (e.g. the truth label).
    n_bins : int
        Quantile bins for continuous numeric columns.
    max_levels : int
        Most levels kept per categorical attribute (the rest pooled into ``other``).
    min_count : int, optional
        Levels seen fewer times are pooled into ``other``; default ``max(5, 1% of items)``.

    Returns
    -------
    attributes : list of Attribute
    ignored : list of Ignored
    """
    n = len(items)
    min_count = min_count or max(5, int(0.01 * n))
    columns = _candidate_columns(items, metadata)
    attributes, ignored = [], []
    for name, source, values in columns:
        if name in exclude:
            continue
        attribute = discretise(name, source, values, n_bins, max_levels, min_count)
        if isinstance(attribute, Ignored):
            ignored.append(attribute)
        else:
            attributes.append(attribute)
    return attributes, ignored


def _candidate_columns(
    items: pd.DataFrame, metadata: pd.DataFrame | None
) -> list[tuple[str, str, pd.Series]]:
    columns = []
    for name in items.columns:
        if name in KEY_COLUMNS:
            continue
        columns.append((name, _source(name), items[name]))
    if {"width", "height"} <= set(items.columns):
        width = pd.to_numeric(items["width"], errors="coerce")
        height = pd.to_numeric(items["height"], errors="coerce")
        columns.append(("aspect", "file", (width / height).round(2)))
    if "path" in items.columns:
        columns.append(("sub_folder", "path", sub_folders(items["path"])))
    if metadata is not None:
        taken = {name for name, _, _ in columns}
        for name in metadata.columns:
            if name in KEY_COLUMNS:
                continue
            label = name if name not in taken else f"{name} (metadata)"
            columns.append((label, "metadata", metadata[name]))
    return columns


def _source(name: str) -> str:
    if name in FILE_COLUMNS:
        return "file"
    return "image" if name in APPEARANCE else "dicom"


def sub_folders(paths: pd.Series) -> pd.Series:
    """The folder part of each relative path (``.`` for files at the top)."""
    return pd.Series(
        [str(PurePosixPath(str(p).replace("\\", "/")).parent) for p in paths], index=paths.index
    )


def discretise(
    name: str,
    source: str,
    values: pd.Series,
    n_bins: int = 5,
    max_levels: int = 12,
    min_count: int = 5,
) -> Attribute | Ignored:
    """Turn one column into an :class:`Attribute`, or say why it is left out."""
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    present = text != ""
    if text[present].nunique() == 0:
        return Ignored(name, "empty")
    numbers = pd.to_numeric(text[present], errors="coerce")
    numeric = bool(numbers.notna().all())
    distinct = text[present].nunique()
    if distinct == 1 and present.all():
        return Ignored(name, f"constant ({text.iloc[0]})")
    if _identifier_like(name, text[present], numeric):
        return Ignored(name, "identifier-like (about one value per image)")
    if numeric and distinct > max_levels:
        labels = _quantile_labels(numbers, n_bins)
        if labels is None:
            return Ignored(name, "constant after binning")
        kind = "binned"
        text = text.copy()
        text[present] = labels
    else:
        kind = "categorical"
        if numeric:
            text = text.str.replace(NUMERIC_TEXT, "", regex=True)
    text = text.where(present, MISSING)
    return _encode(name, source, kind, text, max_levels, min_count)


def _identifier_like(name: str, text: pd.Series, numeric: bool) -> bool:
    unique_share = text.nunique() / max(len(text), 1)
    if numeric:
        return bool(ID_NAME.search(name)) and unique_share > 0.9
    return unique_share > 0.5 and len(text) >= 10


def _quantile_labels(numbers: pd.Series, n_bins: int) -> pd.Series | None:
    """Quantile bins; a value held by at least ``1 / n_bins`` of the items is its own level.

    Zero-inflated measures (no padding, no vignette, no text in most images) would
    otherwise lose their zeros into a bin shared with the smallest non-zero values, and
    "none" vs "some" is the contrast that matters.
    """
    mode = numbers.mode().iloc[0]
    heavy = numbers == mode
    if heavy.mean() >= 1 / n_bins and (~heavy).sum() >= 2:
        labels = pd.Series(_short(mode), index=numbers.index, dtype=object)
        rest = _quantile_labels_plain(numbers[~heavy], max(n_bins - 1, 1))
        if rest is None:
            rest = pd.Series(f"≠{_short(mode)}", index=numbers[~heavy].index)
        labels[~heavy] = rest
        return labels.astype(str)
    return _quantile_labels_plain(numbers, n_bins)


def _quantile_labels_plain(numbers: pd.Series, n_bins: int) -> pd.Series | None:
    if numbers.nunique() < 2:
        return None
    bins = pd.qcut(numbers, q=n_bins, duplicates="drop")
    if bins.cat.categories.size < 2:
        return None
    names = [f"{_short(i.left)}–{_short(i.right)}" for i in bins.cat.categories]
    return bins.cat.rename_categories(names).astype(str)


def _short(value: float) -> str:
    return f"{value:.4g}"


def _encode(
    name: str, source: str, kind: str, text: pd.Series, max_levels: int, min_count: int
) -> Attribute | Ignored:
    counts = text.value_counts()
    limit = max_levels - 1 if len(counts) > max_levels else max_levels
    common = counts[counts >= min_count].index[:limit]
    pooled = text.where(text.isin(common), OTHER)
    if pooled.nunique() < 2:
        return Ignored(name, f"only one value seen {min_count} or more times")
    levels = sorted(pooled.unique(), key=_level_order(kind, pooled))
    lookup = {level: code for code, level in enumerate(levels)}
    codes = pooled.map(lookup).to_numpy(dtype=np.int64)
    return Attribute(name=name, source=source, kind=kind, codes=codes, levels=list(levels))


def _level_order(kind: str, pooled: pd.Series):  # noqa: ANN202 - a sort key
    counts = pooled.value_counts()

    def key(level: str) -> tuple:
        last = level in (OTHER, MISSING)
        if kind == "binned" and not last:
            head = level.lstrip("≠").split("–")[0]
            return (0, float(head) if head else 0.0, "")
        number = pd.to_numeric(level, errors="coerce")
        if not last and pd.notna(number):
            return (0, float(number), "")
        return (1 if last else 0, -counts[level], level)

    return key


def read_table(csv_path: Path | str) -> pd.DataFrame:
    """A user CSV with a ``path`` column, paths normalised like ``assignments.csv``."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "path" not in table.columns:
        raise ValueError(f"{csv_path} needs a 'path' column (relative to the sorted folder).")
    table["path"] = [p.replace("\\", "/").removeprefix("./") for p in table["path"]]
    return table.drop_duplicates("path")


def align_metadata(items: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``table`` in the order of ``items`` (matched on ``path``; unmatched are empty)."""
    merged = items[["path"]].merge(table, on="path", how="left")
    return merged.drop(columns=["path"]).fillna("").reset_index(drop=True)
