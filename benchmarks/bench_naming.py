"""Benchmark of reference-based naming on the real sets in ``../shared/data``.

For each set, every image is embedded with the project's code (``embed_files`` and the
cache), grouped into as many groups as true classes (the project's ``TwoLevelGrouper``
when it exists, else k-means on unit vectors), then named from ``r`` labelled references
per class (drawn from the set and left out of the named images). A group's name is
correct when it equals the majority true label of its members; "unnamed" counts as wrong.

It prints, per set and ``r``:

* ``acc``      named correctly at the default threshold (of all groups)
* ``acc@0``    correct best guess, no threshold
* ``named``    share of groups that got a name at the default threshold
* ``raw`` / ``knn``  acc@0 of two alternatives: centroids without centring, and
  k-nearest-reference votes of the members (the measurement behind the default)

and, over all runs, precision and coverage of names for a range of thresholds.

    python benchmarks/bench_naming.py
    python benchmarks/bench_naming.py --sets chest-xray-28 --refs 1 5 --seeds 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medsort.embed.cache import EmbeddingCache, default_cache_dir
from medsort.embed.registry import Encoder, create_encoder
from medsort.embed.stream import embed_files
from medsort.io.scan import relative_key
from medsort.name import MIN_CONFIDENCE, name_groups
from medsort.name.reference import centred_unit, unit
from medsort.results import SortResult

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ["lung-histology", "chest-xray-28", "dermoscopy", "brain-mri", "breast-ultrasound-28"]
THRESHOLDS = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8]
MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def embed_set(
    name: str, encoder: Encoder, cache_dir: Path
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Files, true labels and embeddings of one set (one row per readable file)."""
    folder = DATA / name
    labels = pd.read_csv(folder / "labels.csv")
    label_of = {folder / p: label for p, label in zip(labels["path"], labels["label"], strict=True)}
    cache = EmbeddingCache(cache_dir)
    try:
        embedded = embed_files(list(label_of), encoder, cache, progress=True)
    finally:
        cache.close()
    truth = np.array([label_of[path] for path in embedded.files])
    return embedded.files, truth, embedded.vectors


def group(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` groups from the project's grouper, else k-means on unit vectors."""
    try:
        from medsort.group import TwoLevelGrouper

        return TwoLevelGrouper(n_clusters=k, random_state=seed).fit(vectors).labels_
    except ImportError:
        from sklearn.cluster import KMeans

        return KMeans(k, n_init=4, random_state=seed).fit_predict(unit(vectors))


def choose_references(truth: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random images of every class."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(truth == label), per_class, replace=False)
            for label in np.unique(truth)
        ]  # fmt: skip
    )


def majority(truth: np.ndarray, groups: np.ndarray) -> dict[int, str]:
    return {int(g): pd.Series(truth[groups == g]).mode()[0] for g in np.unique(groups)}


def alternatives(
    items: np.ndarray, refs: np.ndarray, ref_labels: np.ndarray, groups: np.ndarray
) -> dict[str, dict[int, str]]:
    """Best-guess names of two alternative methods, for comparison."""
    labels = np.unique(ref_labels)
    raw_items, raw_refs = unit(items), unit(refs)
    centroids = unit(np.stack([raw_refs[ref_labels == label].mean(0) for label in labels]))
    raw = {int(g): labels[np.argmax(unit(raw_items[groups == g].mean(0)) @ centroids.T)]
           for g in np.unique(groups)}  # fmt: skip
    c_items, c_refs = centred_unit(items, refs)
    k = min(5, int(pd.Series(ref_labels).value_counts().min()))
    nearest = np.argsort(-(c_items @ c_refs.T), axis=1)[:, :k]
    votes = np.searchsorted(labels, ref_labels[nearest])
    knn = {}
    for g in np.unique(groups):
        counts = np.bincount(votes[groups == g].ravel(), minlength=len(labels))
        knn[int(g)] = labels[np.argmax(counts)]
    return {"raw": raw, "knn": knn}


def run_one(
    name: str,
    files: list[Path],
    truth: np.ndarray,
    vectors: np.ndarray,
    groups: np.ndarray,
    per_class: int,
    seed: int,
    encoder: Encoder,
    work: Path,
    cache_dir: Path,
) -> tuple[dict[str, object], list[tuple[float, bool]]]:
    """Name the groups from ``per_class`` references; return scores and (confidence, correct)."""
    refs = choose_references(truth, per_class, seed)
    keep = np.setdiff1d(np.arange(len(files)), refs)
    csv = work / f"refs_{name}_{per_class}_{seed}.csv"
    pd.DataFrame({"path": [str(files[i]) for i in refs], "label": truth[refs]}).to_csv(
        csv, index=False
    )
    result = _result(name, [files[i] for i in keep], vectors[keep], groups[keep], encoder)
    named = name_groups(result, encoder, reference=csv, cache=cache_dir)
    expected = majority(truth[keep], groups[keep])
    entries = named.run["naming"]["groups"]
    pairs = [(e["confidence"], e["candidate"] == expected[e["group"]], _margin(e)) for e in entries]
    others = alternatives(vectors[keep], vectors[refs], truth[refs], groups[keep])
    n = len(entries)
    return {
        "set": name,
        "refs/class": per_class,
        "acc": sum(e["name"] == expected[e["group"]] for e in entries) / n,
        "acc@0": sum(correct for _, correct, _ in pairs) / n,
        "named": sum(e["name"] != "unnamed" for e in entries) / n,
        "raw": np.mean([others["raw"][g] == expected[g] for g in expected]),
        "knn": np.mean([others["knn"][g] == expected[g] for g in expected]),
    }, pairs


def _result(
    name: str, files: list[Path], vectors: np.ndarray, groups: np.ndarray, encoder: Encoder
) -> SortResult:
    folder = DATA / name
    n = len(files)
    assignments = pd.DataFrame(
        {
            "path": [relative_key(f, folder) for f in files],
            "item": [""] * n,
            "modality_group": np.zeros(n, int),
            "group": groups,
        }  # fmt: skip
    )
    return SortResult(
        assignments=assignments,
        items=assignments[["path", "item"]].copy(),
        embeddings=vectors,
        skipped=pd.DataFrame(columns=["path", "reason"]),
        run={"input_dir": str(folder), "encoder": encoder.name, "read_options": {}},
    )


def _margin(entry: dict) -> float:
    """Best label's confidence minus the runner-up's (the names' margin)."""
    return float(entry["confidence"]) - float(entry.get("runner_up_confidence") or 0.0)


def cut_table(
    pairs: list[tuple[float, bool, float]], by: str, min_confidence: float = 0.0
) -> pd.DataFrame:
    """Precision (named groups that are right) and coverage (groups named) per cut.

    ``by="threshold"`` cuts on the confidence (``THRESHOLDS``), ``by="margin"`` on the lead
    over the runner-up (``MARGINS``), names also needing ``min_confidence``.
    """
    correct = np.array([ok for _, ok, _ in pairs])
    confidence = np.array([c for c, _, _ in pairs])
    score = np.array([c if by == "threshold" else m for c, _, m in pairs])
    rows = []
    for cut in THRESHOLDS if by == "threshold" else MARGINS:
        named = (score >= cut) & (confidence >= min_confidence)
        rows.append({
            by: cut,
            "coverage": named.mean(),
            "precision": correct[named].mean() if named.any() else float("nan"),
            "n named": int(named.sum()),
            "wrong & named": (~correct & named).mean(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=SETS)
    parser.add_argument("--refs", nargs="+", type=int, default=[1, 3, 5, 10])
    parser.add_argument("--seeds", type=int, default=3, help="random draws of references")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache")
    args = parser.parse_args()
    cache_dir = args.cache_dir or default_cache_dir()
    encoder = create_encoder("efficientnet_lite0")
    rows, pairs = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            if not (DATA / name / "labels.csv").is_file():
                print(f"skip {name}: not found under {DATA}")
                continue
            files, truth, vectors = embed_set(name, encoder, cache_dir)
            groups = group(vectors, len(np.unique(truth)), seed=0)
            for per_class in args.refs:
                for seed in range(args.seeds):
                    row, found = run_one(name, files, truth, vectors, groups, per_class, seed,
                                         encoder, Path(tmp), cache_dir)  # fmt: skip
                    rows.append(row)
                    pairs += found
    table = pd.DataFrame(rows).groupby(["set", "refs/class"], sort=False).mean().round(2)
    pd.set_option("display.width", 120)
    print(f"\nReference naming, efficientnet_lite0, {args.seeds} draws of references, "
          f"groups = true number of classes, default min_confidence {MIN_CONFIDENCE}")  # fmt: skip
    print(table.to_string())
    print("\nMean over sets:")
    print(pd.DataFrame(rows).groupby("refs/class").mean(numeric_only=True).round(2).to_string())
    print("\nThreshold on confidence (all sets and draws):")
    print(cut_table(pairs, "threshold").round(2).to_string(index=False))
    print("\nMargin (best minus runner-up confidence), all sets and draws:")
    print(cut_table(pairs, "margin").round(3).to_string(index=False))
    print(f"\nMargin, names also needing confidence >= {MIN_CONFIDENCE}:")
    print(cut_table(pairs, "margin", MIN_CONFIDENCE).round(3).to_string(index=False))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
