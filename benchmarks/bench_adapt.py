"""Self-supervised adaptation (``medsort adapt``) before vs after, on each dev set.

For every set: adapt the encoder on the set's images (no labels; an encoder already
adapted there with the same settings is reused, its recorded CPU time reported), then
group with the default grouping (:class:`~medsort.sorter.Sorter`, views on, k automatic;
chest-xray-28 also ``--k 2``) three ways:

``imagenet``
    the ImageNet encoder (no adaptation);
``adapted-alone``
    the adapted encoder alone (``reference_encoder=None``: modality groups and k counted
    on the adapted features too; ``sort --adapt`` before issue 17's second round);
``adapted``
    the adapted encoder as ``sort --adapt`` now groups with it: modality groups and k
    from the ImageNet features, the groups formed in the adapted ones.

Each is scored against the labels: matched accuracy, NMI, and the 10-label balanced
accuracy of ``medsort label``'s default method on the run's embeddings (10 random labels
per class, 5 repeats, scored on the unlabelled rest, as ``benchmarks/bench_refine.py``
does). ``ba10_views`` is the same with the colour and texture views joined to the
embeddings at half weight (a measured option, not what ``medsort label`` does). Labels
are read for scoring only. Prints the CPU time of each adaptation (process time, all
threads) and its wall time.

Usage::

    nice -n 5 python benchmarks/bench_adapt.py --data ../shared/data \\
        --models /tmp/adapted --sets dermoscopy,breast-ultrasound-28 --out bench_adapt
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, normalized_mutual_info_score

from medsort.group import TwoLevelGrouper
from medsort.group.metrics import cluster_accuracy
from medsort.group.multiview import ViewBlocks, mean_row_norm
from medsort.refine.classifier import FeatureMap
from medsort.refine.propagate import GraphLabelSpreading

SETS = (
    "brain-mri",
    "breast-ultrasound-28",
    "dermoscopy",
    "blood-cells-128",
    "lung-histology",
    "chest-xray-28",
)
FLAT_K = {"chest-xray-28": 2}
VIEW_WEIGHT = 0.5


def label_draws(truth: np.ndarray, repeats: int) -> Iterator[np.ndarray]:
    """10 random labels per class (at most 80 % of it), the rest ``None``; seeds 0, 1, .."""
    for r in range(repeats):
        rng = np.random.default_rng(r)
        y = np.full(len(truth), None, dtype=object)
        for name in np.unique(truth):
            rows = np.flatnonzero(truth == name)
            y[rng.choice(rows, min(10, int(0.8 * len(rows))), replace=False)] = name
        yield y


def ten_label(Z: np.ndarray, truth: np.ndarray, groups: np.ndarray, repeats: int) -> float:
    scores = []
    for y in label_draws(truth, repeats):
        predicted = GraphLabelSpreading(features="passthrough").fit(Z, y, groups=groups)
        rest = y == None  # noqa: E711
        scores.append(
            balanced_accuracy_score(truth[rest], np.asarray(predicted.transduction_)[rest])
        )
    return float(np.mean(scores))


def with_views(Z: np.ndarray, views: dict[str, np.ndarray]) -> np.ndarray:
    """``Z`` beside the view blocks, each part scaled to unit mean row norm, views halved."""
    blocks = ViewBlocks(weight=1.0).fit(views).transform(views)
    return np.hstack([Z / mean_row_norm(Z), VIEW_WEIGHT * blocks / mean_row_norm(blocks)])


def score(images: Path, truth_csv: Path, encoder: str, k: int | None, args, reference):
    from medsort.sorter import Sorter

    sorter = Sorter(
        encoder=encoder,
        grouper=TwoLevelGrouper(n_clusters=k),
        cache=args.cache_dir,
        progress=False,
        reference_encoder=reference,
    ).fit(images)
    table = sorter.result_.assignments
    truth = pd.read_csv(truth_csv)
    truth["path"] = truth["path"].str.removeprefix("images/")
    labels = table["path"].map(dict(zip(truth["path"], truth["label"], strict=True)))
    known = labels.notna().to_numpy()
    y, groups = labels[known].to_numpy().astype(str), table["group"].to_numpy()[known]
    embedded = sorter.embed([images / path for path in table["path"]])
    Z = FeatureMap().fit_transform(sorter.result_.embeddings)[known]
    views = {name: array[known] for name, array in embedded.views.items()}
    return {
        "k": int(len(np.unique(groups))),
        "acc": round(cluster_accuracy(y, groups), 3),
        "nmi": round(float(normalized_mutual_info_score(y, groups)), 3),
        "ba10": round(ten_label(Z, y, groups, args.repeats), 3),
        "ba10_views": round(ten_label(with_views(Z, views), y, groups, args.repeats), 3),
    }


def adapt(name: str, images: Path, args) -> tuple[Path, dict, float]:
    from medsort.adapt import Adapter

    n_files = sum(1 for path in images.rglob("*") if path.is_file())
    epochs = args.epochs if n_files < 1000 else args.epochs_large
    model_dir = args.models / name
    wall = time.perf_counter()
    Adapter(epochs=epochs, views=args.views, seed=args.seed, quiet=True).fit(images, model_dir)
    wall = time.perf_counter() - wall
    training = json.loads((model_dir / "adapted.json").read_text())["training"]
    print(
        f"{name}: {n_files} images, {epochs} epochs, adapted in "
        f"{training['cpu_seconds']:.0f} s CPU ({wall:.0f} s wall in this run); best epoch "
        f"{training['best_epoch']} of {training['epochs_run']}; criterion "
        + " ".join(f"{h['criterion']:.3f}" for h in training["history"]),
        flush=True,
    )
    return model_dir, training, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=here / ".." / "shared" / "data")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--models", type=Path, default=Path("bench_adapt_models"))
    parser.add_argument("--cache-dir", type=Path, default=Path("bench_adapt_cache"))
    parser.add_argument("--epochs", type=int, default=15, help="sets under 1000 images")
    parser.add_argument("--epochs-large", type=int, default=5, help="sets of 1000 or more")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench_adapt"))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.sets.split(","):
        images, truth = args.data / name / "images", args.data / name / "labels.csv"
        model_dir, training, wall = adapt(name, images, args)
        for k in sorted({None, FLAT_K.get(name)}, key=lambda v: v or 0):
            for label, encoder, reference in (
                ("imagenet", "efficientnet_lite0", None),
                ("adapted-alone", f"adapted:{model_dir}", None),
                ("adapted", f"adapted:{model_dir}", "auto"),
            ):
                s = score(images, truth, encoder, k, args, reference)
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
