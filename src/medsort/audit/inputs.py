"""What the audit reads from an output folder: content hashes, known labels and the pixel
measures of every row (recorded by the read pass, or re-read for older folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medsort.audit import hygiene
from medsort.audit.settings import AuditSettings
from medsort.audit.shortcuts import codes_of
from medsort.io import appearance, signatures
from medsort.results import SortResult


def row_hashes(result: SortResult) -> list[str]:
    """Content hash of each row's source file: as the read pass recorded it, or, for
    folders sorted before it did, hashed now (``""`` where it cannot be read)."""
    recorded = result.file_hashes()
    if recorded is not None:
        return recorded
    paths = result.assignments["path"].tolist()
    unique = list(dict.fromkeys(paths))
    digests = hygiene.file_hashes([result.source_path(p) for p in unique])
    lookup = dict(zip(unique, digests, strict=True))
    return [lookup[p] for p in paths]


def truth_codes(result: SortResult, truth_csv: Path | str | None) -> np.ndarray | None:
    """Label code per row, ``-1`` where the file has no label; ``None`` without a CSV."""
    if truth_csv is None:
        return None
    from medsort.evaluate import read_truth

    truth = read_truth(Path(truth_csv)).drop_duplicates("path")
    merged = result.assignments[["path"]].merge(truth, on="path", how="left")
    labelled = merged["label"].notna() & (merged["label"] != "")
    if not labelled.any():
        raise ValueError(f"No path of {truth_csv} matches assignments.csv.")
    codes = np.full(len(merged), -1, dtype=np.int64)
    codes[labelled.to_numpy()] = codes_of(merged.loc[labelled, "label"].to_numpy())
    return codes


def pixel_rows(result: SortResult, settings: AuditSettings) -> hygiene.PixelPass | None:
    """The pixel measures of every row (``None`` when not asked).

    They come from the signatures the read pass recorded (``signatures.npz``), so a sort's
    audit decodes no image; folders sorted before they were recorded are re-read once per
    file through the readers (:func:`hygiene.pixel_pass`). Either way, rows of multi-item
    files (slices, frames, tiles) get NaN statistics and zero descriptors, as the re-read
    measures only their first item. Appearance is measured here only for output folders
    written before the embed stage recorded it.
    """
    if not settings.quality or len(result.assignments) == 0:
        return None
    missing = not set(appearance.NAMES) <= set(result.items.columns)
    n_rows = len(result.assignments)
    recorded = set(signatures.NAMES) <= set(result.signatures) and all(
        len(array) == n_rows for array in result.signatures.values()
    )
    if recorded and not missing:
        read = recorded_pixels(result)
    else:
        read = reread_pixels(result, with_appearance=missing)
    assignments = result.assignments
    multi = assignments["path"].duplicated(keep=False).to_numpy()
    read.stats.loc[multi] = np.nan
    read.descriptors[multi], read.hashes[multi] = 0.0, 0
    if read.appearance is not None:
        read.appearance.loc[multi] = np.nan
    return read


def recorded_pixels(result: SortResult) -> hygiene.PixelPass:
    """The signatures of ``signatures.npz`` as a :class:`hygiene.PixelPass`."""
    stats, descriptors, hashes = signatures.unpack(result.signatures)
    frame = pd.DataFrame(stats, columns=["mean", "std", "entropy"])
    return hygiene.PixelPass(frame, descriptors.copy(), hashes.copy(), None)


def reread_pixels(result: SortResult, with_appearance: bool) -> hygiene.PixelPass:
    """One re-read per file through the readers, spread to rows."""
    assignments = result.assignments
    unique = list(dict.fromkeys(assignments["path"]))
    options = result.run.read_options()
    read = hygiene.pixel_pass(
        [result.source_path(p) for p in unique], options, with_appearance=with_appearance
    )
    position = {path: i for i, path in enumerate(unique)}
    rows = np.array([position[p] for p in assignments["path"]])
    stats = read.stats.iloc[rows].reset_index(drop=True)
    descriptors, hashes = read.descriptors[rows], read.hashes[rows]
    table = None
    if read.appearance is not None:
        table = read.appearance.iloc[rows].reset_index(drop=True)
    return hygiene.PixelPass(stats, descriptors, hashes, table)
