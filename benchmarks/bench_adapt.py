"""Self-supervised adaptation (``medsort adapt``) before vs after, on each dev set.

For every set: adapt the encoder on the set's images (no labels), then group with the
default grouping (:class:`~medsort.sorter.Sorter`, views on, k automatic; chest-xray-28 also
``--k 2``) with the ImageNet encoder and with the adapted one, and score both against the
labels: matched accuracy, NMI, and the 10-label balanced accuracy of ``medsort label``'s
default method (10 random labels per class, 5 repeats, scored on the unlabelled rest, as
``benchmarks/bench_refine.py`` does). Labels are read for scoring only. Prints the CPU
time of each adaptation (process time, all threads) and its wall time.

Usage::

    nice -n 5 python benchmarks/bench_adapt.py --data ../shared/data \\
        --models /tmp/adapted --sets dermoscopy,breast-ultrasound-28 --out bench_adapt
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

from medsort.group.metrics import cluster_accuracy
from medsort.refine.classifier import FeatureMap
from medsort.refine.propagate import GraphLabelSpreading

SETS = (
    "dermoscopy",
    "breast-ultrasound-28",
    "chest-xray-28",
    "lung-histology",
    "brain-mri",
    "blood-cells-128",
)
FLAT_K = {"chest-xray-28": 2}


def ten_label(Z: np.ndarray, truth: np.ndarray, groups: np.ndarray, repeats: int) -> float:
    from sklearn.metrics import balanced_accuracy_score

    scores = []
    for r in range(repeats):
        rng = np.random.default_rng(r)
        y = np.full(len(truth), None, dtype=object)
        for name in np.unique(truth):
            rows = np.flatnonzero(truth == name)
            y[rng.choice(rows, min(10, int(0.8 * len(rows))), replace=False)] = name
        predicted = GraphLabelSpreading(features="passthrough").fit(Z, y, groups=groups)
        rest = y == None  # noqa: E711
        scores.append(
            balanced_accuracy_score(truth[rest], np.asarray(predicted.transduction_)[rest])
        )
    return float(np.mean(scores))


def score(images: Path, truth_csv: Path, encoder: str, k: int | None, cache: Path, repeats: int):
    from medsort.sorter import Sorter

    sorter = Sorter(encoder=encoder, n_clusters=k, cache_dir=cache, progress=False).fit(images)
    table = sorter.result_.assignments
    truth = pd.read_csv(truth_csv)
    truth["path"] = truth["path"].str.removeprefix("images/")
    labels = table["path"].map(dict(zip(truth["path"], truth["label"], strict=True)))
    known = labels.notna().to_numpy()
    y, groups = labels[known].to_numpy().astype(str), table["group"].to_numpy()[known]
    X = sorter.result_.embeddings[known]
    Z = FeatureMap().fit_transform(X)
    return {
        "k": int(len(np.unique(groups))),
        "acc": round(cluster_accuracy(y, groups), 3),
        "nmi": round(float(normalized_mutual_info_score(y, groups)), 3),
        "ba10": round(ten_label(Z, y, groups, repeats), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=here / ".." / "shared" / "data")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--models", type=Path, default=Path("bench_adapt_models"))
    parser.add_argument("--cache-dir", type=Path, default=Path("bench_adapt_cache"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench_adapt"))
    parser.add_argument("--no-before", action="store_true", help="skip the ImageNet scores")
    args = parser.parse_args()
    from medsort.adapt import Adapter

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.sets.split(","):
        images, truth = args.data / name / "images", args.data / name / "labels.csv"
        model_dir = args.models / f"{name}-seed{args.seed}"
        wall = time.perf_counter()
        adapter = Adapter(epochs=args.epochs, views=args.views, seed=args.seed, quiet=True)
        adapter.fit(images, model_dir, overwrite=True)
        wall = time.perf_counter() - wall
        config = json.loads((model_dir / "adapted.json").read_text())
        training = config["training"]
        print(
            f"{name}: {config['trained_on']['n_images']} images adapted in "
            f"{training['cpu_seconds']:.0f} s CPU, {wall:.0f} s wall; epochs run "
            f"{training['epochs_run']}, best {training['best_epoch']}; criterion "
            + " ".join(f"{h['criterion']:.3f}" for h in training["history"]),
            flush=True,
        )
        for k in sorted({None, FLAT_K.get(name)}, key=lambda v: v or 0):
            for label, encoder in (
                ("imagenet", "efficientnet_lite0"),
                ("adapted", f"adapted:{model_dir}"),
            ):
                if label == "imagenet" and args.no_before:
                    continue
                s = score(images, truth, encoder, k, args.cache_dir, args.repeats)
                row = {"set": name, "k_given": k or "auto", "encoder": label, **s,
                       "adapt_cpu_s": training["cpu_seconds"], "adapt_wall_s": round(wall),
                       "best_epoch": training["best_epoch"],
                       "epochs_run": training["epochs_run"]}  # fmt: skip
                rows.append(row)
                print("  ", row, flush=True)
                pd.DataFrame(rows).to_csv(args.out / "adapt.csv", index=False)
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
