"""Benchmark the grouping stage on real labelled sets (labels used only for scoring).

Usage::

    python benchmarks/bench_grouping.py [--feats /work/scratch/feats] [--data ../shared/data]
        [--alternatives] [--umap]

Features are read from ``<feats>/<set>.npy`` + ``<set>.csv`` (path,label) and embedded with
``efficientnet_lite0`` when missing. Prints one table row per set and method; no asserts.
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans

from medsort.group import SpectralAutoK, TwoLevelGrouper, score_grouping
from medsort.group.reduce import FeatureReducer

SETS = ["lung-histology", "chest-xray-28", "breast-ultrasound-28", "brain-mri", "dermoscopy"]
ROOT = Path(__file__).resolve().parents[1]


def embed_set(data_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Embed one set with the project's encoder; returns features and labels."""
    import PIL.Image
    import torch

    from medsort.embed.registry import create_encoder
    from medsort.preprocess import to_model_input, to_tensor_batch

    torch.set_num_threads(2)
    enc = create_encoder("efficientnet_lite0")
    with open(data_dir / name / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    feats = []
    for i in range(0, len(rows), 32):
        batch = [
            to_model_input(
                np.asarray(PIL.Image.open(data_dir / name / r["path"]).convert("RGB")), enc.config
            )
            for r in rows[i : i + 32]
        ]
        feats.append(enc.embed(to_tensor_batch(batch, enc.config)))
    return np.concatenate(feats).astype(np.float32), np.array([r["label"] for r in rows])


def load_set(feats: Path, data_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Cached features and labels of a set, or the mixed chest-xray-28 + lung-histology set."""
    if name == "mixed":
        names = ("chest-xray-28", "lung-histology")
        parts = [load_set(feats, data_dir, s) for s in names]
        X = np.vstack([p[0] for p in parts])
        y = np.concatenate([[f"{s}/{v}" for v in p[1]] for s, p in zip(names, parts, strict=True)])
        return X, y
    npy, lab = feats / f"{name}.npy", feats / f"{name}.csv"
    if npy.exists() and lab.exists():
        with open(lab) as handle:
            return np.load(npy), np.array([r["label"] for r in csv.DictReader(handle)])
    return embed_set(data_dir, name)


def reduced(X: np.ndarray) -> np.ndarray:
    return FeatureReducer(random_state=0).fit_transform(X)


def umap_space(X: np.ndarray) -> np.ndarray:
    import umap

    Z = reduced(X)
    return umap.UMAP(
        n_neighbors=15, n_components=10, min_dist=0.0, random_state=0, n_jobs=1
    ).fit_transform(Z)


def hdbscan_labels(U: np.ndarray) -> np.ndarray:
    labels = HDBSCAN(min_cluster_size=max(15, int(0.02 * len(U)))).fit_predict(U)
    if (labels < 0).all():
        return np.zeros(len(U), dtype=int)
    centres = np.stack([U[labels == c].mean(axis=0) for c in range(labels.max() + 1)])
    noise = labels < 0
    labels[noise] = ((U[noise, None] - centres[None]) ** 2).sum(-1).argmin(axis=1)
    return labels


def methods(k_true: int, alternatives: bool, use_umap: bool) -> dict[str, Callable]:
    """Method name -> function of raw features returning labels."""
    out: dict[str, Callable] = {
        "TwoLevelGrouper (default, auto k)": lambda X: TwoLevelGrouper(random_state=0).fit(X),
        "TwoLevelGrouper n_clusters=true k": lambda X: TwoLevelGrouper(
            n_clusters=k_true, random_state=0
        ).fit(X),
    }
    if alternatives:
        out["SpectralAutoK flat (no level 1)"] = lambda X: SpectralAutoK(random_state=0).fit(
            reduced(X)
        )
        out["baseline L2-PCA50-kmeans true k"] = lambda X: KMeans(
            k_true, n_init=4, random_state=0
        ).fit(reduced(X))
    if use_umap:
        out["baseline UMAP10-kmeans true k"] = lambda X: KMeans(
            k_true, n_init=4, random_state=0
        ).fit(umap_space(X))
        out["UMAP10-HDBSCAN mcs=max(15,2%n)"] = lambda X: hdbscan_labels(umap_space(X))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feats", type=Path, default=Path("/work/scratch/feats"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sets", nargs="*", default=[*SETS, "mixed"])
    parser.add_argument("--alternatives", action="store_true", help="add flat baselines")
    parser.add_argument("--umap", action="store_true", help="add UMAP baselines (slow)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    header = f"{'set':22s} {'method':42s} {'k':>3s} {'M':>2s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s}"
    print(header + f" {'mod.pur':>7s} {'wall s':>6s} {'cpu s':>6s}")
    for name in args.sets:
        X, y = load_set(args.feats, args.data, name)
        k_true = len(np.unique(y))
        for method, run in methods(k_true, args.alternatives, args.umap).items():
            start, cpu_start = time.perf_counter(), time.process_time()
            result = run(X)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            labels = result if isinstance(result, np.ndarray) else result.labels_
            score = score_grouping(y, labels)
            n_mod, purity = "-", "-"
            if isinstance(result, TwoLevelGrouper):
                n_mod = str(result.n_modalities_)
                modality = np.array([v.split("/")[0] if name == "mixed" else name for v in y])
                purity = f"{score_grouping(modality, result.modality_labels_)['acc']:.3f}"
            print(
                f"{name:22s} {method:42s} {len(np.unique(labels)):3d} {n_mod:>2s} "
                f"{score['acc']:6.3f} {score['nmi']:6.3f} {score['ari']:6.3f} {purity:>7s} "
                f"{seconds:6.2f} {cpu:6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
