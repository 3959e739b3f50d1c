"""Few-label methods on adapted embeddings (issue 17): ``medsort label``'s default and
the alternatives tried for the lung-histology and breast-ultrasound 10-label targets.

For every set: adapt the encoder on its images (``medsort adapt`` defaults, seed 0; an
adapted model already in ``--models`` is reused), then embed the set with the ImageNet
encoder and the adapted one (``sort --adapt``'s groups: ``Sorter(reference_encoder=
"auto")``), each also on the horizontally flipped images (for the test-time-augmentation
row). Every method gets 10 random labels per class (5 draws, as ``bench_adapt.py``) and is
scored by balanced accuracy on the unlabelled rest. Labels choose the labelled images and
score; nothing else sees them. Figures: docs/benchmarks.md, "Few labels after adaptation".

Usage::

    nice -n 5 python benchmarks/bench_adapt_labels.py --models scratch/models \\
        --cache-dir scratch/cache --sets breast-ultrasound-28,lung-histology
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adapt import SETS, label_draws  # noqa: E402

from medsort.group import TwoLevelGrouper
from medsort.refine.classifier import FeatureMap
from medsort.refine.propagate import GraphLabelSpreading

Method = Callable[[dict, np.ndarray], np.ndarray]


def spread_proba(Z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, ...]:
    """The default method's classes and class probabilities (without ``other``)."""
    model = GraphLabelSpreading(features="passthrough").fit(Z, y, groups=groups)
    D = model.label_distributions_[:, :-1]
    return model.classes_, D / np.maximum(D.sum(axis=1, keepdims=True), 1e-12)


def mixture_proba(
    Z: np.ndarray, y: np.ndarray, dims: int = 16, shrink: float = 0.5, iters: int = 10
) -> tuple[np.ndarray, ...]:
    """Semi-supervised Gaussian mixture (one component per class, shared shrunk
    covariance, EM on all rows with the labelled rows fixed); equal priors at the end."""
    X = PCA(dims, random_state=0).fit_transform(Z)
    known = y != None  # noqa: E711
    classes = np.unique(y[known].astype(str))
    R = np.zeros((len(X), len(classes)))
    R[np.flatnonzero(known), np.searchsorted(classes, y[known].astype(str))] = 1.0
    weights, prior = R.copy(), np.full(len(classes), 1.0 / len(classes))
    for step in range(iters + 1):
        means = weights.T @ X / weights.sum(axis=0)[:, None]
        D = X[:, None, :] - means[None]
        S = np.einsum("nk,nkd,nke->de", weights, D, D) / weights.sum()
        S = (1 - shrink) * S + shrink * np.eye(dims) * np.trace(S) / dims
        loglik = -0.5 * np.einsum("nkd,de,nke->nk", D, np.linalg.inv(S), D)
        if step == iters:
            break
        post = np.exp(loglik + np.log(prior) - (loglik + np.log(prior)).max(axis=1)[:, None])
        weights = np.where(known[:, None], R, post / post.sum(axis=1, keepdims=True))
        prior = weights.mean(axis=0)
    P = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    return classes, P / P.sum(axis=1, keepdims=True)


def blend(parts: list[tuple[str, str, float]]) -> Method:
    """Weighted mean of class probabilities: ``("spread"|"mixture", features, weight)``."""

    def method(c: dict, y: np.ndarray) -> np.ndarray:
        total = 0.0
        for kind, key, weight in parts:
            if kind == "spread":
                classes, P = spread_proba(c[key], y, c["groups"])
            else:
                classes, P = mixture_proba(c[key], y)
            total = total + weight * P
        return classes[np.asarray(total).argmax(axis=1)]

    return method


def default(key: str, groups: str = "groups") -> Method:
    return lambda c, y: (
        GraphLabelSpreading(features="passthrough").fit(c[key], y, groups=c[groups]).transduction_
    )


def self_training(share: float = 0.6, weight: float = 0.5) -> Method:
    """Class-balanced self-training: the most confident ``share`` of each predicted class
    become pseudo-labels of a balanced logistic regression, blended in; two rounds, the
    second starting from the first's blend."""

    def method(c: dict, y: np.ndarray) -> np.ndarray:
        X = c["adapted"]
        classes, P = spread_proba(X, y, c["groups"])
        known = y != None  # noqa: E711
        codes = np.full(len(y), -1)
        codes[known] = np.searchsorted(classes, y[known].astype(str))
        D = P
        for _ in range(2):
            P = D
            top, confidence, pseudo = D.argmax(axis=1), D.max(axis=1), codes.copy()
            for k in range(len(classes)):
                rows = np.flatnonzero((top == k) & ~known)
                pseudo[rows[np.argsort(-confidence[rows])[: int(share * len(rows))]]] = k
            train = pseudo >= 0
            probe = LogisticRegression(class_weight="balanced", max_iter=2000)
            Q = probe.fit(X[train], pseudo[train]).predict_proba(X)
            D = (1 - weight) * P + weight * Q
        return classes[D.argmax(axis=1)]

    return method


def supervised(model: Callable[[], object]) -> Method:
    def method(c: dict, y: np.ndarray) -> np.ndarray:
        known = y != None  # noqa: E711
        return model().fit(c["adapted"][known], y[known].astype(str)).predict(c["adapted"])

    return method


METHODS: dict[str, Method] = {
    "default, ImageNet features": default("imagenet", "groups_imagenet"),
    "default (adapted)": default("adapted"),
    "default, mean of h-flipped embeddings": default("adapted_tta"),
    "ensemble ImageNet + adapted 1:1": blend([("spread", "adapted", 1), ("spread", "imagenet", 1)]),
    "ensemble ImageNet + adapted 1:2": blend([("spread", "adapted", 2), ("spread", "imagenet", 1)]),
    "semi-supervised mixture": blend([("mixture", "adapted", 1)]),
    "default + mixture 1:1": blend([("spread", "adapted", 1), ("mixture", "adapted", 1)]),
    "ensemble 1:1 + mixture": blend(
        [("spread", "adapted", 1), ("spread", "imagenet", 1), ("mixture", "adapted", 1)]
    ),
    "self-training (60 %, half weight)": self_training(),
    "shrinkage LDA": supervised(
        lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    ),
    "logistic regression": supervised(
        lambda: LogisticRegression(class_weight="balanced", max_iter=2000)
    ),
}


def flipped(images: Path, paths: list[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = (folder / path).with_suffix(".png")
        if not target.exists():
            with Image.open(images / path) as image:
                image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
        out.append(target)
    return out


def features(name: str, args: argparse.Namespace) -> dict:
    """Adapt (or reuse) and embed one set: mapped features, groups and truth."""
    from medsort.adapt import Adapter
    from medsort.sorter import Sorter

    images = args.data / name / "images"
    model_dir = args.models / name
    n_files = sum(1 for path in images.iterdir() if path.is_file())
    epochs = args.epochs if n_files < 1000 or name in args.full_epochs.split(",") else 5
    Adapter(epochs=epochs, seed=0, quiet=True).fit(images, model_dir)
    c: dict = {}
    for tag, encoder in (("imagenet", "efficientnet_lite0"), ("adapted", f"adapted:{model_dir}")):
        sorter = Sorter(
            encoder=encoder, grouper=TwoLevelGrouper(), cache=args.cache_dir, progress=False
        ).fit(images)
        paths = list(sorter.result_.assignments["path"])
        E = sorter.result_.embeddings
        F = sorter.embed(flipped(images, paths, args.flipped / name)).vectors
        c[tag], c[f"{tag}_tta"] = (
            FeatureMap().fit_transform(E),
            FeatureMap().fit_transform((E + F) / 2),
        )
        c["groups" if tag == "adapted" else "groups_imagenet"] = sorter.result_.assignments[
            "group"
        ].to_numpy()
        c["paths"] = paths
    truth = pd.read_csv(args.data / name / "labels.csv")
    label_of = dict(zip(truth["path"].str.removeprefix("images/"), truth["label"], strict=True))
    c["truth"] = np.array([label_of[path] for path in c["paths"]], dtype=str)
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=here / ".." / "shared" / "data")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--models", type=Path, default=Path("bench_adapt_models"))
    parser.add_argument("--cache-dir", type=Path, default=Path("bench_adapt_cache"))
    parser.add_argument("--flipped", type=Path, default=Path("bench_adapt_flipped"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--full-epochs", default="lung-histology", help="large sets adapted with --epochs (not 5)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name in args.sets.split(","):
        c = features(name, args)
        for label, method in METHODS.items():
            started, scores = time.process_time(), []
            for y in label_draws(c["truth"], args.repeats):
                predicted, rest = np.asarray(method(c, y)), y == None  # noqa: E711
                scores.append(balanced_accuracy_score(c["truth"][rest], predicted[rest]))
            print(
                f"{name:22s} {label:40s} {np.mean(scores):.3f} ± {np.std(scores):.3f}"
                f"  ({time.process_time() - started:.0f} s CPU)",
                flush=True,
            )


if __name__ == "__main__":
    main()
