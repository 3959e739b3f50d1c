"""Data hygiene: exact and near duplicates, outliers and image-quality flags.

* Exact duplicates: BLAKE2b of each source file's bytes.
* Near duplicates, two ways: nearest neighbours on L2-normalised embeddings (exact search
  in blocks up to 20,000 images, faiss HNSW above; never an N×N matrix), and a 16×16
  greyscale descriptor compared under the 8 flips/quarter-turns (rotated or flipped
  copies, which embeddings need not match). Each way's threshold is calibrated on the set
  itself: a robust outlier cut on ``log(1 - s1)``, ``s1`` being each image's
  nearest-neighbour similarity (see :func:`calibrate_near_threshold`).
* Outliers: mean cosine distance to the ``k`` nearest neighbours, flagged when its robust
  z-score (median / MAD) is above ``z``.
* Quality: small greyscale re-reads (JPEG draft mode) give brightness, contrast and
  entropy; blank, very dark or bright, low-information and odd-size images are flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medsort.embed.cache import content_hash

MAD_SCALE = 1.4826
MEAN_AD_SCALE = 1.2533
PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
QUALITY_SIDE = 64
DESCRIPTOR_SIDE = 16
DRAFT_SIDE = 32


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


def keep_mask(hashes: Sequence[str], paths: Sequence[str] | None = None) -> np.ndarray:
    """Rows to keep so that each file content is used once (the first file of each copy set).

    Parameters
    ----------
    hashes : sequence of str
        Content hash of each row's source file (rows of one multi-item file share it).
    paths : sequence of str, optional
        Source file of each row; rows of the first file with a given hash are all kept.
        Without it each row is taken as its own file.

    Returns
    -------
    ndarray of bool, shape (n_rows,)
        ``True`` for rows to keep. Rows with an empty hash (unreadable) are kept.
    """
    paths = list(paths) if paths is not None else [str(i) for i in range(len(hashes))]
    first: dict[str, str] = {}
    mask = np.ones(len(hashes), dtype=bool)
    for row, (digest, path) in enumerate(zip(hashes, paths, strict=True)):
        if not digest:
            continue
        owner = first.setdefault(digest, path)
        mask[row] = owner == path
    return mask


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


def nearest_neighbours(x: np.ndarray, k: int, exact_limit: int = 20_000, block: int = 512):
    """Cosine similarities and indices of the ``k`` nearest other rows of ``x`` (normalised).

    Exact search in blocks of ``block`` rows (memory ``block × n``, never ``n × n``) up to
    ``exact_limit`` rows; faiss HNSW (approximate) above, or sklearn's ball tree when
    faiss is not installed.
    """
    k = min(k, len(x) - 1)
    if k < 1:
        return np.zeros((len(x), 0), np.float32), np.zeros((len(x), 0), np.int64)
    if len(x) <= exact_limit:
        return _blockwise_top_k(lambda rows: x[rows] @ x.T, len(x), k, block)
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is optional
        return _sklearn_neighbours(x, k + 1)
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = max(64, 2 * k)
    index.add(x)
    sims, idx = index.search(x, k + 1)
    return _drop_self(sims, idx)


def _blockwise_top_k(score_rows, n: int, k: int, block: int):  # noqa: ANN001, ANN202
    """Top ``k`` scores per row of an implicit ``n × n`` score matrix, self excluded."""
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        scores = score_rows(rows)
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        sims[rows] = np.take_along_axis(values, order, axis=1)
        idx[rows] = np.take_along_axis(top, order, axis=1)
    return sims, idx


def _sklearn_neighbours(x: np.ndarray, k: int):
    from sklearn.neighbors import NearestNeighbors

    model = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(x)
    dist, idx = model.kneighbors(x)
    return _drop_self(1.0 - dist**2 / 2.0, idx)


def _drop_self(sims: np.ndarray, idx: np.ndarray):
    """Remove each row from its own neighbour list (keeping ``k`` columns)."""
    rows = np.arange(len(idx))[:, None]
    order = np.argsort(idx == rows, axis=1, kind="stable")[:, : idx.shape[1] - 1]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


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


def near_duplicate_table(
    embedding_pairs: pd.DataFrame,
    pixel_pairs: pd.DataFrame,
    x: np.ndarray,
    descriptors: np.ndarray | None,
    paths: Sequence[str],
    items: Sequence[str],
) -> pd.DataFrame:
    """One row per pair found by either method, with both scores and the method(s)."""
    embedding_pairs = embedding_pairs.assign(by_embedding=True)
    pixel_pairs = pixel_pairs.assign(by_pixels=True)
    pairs = pd.merge(
        embedding_pairs[["a", "b", "by_embedding"]],
        pixel_pairs[["a", "b", "by_pixels", "similarity"]].rename(
            columns={"similarity": "pixel_correlation"}
        ),
        on=["a", "b"],
        how="outer",
    )
    columns = ["path_a", "item_a", "path_b", "item_b", "cosine", "pixel_correlation", "method"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    a, b = pairs["a"].to_numpy(int), pairs["b"].to_numpy(int)
    by_e = pairs["by_embedding"].astype("boolean").fillna(False).to_numpy(bool)
    by_p = pairs["by_pixels"].astype("boolean").fillna(False).to_numpy(bool)
    paths, items = np.asarray(paths, dtype=object), np.asarray(items, dtype=object)
    table = pd.DataFrame(
        {
            "path_a": paths[a],
            "item_a": items[a],
            "path_b": paths[b],
            "item_b": items[b],
            "cosine": np.round(np.einsum("ij,ij->i", x[a], x[b]), 5),
            "pixel_correlation": pairs["pixel_correlation"].round(4).to_numpy(),
            "method": np.where(by_e & by_p, "both", np.where(by_e, "embedding", "pixels")),
        }
    )
    return table.sort_values("cosine", ascending=False).reset_index(drop=True)[columns]


def _first_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    masked = np.where(valid, values, -np.inf)
    return masked.max(axis=1)


def outlier_scores(sims: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine distance to the ``k`` nearest neighbours and its robust z-score."""
    distance = 1.0 - sims[:, :k].mean(axis=1)
    return distance, robust_z(distance)


# --- quality ---------------------------------------------------------------------------


def pixel_stats(paths: Sequence[Path], n_threads: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """Pixel statistics and a small descriptor per file, from one reduced re-read.

    Returns brightness (``mean``), contrast (``std``) and grey-level ``entropy`` (bits) of
    a greyscale thumbnail at most 64 pixels wide, and a 16×16 greyscale descriptor
    (zero mean, unit norm, so that a dot product is a correlation) for near-duplicate
    search. Only formats Pillow opens directly are read (others get NaN and a zero
    descriptor); JPEGs are decoded at reduced size (draft mode).
    """
    with ThreadPoolExecutor(n_threads) as pool:
        rows = list(pool.map(_stats_one, paths))
    stats = pd.DataFrame([row[:3] for row in rows], columns=["mean", "std", "entropy"])
    descriptors = np.zeros((len(rows), DESCRIPTOR_SIDE**2), dtype=np.float32)
    for i, row in enumerate(rows):
        if row[3] is not None:
            descriptors[i] = row[3]
    return stats, descriptors


def _stats_one(path: Path) -> tuple[float, float, float, np.ndarray | None]:
    if Path(path).suffix.lower() not in PIL_SUFFIXES:
        return (np.nan, np.nan, np.nan, None)
    try:
        with Image.open(path) as image:
            image.draft("L", (DRAFT_SIDE, DRAFT_SIDE))
            image = image.convert("L") if image.mode != "L" else image
            image.thumbnail((QUALITY_SIDE, QUALITY_SIDE))
            pixels = np.asarray(image, dtype=np.uint8)
            small = image.resize((DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), Image.BILINEAR)
    except (OSError, ValueError):
        return (np.nan, np.nan, np.nan, None)
    p = np.bincount(pixels.ravel(), minlength=256) / pixels.size
    p = p[p > 0]
    descriptor = np.asarray(small, dtype=np.float32).ravel()
    descriptor -= descriptor.mean()
    norm = float(np.linalg.norm(descriptor))
    descriptor = descriptor / norm if norm > 1e-3 else np.zeros_like(descriptor)
    return (float(pixels.mean()), float(pixels.std()), float(-(p * np.log2(p)).sum()), descriptor)


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

    return _blockwise_top_k(score_rows, n, k, block)


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
