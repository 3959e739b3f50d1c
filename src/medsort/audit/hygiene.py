"""Data hygiene: exact and near duplicates, outliers and image-quality flags.

* Exact duplicates: BLAKE2b of each source file's bytes.
* Near duplicates need two of three independent signals: embedding cosine (nearest
  neighbours on L2-normalised embeddings; exact search in blocks up to 20,000 images,
  faiss HNSW above; never an N×N matrix), content correlation (a 16×16 descriptor of the
  image with its lighting and black surround taken away, compared under the 8 flips /
  quarter-turns), and a perceptual hash of the same content (best orientation). The
  embedding and content cuts are calibrated on the set itself: a robust outlier cut on
  ``log(1 - s1)``, ``s1`` being each image's nearest-neighbour similarity (see
  :func:`calibrate_near_threshold`).
* Outliers: mean cosine distance to the ``k`` nearest neighbours, flagged when its robust
  z-score (median / MAD) is above ``z``.
* Quality: brightness, contrast and entropy of a greyscale copy of the display pixels
  (so 16-bit, DICOM and NIfTI pixels are display intensities); blank, very dark or bright,
  low-information and odd-size images are flagged.

The pixel measures (:mod:`medsort.io.signatures`) are recorded in the read pass; files are
re-read here (:func:`pixel_pass`) only for output folders sorted before that.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsort.embed.cache import content_hash
from medsort.io import appearance, signatures
from medsort.io.readers import ReadError, ReadOptions, iter_images
from medsort.io.signatures import (  # noqa: F401  (re-exported: the audit's pixel measures)
    DESCRIPTOR_SIDE,
    HASH_SIDE,
    QUALITY_SIDE,
    content_descriptor,
    content_image,
    dihedral_phashes,
)
from medsort.memo import NO_MEMO, Memo
from medsort.numeric import EXACT_KNN_ROWS, blockwise_top_k, cosine_neighbours

MAD_SCALE = 1.4826
MEAN_AD_SCALE = 1.2533


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 * MAD)`` (Iglewicz & Hoaglin).

    When more than half the values are equal (MAD = 0) the scale is ``1.2533`` times the
    mean absolute deviation from the median instead; zeros when that is zero too.
    """
    values = np.asarray(values, dtype=float)
    median = np.nanmedian(values)
    deviation = np.abs(values - median)
    scale = MAD_SCALE * np.nanmedian(deviation)
    if not np.isfinite(scale) or scale <= 0:  # over half identical: mean absolute deviation
        scale = MEAN_AD_SCALE * np.nanmean(deviation)
    if not np.isfinite(scale) or scale <= 0:
        return np.zeros_like(values)
    return (values - median) / scale


# --- exact duplicates -------------------------------------------------------------------


def file_hashes(paths: Sequence[Path], n_threads: int = 4) -> list[str]:
    """BLAKE2b of each file (``""`` when it cannot be read)."""

    def one(path: Path) -> str:
        try:
            return content_hash(path)
        except OSError:
            return ""

    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(one, paths))


def exact_duplicates(paths: Sequence[str], items: Sequence[str], hashes: Sequence[str]):
    """Table of every row whose file content occurs under more than one path.

    Columns: ``set`` (copy set number), ``path``, ``item``, ``kept`` (the first copy),
    ``copy_of`` (the kept path).
    """
    table = pd.DataFrame({"path": list(paths), "item": list(items), "hash": list(hashes)})
    table = table[table["hash"] != ""]
    n_paths = table.groupby("hash")["path"].nunique()
    table = table[table["hash"].isin(n_paths[n_paths > 1].index)].copy()
    if table.empty:
        return pd.DataFrame(columns=["set", "path", "item", "kept", "copy_of"])
    first = table.groupby("hash", sort=False)["path"].first()
    table["set"] = table["hash"].map({h: i for i, h in enumerate(first.index)})
    table["copy_of"] = table["hash"].map(first)
    table["kept"] = table["path"] == table["copy_of"]
    return table.sort_values(["set", "path"], kind="stable")[
        ["set", "path", "item", "kept", "copy_of"]
    ].reset_index(drop=True)


# --- neighbours ------------------------------------------------------------------------


def normalise(embeddings: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


EXACT_LIMIT = EXACT_KNN_ROWS
"""Rows up to which neighbours are searched exactly (:data:`medsort.numeric.EXACT_KNN_ROWS`)."""


def nearest_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and indices of the ``k`` nearest other rows of ``x`` (normalised),
    by the numeric core's one kNN policy (:func:`medsort.numeric.cosine_neighbours`)."""
    return cosine_neighbours(x, k)


def calibrate_near_threshold(
    nn_similarity: np.ndarray, z: float = 4.0, floor: float = 0.90, ceiling: float = 0.995
) -> float:
    """Cosine similarity above which a nearest neighbour is a near duplicate.

    Distances ``d = 1 - s`` to the nearest neighbour are roughly log-normal for distinct
    images; copies sit far in the low tail. The cut is ``log d < median - z * MAD``
    (robust z-score), converted back to a similarity and kept within ``[floor, ceiling]``
    so that a set of near-identical images (or a set with no structure) cannot move it
    to absurd values.
    """
    distance = np.clip(1.0 - np.asarray(nn_similarity, dtype=float), 1e-7, None)
    logs = np.log(distance)
    median = np.median(logs)
    mad = MAD_SCALE * np.median(np.abs(logs - median))
    cut = 1.0 - float(np.exp(median - z * mad))
    return float(np.clip(cut, floor, ceiling))


def near_pairs(
    sims: np.ndarray,
    idx: np.ndarray,
    paths: Sequence[str],
    hashes: Sequence[str],
    threshold: float | None = None,
    z: float = 4.0,
    floor: float = 0.90,
    ceiling: float = 0.995,
    usable: np.ndarray | None = None,
) -> tuple[pd.DataFrame, float]:
    """Index pairs ``(a, b, similarity)`` with ``a < b`` above a (calibrated) threshold.

    Pairs within one file (slices of one volume) and exact copies (same hash, already in
    ``duplicates.csv``) are left out; ``usable`` masks rows without a valid score.
    """
    paths, hashes = np.asarray(paths, dtype=object), np.asarray(hashes, dtype=object)
    rows = np.repeat(np.arange(len(idx)), idx.shape[1])
    cols, values = idx.ravel(), sims.ravel()
    safe = np.clip(cols, 0, None)
    valid = (cols >= 0) & (paths[rows] != paths[safe])
    valid &= ~((hashes[rows] == hashes[safe]) & (hashes[rows] != ""))
    if usable is not None:
        valid &= usable[rows] & usable[safe]
    if threshold is None:
        first = _first_valid(values.reshape(idx.shape), valid.reshape(idx.shape))
        finite = first[np.isfinite(first)]
        threshold = (
            calibrate_near_threshold(finite, z=z, floor=floor, ceiling=ceiling)
            if len(finite) >= 10
            else ceiling
        )
    keep = valid & (values >= threshold)
    a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    pairs = pd.DataFrame({"a": a, "b": b, "similarity": values[keep]})
    pairs = pairs.sort_values("similarity", ascending=False).drop_duplicates(["a", "b"])
    return pairs.reset_index(drop=True), float(threshold)


def candidate_pairs(*neighbour_lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(a, b)`` index pairs, ``a < b``, from any number of ``(n, k)`` neighbour lists."""
    pairs = []
    for idx in neighbour_lists:
        if idx.size == 0:
            continue
        rows = np.repeat(np.arange(len(idx)), idx.shape[1])
        cols = idx.ravel()
        valid = (cols >= 0) & (cols != rows)
        pairs.append(np.stack([np.minimum(rows, cols)[valid], np.maximum(rows, cols)[valid]], 1))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unique = np.unique(np.concatenate(pairs), axis=0)
    return unique[:, 0].astype(np.int64), unique[:, 1].astype(np.int64)


def pair_correlation(descriptors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best correlation of descriptor pairs over the 8 flips / quarter-turns of ``a``."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.float32)
    side = DESCRIPTOR_SIDE
    squares = descriptors[a].reshape(len(a), side, side)
    target = descriptors[b]
    best = np.full(len(a), -np.inf, dtype=np.float32)
    for turns in range(4):
        turned = np.rot90(squares, turns, axes=(1, 2))
        for variant in (turned, turned[:, :, ::-1]):
            flat = np.ascontiguousarray(variant).reshape(len(a), -1)
            best = np.maximum(best, np.einsum("ij,ij->i", flat, target))
    return best


def near_duplicate_table(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    pixels: PixelPass | None,
    paths: Sequence[str],
    items: Sequence[str],
    file_hashes: Sequence[str],
    thresholds: dict[str, float],
    min_signals: int = 2,
    memo: Memo = NO_MEMO,
) -> pd.DataFrame:
    """Candidate pairs that at least ``min_signals`` independent signals call copies.

    Signals: embedding cosine ``>= thresholds["cosine"]``; content correlation (band-passed,
    surround masked, best of 8 orientations) ``>= thresholds["pixels"]``; perceptual-hash
    distance (best orientation) ``<= thresholds["hash_bits"]``. Pairs within one file and
    byte-identical files (``duplicates.csv``) are left out. The pair correlations go
    through ``memo``.
    """
    columns = [
        "path_a", "item_a", "path_b", "item_b", "cosine", "pixel_correlation", "hash_bits",
        "signals", "method",
    ]  # fmt: skip
    paths, items = np.asarray(paths, dtype=object), np.asarray(items, dtype=object)
    file_hashes = np.asarray(file_hashes, dtype=object)
    keep = paths[a] != paths[b]
    keep &= ~((file_hashes[a] == file_hashes[b]) & (file_hashes[a] != ""))
    a, b = a[keep], b[keep]
    cosine = row_dots(x, a, b)
    votes = {"embedding": cosine >= thresholds["cosine"]}
    correlation = np.full(len(a), np.nan)
    distance = np.full(len(a), -1, dtype=np.int64)
    if pixels is not None:
        usable = np.abs(pixels.descriptors).sum(axis=1) > 0
        both = usable[a] & usable[b]
        (paired,) = memo.arrays(
            "hygiene-pairs",
            lambda: (pair_correlation(pixels.descriptors, a, b),),
            pixels.descriptors,
            a,
            b,
        )
        correlation = np.where(both, paired, np.nan)
        distance = np.where(both, hash_distance(pixels.hashes, a, b), -1)
        votes["pixels"] = both & (correlation >= thresholds["pixels"])
        votes["hash"] = both & (distance <= thresholds["hash_bits"]) & (distance >= 0)
    count = np.sum(list(votes.values()), axis=0) if len(a) else np.zeros(0, dtype=int)
    chosen = count >= min_signals
    names = np.array(list(votes))
    method = ["+".join(names[[v[i] for v in votes.values()]]) for i in np.flatnonzero(chosen)]
    table = pd.DataFrame(
        {
            "path_a": paths[a][chosen],
            "item_a": items[a][chosen],
            "path_b": paths[b][chosen],
            "item_b": items[b][chosen],
            "cosine": np.round(cosine[chosen], 5),
            "pixel_correlation": np.round(correlation[chosen], 4),
            "hash_bits": distance[chosen],
            "signals": count[chosen].astype(int),
            "method": method,
        },
        columns=columns,
    )
    return table.sort_values(["signals", "cosine"], ascending=False).reset_index(drop=True)


def row_dots(x: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 1024) -> np.ndarray:
    """``x[a[i]] · x[b[i]]`` for every pair, in blocks (no two ``len(a) × d`` copies)."""
    out = np.zeros(len(a), dtype=x.dtype if len(a) else np.float64)
    for start in range(0, len(a), block):
        rows = slice(start, start + block)
        out[rows] = np.einsum("ij,ij->i", x[a[rows]], x[b[rows]])
    return out


def _first_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if values.shape[1] == 0:  # one image: no neighbour at all
        return np.full(len(values), -np.inf)
    masked = np.where(valid, values, -np.inf)
    return masked.max(axis=1)


def outlier_scores(sims: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine distance to the ``k`` nearest neighbours and its robust z-score."""
    distance = 1.0 - sims[:, :k].mean(axis=1)
    return distance, robust_z(distance)


# --- pixels: quality, descriptors, appearance ------------------------------------------


@dataclass
class PixelPass:
    """What one re-read of each file gives the audit (rows follow the paths read).

    Attributes
    ----------
    stats : DataFrame
        ``mean``, ``std`` (grey levels 0-255) and ``entropy`` (bits) of a greyscale copy.
    descriptors : ndarray of shape (n, DESCRIPTOR_SIDE**2)
        Band-passed, surround-masked greyscale descriptor, zero mean and unit norm
        (zeros when unreadable): a dot product is a correlation of image *content*, not
        of black surround or vignette.
    hashes : ndarray of shape (n, 8) of uint64
        64-bit DCT perceptual hash of each of the 8 flips / quarter-turns (row 0 as read).
    appearance : DataFrame or None
        The appearance attributes (:mod:`medsort.io.appearance`) when asked for.
    """

    stats: pd.DataFrame
    descriptors: np.ndarray
    hashes: np.ndarray
    appearance: pd.DataFrame | None = None


def pixel_pass(
    paths: Sequence[Path],
    options: ReadOptions | None = None,
    with_appearance: bool = False,
    n_threads: int = 2,
) -> PixelPass:
    """Read the first item of each file through medsort's readers and measure it.

    Reading through :func:`~medsort.io.readers.iter_images` means DICOM, NIfTI and
    16-bit PNGs get their display intensities (a 16-bit PNG is not "blank" because a
    greyscale conversion clipped it). Unreadable files get NaN statistics and zero
    descriptors.
    """
    options = options or ReadOptions()
    with ThreadPoolExecutor(n_threads) as pool:
        rows = list(pool.map(lambda path: _measure(Path(path), options, with_appearance), paths))
    stats = pd.DataFrame([row[0] for row in rows], columns=["mean", "std", "entropy"])
    descriptors = np.zeros((len(rows), DESCRIPTOR_SIDE**2), dtype=np.float32)
    hashes = np.zeros((len(rows), 8), dtype=np.uint64)
    for i, row in enumerate(rows):
        if row[1] is not None:
            descriptors[i], hashes[i] = row[1], row[2]
    table = None
    if with_appearance:
        empty = dict.fromkeys(appearance.NAMES, np.nan)
        table = pd.DataFrame([row[3] or empty for row in rows], columns=list(appearance.NAMES))
    return PixelPass(stats, descriptors, hashes, table)


def _measure(path: Path, options: ReadOptions, with_appearance: bool):  # noqa: ANN202
    try:
        image = next(iter_images(path, options))
    except (ReadError, StopIteration, OSError):
        return (np.nan, np.nan, np.nan), None, None, None
    measured = signatures.signature(image.pixels)
    values = appearance.appearance(image) if with_appearance else None
    return measured.stats, measured.descriptor, measured.hashes, values


def hash_distance(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance between ``a``'s hash as read and any orientation of ``b``."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    xor = hashes[a, :1] ^ hashes[b]
    bits = np.unpackbits(xor.view(np.uint8).reshape(len(a), 8, 8), axis=2).sum(axis=2)
    return bits.min(axis=1).astype(np.int64)


def dihedral_neighbours(descriptors: np.ndarray, k: int = 5, block: int = 256):
    """Best correlation of each descriptor with the others under the 8 flips/quarter-turns.

    Returns ``(similarities, indices)`` of shape ``(n, k)``: the ``k`` most correlated other
    rows, each at its best orientation, so a flipped or rotated copy scores as high as an
    untouched one (which embeddings of most encoders do not guarantee). Exact, in blocks.
    """
    n, side = len(descriptors), DESCRIPTOR_SIDE
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    base = np.ascontiguousarray(descriptors, dtype=np.float32)
    squares = base.reshape(n, side, side)

    def score_rows(rows: np.ndarray) -> np.ndarray:
        best = None
        for turns in range(4):
            turned = np.rot90(squares[rows], turns, axes=(1, 2))
            for variant in (turned, turned[:, :, ::-1]):
                scores = np.ascontiguousarray(variant).reshape(len(rows), -1) @ base.T
                best = scores if best is None else np.maximum(best, scores)
        return best

    return blockwise_top_k(score_rows, n, k, block)


def quality_flags(
    stats: pd.DataFrame,
    width: np.ndarray | None = None,
    height: np.ndarray | None = None,
    blank_std: float = 2.0,
    dark_mean: float = 15.0,
    bright_mean: float = 240.0,
    low_entropy: float = 1.5,
    size_z: float = 4.0,
) -> pd.Series:
    """A ``;``-separated flag string per image (``""`` when nothing is wrong).

    ``blank``: std < ``blank_std`` grey levels; ``very_dark`` / ``very_bright``: mean
    below / above the given level (0–255); ``low_information``: grey-level entropy below
    ``low_entropy`` bits (and not blank); ``odd_size``: robust z-score of log pixel count or
    of log aspect ratio above ``size_z`` within the set.
    """
    flags = pd.DataFrame(index=stats.index)
    flags["blank"] = stats["std"] < blank_std
    flags["very_dark"] = (stats["mean"] < dark_mean) & ~flags["blank"]
    flags["very_bright"] = (stats["mean"] > bright_mean) & ~flags["blank"]
    flags["low_information"] = (stats["entropy"] < low_entropy) & ~flags["blank"]
    flags["odd_size"] = False
    if width is not None and height is not None:
        w = np.asarray(pd.to_numeric(pd.Series(width), errors="coerce"), dtype=float)
        h = np.asarray(pd.to_numeric(pd.Series(height), errors="coerce"), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            area_z = np.abs(robust_z(np.log(w * h)))
            aspect_z = np.abs(robust_z(np.log(w / h)))
        flags["odd_size"] = np.nan_to_num(np.maximum(area_z, aspect_z)) > size_z
    names = flags.columns.to_numpy()
    return pd.Series([";".join(names[row]) for row in flags.to_numpy()], index=stats.index)
