"""Names from a few labelled reference images, for any encoder (text-capable or not).

References are given as a folder with one sub-folder per label (``refs/pneumonia/*.png``;
two levels, ``refs/chest X-ray/pneumonia/*.png``, name the modality too) or as a CSV
``path,label`` with paths relative to the CSV. A label ``"chest X-ray/pneumonia"`` is the
condition ``pneumonia`` of the modality ``chest X-ray``.

Scoring (chosen by measurement, see ``benchmarks/bench_naming.py``): embeddings are
centred on the mean of the sorted images and L2-normalised; each label is the normalised
mean of its references; each image scores every label by cosine similarity, turned into
probabilities with a softmax at temperature :data:`TEMPERATURE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsort.embed.cache import CacheSpec, open_cache
from medsort.embed.registry import Encoder
from medsort.embed.stream import embed_files
from medsort.io.readers import ReadOptions
from medsort.io.scan import scan_folder

TEMPERATURE = 0.05
"""Softmax temperature on cosine similarities (centred space) for per-image scores."""


@dataclass
class References:
    """Embedded reference images: one row per item, with its label."""

    labels: np.ndarray
    """``str`` label per row (``"modality/condition"`` or ``"condition"``)."""
    vectors: np.ndarray
    skipped: list[tuple[Path, str]]


def read_reference_list(spec: Path | str) -> pd.DataFrame:
    """The ``path,label`` table of a reference folder or CSV (absolute paths).

    Parameters
    ----------
    spec : Path or str
        A folder with one sub-folder per label, or a CSV with ``path`` and ``label``
        columns (paths relative to the CSV's folder, or absolute).

    Returns
    -------
    DataFrame
        Columns ``path`` (Path) and ``label`` (str), at least one row.
    """
    spec = Path(spec)
    if spec.is_dir():
        table = _folder_table(spec)
    elif spec.is_file():
        table = _csv_table(spec)
    else:
        raise FileNotFoundError(f"Reference folder or CSV not found: {spec}")
    if table.empty:
        raise ValueError(
            f"No labelled reference image in {spec}: use one sub-folder per label, "
            "or a CSV with path,label."
        )
    return table


def embed_references(
    spec: Path | str,
    encoder: Encoder,
    cache: CacheSpec = None,
    options: ReadOptions | None = None,
    progress: bool = False,
) -> References:
    """Read and embed the references with the sort's encoder, reader options and cache
    (a :data:`~medsort.embed.cache.CacheSpec`)."""
    table = read_reference_list(spec)
    store, opened = open_cache(cache)
    try:
        embedded = embed_files(
            list(table["path"]), encoder, store, options=options, progress=progress
        )
    finally:
        if opened:
            store.close()
    label_of = dict(zip(table["path"], table["label"], strict=True))
    labels = np.array([label_of[path] for path in embedded.files], dtype=object)
    if len(labels) == 0:
        raise ValueError(f"None of the {len(table)} reference images in {spec} could be read.")
    return References(labels=labels, vectors=embedded.vectors, skipped=embedded.skipped)


def reference_probabilities(
    embeddings: np.ndarray,
    references: np.ndarray,
    reference_labels: np.ndarray,
    temperature: float = TEMPERATURE,
) -> tuple[list[str], np.ndarray]:
    """Per-image label probabilities from cosine similarity to label centroids.

    Parameters
    ----------
    embeddings : ndarray of shape (n_images, dim)
        The sorted images.
    references : ndarray of shape (n_references, dim)
        The reference images, same encoder.
    reference_labels : ndarray of shape (n_references,)
        Label of each reference.
    temperature : float
        Softmax temperature on cosine similarities.

    Returns
    -------
    labels : list of str
        The distinct labels, sorted.
    probabilities : ndarray of shape (n_images, n_labels)
    """
    images, refs = centred_unit(embeddings, references)
    labels = sorted({str(label) for label in reference_labels})
    centroids = np.stack([refs[reference_labels == label].mean(axis=0) for label in labels])
    similarity = images @ unit(centroids).T
    return labels, softmax(similarity / temperature)


def centred_unit(images: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets L2-normalised, centred on the images' mean, normalised again."""
    images, references = unit(images.astype(np.float64)), unit(references.astype(np.float64))
    centre = images.mean(axis=0)
    return unit(images - centre), unit(references - centre)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def _folder_table(root: Path) -> pd.DataFrame:
    rows = []
    for path in scan_folder(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue  # a file directly in the folder has no label
        rows.append((path, "/".join(parts[:-1][:2])))
    return pd.DataFrame(rows, columns=["path", "label"])


def _csv_table(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if not {"path", "label"} <= set(table.columns):
        raise ValueError(f"Reference CSV {csv} needs the columns path,label")
    table = table[(table["path"] != "") & (table["label"] != "")]
    paths = [Path(p) if Path(p).is_absolute() else csv.parent / p for p in table["path"]]
    return pd.DataFrame({"path": paths, "label": table["label"].str.strip().to_list()})
