"""Few-label learning curves of the refine stage (balanced accuracy on the unlabelled rest).

Usage::

    python benchmarks/bench_refine.py --data ../shared/data --repeats 5
    python benchmarks/bench_refine.py --features /work/scratch/feats   # <set>.npy + <set>.csv

Without ``--features`` every set is embedded with the project's encoder through the
embedding cache (``--cache-dir``), so a second run embeds nothing. Labels are used for
choosing the labelled images and for scoring only. The feature map (power transform, PCA)
needs no labels, so it is fitted once per set and every method gets the mapped rows. The
unsupervised groups (``TwoLevelGrouper`` on the raw features, as ``medsort sort`` makes
them) are also computed once per set; methods that use them get them as ``groups``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import balanced_accuracy_score
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
from sklearn.svm import SVC

from medsort.group.metrics import cluster_accuracy
from medsort.refine.classifier import FeatureMap, SparSamClassifier
from medsort.refine.propagate import ClusterThenLabel, GraphLabelSpreading
from medsort.refine.suggest import suggest
from medsort.results import ASSIGNMENT_COLUMNS, SortResult

SETS = ("lung-histology", "chest-xray-28", "brain-mri", "breast-ultrasound-28", "dermoscopy")
COUNTS = (1, 5, 10, 25, 100)
P = {"features": "passthrough"}


def _codes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = y != None  # noqa: E711 - elementwise on an object array
    classes = np.unique(y[known].astype(str))
    codes = np.full(len(y), -1)
    codes[known] = np.searchsorted(classes, y[known].astype(str))
    return classes, codes


def sk_label_spreading(Z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    classes, codes = _codes(y)
    model = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=200)
    return classes[model.fit(Z, codes).transduction_]


def self_training(Z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    classes, codes = _codes(y)
    if np.bincount(codes[codes >= 0]).min() < 3:
        return SparSamClassifier("logreg", **P).fit(Z, y).predict(Z)
    base = SVC(kernel="rbf", class_weight="balanced", probability=True, random_state=0)
    model = SelfTrainingClassifier(base, threshold=0.9, max_iter=5)
    return classes[model.fit(Z, codes).predict(Z)]


def spread(groups_used: bool = True, **params) -> Callable[..., np.ndarray]:
    """:class:`GraphLabelSpreading` (with the groups or without) as a benchmark method."""

    def method(Z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
        model = GraphLabelSpreading(**P, **params)
        return model.fit(Z, y, groups=groups if groups_used else None).transduction_

    return method


METHODS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "svm (SparSam)": lambda Z, y, g: SparSamClassifier("svm", **P).fit(Z, y).predict(Z),
    "logreg": lambda Z, y, g: SparSamClassifier("logreg", **P).fit(Z, y).predict(Z),
    "knn": lambda Z, y, g: SparSamClassifier("knn", **P).fit(Z, y).predict(Z),
    "sklearn LabelSpreading knn": sk_label_spreading,
    "self-training svm": self_training,
    "cluster-then-label": lambda Z, y, g: ClusterThenLabel(**P).fit(Z, y).transduction_,
    "spread closed-set": spread(False, open_set=False),
    "spread only (no probe)": spread(False, probe_weight=0.0),
    "spread no groups (old default)": spread(False),
    "spread groups (no vote)": spread(group_vote=False),
    "spread (default)": spread(),
}


def load_features(
    name: str,
    data: Path,
    features: list[Path],
    cache_dir: Path | None,
    encoder: str = "efficientnet_lite0",
):
    """Embeddings and true labels of one set, from a ``features`` folder or embedded (cached)."""
    for folder in features:
        if (folder / f"{name}.npy").is_file():
            table = pd.read_csv(folder / f"{name}.csv")
            return np.load(folder / f"{name}.npy"), table["label"].to_numpy()
    from medsort.embed.cache import EmbeddingCache, default_cache_dir
    from medsort.embed.registry import create_encoder
    from medsort.embed.stream import embed_files

    truth = pd.read_csv(data / name / "labels.csv")
    cache = EmbeddingCache(cache_dir or default_cache_dir())
    try:
        files = [data / name / p for p in truth["path"]]
        embedded = embed_files(files, create_encoder(encoder), cache)
    finally:
        cache.close()
    kept = {str(p) for p in embedded.files}
    labels = truth["label"].to_numpy()[[str(f) in kept for f in files]]
    return embedded.vectors, labels


def random_labels(truth: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels per class at random (at most 80 % of a class, so a rest remains)."""
    y = np.full(len(truth), None, dtype=object)
    for name in np.unique(truth):
        rows = np.flatnonzero(truth == name)
        y[rng.choice(rows, min(n, int(0.8 * len(rows))), replace=False)] = name
    return y


def score(truth: np.ndarray, y: np.ndarray, predicted: np.ndarray) -> float:
    rest = y == None  # noqa: E711
    return balanced_accuracy_score(truth[rest], np.asarray(predicted, dtype=object)[rest])


def learning_curves(Z, truth, groups, methods, counts, repeats) -> list[dict]:
    rows = []
    for method in methods:
        for n in counts:
            started = time.perf_counter()
            scores = [
                score(truth, y, METHODS[method](Z, y, groups))
                for y in (random_labels(truth, n, np.random.default_rng(r)) for r in range(repeats))
            ]
            rows.append(
                {"method": method, "n": n, "mean": np.mean(scores), "sd": np.std(scores),
                 "seconds": (time.perf_counter() - started) / repeats}
            )  # fmt: skip
            print(f"  {method:28s} n={n:<4d} {np.mean(scores):.3f} ± {np.std(scores):.3f}",
                  flush=True)  # fmt: skip
    return rows


def _sort_result(Z: np.ndarray, groups: np.ndarray) -> SortResult:
    centres = np.stack([Z[groups == g].mean(axis=0) for g in np.unique(groups)])
    assignments = pd.DataFrame(
        {"path": [f"{i}" for i in range(len(Z))], "item": "", "modality_group": 0,
         "group": groups, "distance": np.linalg.norm(Z - centres[groups], axis=1),
         "representative": False, "map_x": 0.0, "map_y": 0.0},
        columns=ASSIGNMENT_COLUMNS,
    )  # fmt: skip
    return SortResult(assignments, assignments[["path", "item"]], Z, pd.DataFrame(), {})


def unsupervised_groups(X: np.ndarray, Z: np.ndarray, n_classes: int) -> np.ndarray:
    """The grouping stage's groups when available, else k-means with twice the classes."""
    try:
        from medsort.group import TwoLevelGrouper

        return TwoLevelGrouper(random_state=0).fit(X).labels_
    except (ImportError, AttributeError):
        return KMeans(2 * n_classes, n_init=5, random_state=0).fit_predict(Z)


def suggest_vs_random(Z, truth, groups, counts, repeats) -> list[dict]:
    """Default method with labels chosen by ``suggest`` rounds vs random, same total."""
    classes = np.unique(truth)
    print(f"  groups: {len(np.unique(groups))}, "
          f"matched accuracy {cluster_accuracy(truth, groups):.3f}", flush=True)  # fmt: skip
    result = _sort_result(Z, groups)
    labelled = pd.DataFrame({"path": [], "label": []})
    rows = []
    for n in counts:
        total = n * len(classes)
        if total > 0.5 * len(truth):
            break
        picked = suggest(result, total - len(labelled), labelled if len(labelled) else None)
        picked["label"] = truth[picked["path"].astype(int)]
        labelled = pd.concat([labelled, picked[["path", "label"]]], ignore_index=True)
        y = np.full(len(truth), None, dtype=object)
        y[labelled["path"].astype(int)] = labelled["label"].to_numpy()
        chosen = score(truth, y, METHODS["spread (default)"](Z, y, groups))
        randoms = []
        for r in range(repeats):
            y_r = np.full(len(truth), None, dtype=object)
            rows_r = np.random.default_rng(r).choice(len(truth), total, replace=False)
            y_r[rows_r] = truth[rows_r]
            try:
                randoms.append(score(truth, y_r, METHODS["spread (default)"](Z, y_r, groups)))
            except ValueError:
                continue
        rows.append(
            {"n_per_class": n, "total": total, "suggest": chosen,
             "random_mean": np.mean(randoms), "random_sd": np.std(randoms),
             "suggest_classes": int(len(set(labelled["label"])))}
        )  # fmt: skip
        print(f"  suggest {total:4d} labels: {chosen:.3f}  random {np.mean(randoms):.3f} ± "
              f"{np.std(randoms):.3f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=here / ".." / "shared" / "data")
    parser.add_argument(
        "--features", type=Path, nargs="*", default=[], help="folders of <set>.npy + <set>.csv"
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-suggest", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench_refine"))
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    curves, suggested = [], []
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        X, truth = load_features(name, args.data, args.features, args.cache_dir, args.encoder)
        print(f"{name}: {len(X)} images, {len(np.unique(truth))} classes", flush=True)
        Z = FeatureMap().fit_transform(X)
        groups = unsupervised_groups(X, Z, len(np.unique(truth)))
        methods = args.methods.split(",")
        for row in learning_curves(Z, truth, groups, methods, counts, args.repeats):
            curves.append({"set": name, **row})
        pd.DataFrame(curves).to_csv(args.out / "curves.csv", index=False)
        if not args.no_suggest:
            for row in suggest_vs_random(Z, truth, groups, counts[:-1], args.repeats):
                suggested.append({"set": name, **row})
            pd.DataFrame(suggested).to_csv(args.out / "suggest.csv", index=False)


if __name__ == "__main__":
    main()
