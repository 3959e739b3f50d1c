"""Per-view and combined grouping quality on the real dev sets (labels used only to score).

Every set is embedded once through the real pipeline (``embed_files``: CNN vector and the
hand-crafted views of :mod:`medsort.embed.views`) into ``--cache-dir``, so reruns only group.

    python benchmarks/bench_views.py [--cache-dir scratch/bench-cache] [--cases ...]

For each case it prints one row per method: each view alone (spectral clustering, ``k``
automatic and ``k`` given), the grouper on the CNN only (``view_weight=0``), with every view at
0.2 (``single_view_weights=()``, the previous default) and the default grouper, whose view
weighting is voted per folder. Cases: the six dev sets, a mixed chest-xray-28 +
lung-histology folder, and an imbalanced 3-class subset of blood-cells-128.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import embed_files
from medsort.group import SpectralAutoK, TwoLevelGrouper, score_grouping
from medsort.group.multiview import ViewBlocks
from medsort.group.reduce import FeatureReducer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = [
    "chest-xray-28",
    "lung-histology",
    "blood-cells-128",
    "breast-ultrasound-28",
    "brain-mri",
    "dermoscopy",
]
FIXED_K = {"chest-xray-28": 2, "breast-ultrasound-28": 2, "brain-mri": 2}
BLOOD_SUBSET = {"neutrophil": 234, "lymphocyte": 85, "platelet": 40}
"""The imbalanced 3-class blood-cell check: first rows of each class, in file order."""


def load_set(name: str, cache: EmbeddingCache, encoder: object) -> dict[str, object]:
    """Vectors, views and labels of one dev set, embedded through the real pipeline."""
    labels = pd.read_csv(DATA / name / "labels.csv")
    files = [DATA / name / path for path in labels["path"]]
    embedded = embed_files(files, encoder, cache, progress=False)
    if len(embedded.vectors) != len(files):
        raise RuntimeError(f"{name}: {len(embedded.skipped)} files skipped")
    return {
        "X": embedded.vectors,
        "views": embedded.views,
        "y": labels["label"].to_numpy(),
        "modality": np.full(len(files), name),
    }


def subset(data: dict[str, object], rows: np.ndarray) -> dict[str, object]:
    return {
        "X": data["X"][rows],
        "views": {k: v[rows] for k, v in data["views"].items()},
        "y": data["y"][rows],
        "modality": data["modality"][rows],
    }


def joined(parts: list[dict[str, object]]) -> dict[str, object]:
    return {
        "X": np.vstack([p["X"] for p in parts]),
        "views": {k: np.vstack([p["views"][k] for p in parts]) for k in parts[0]["views"]},
        "y": np.concatenate([[f"{p['modality'][0]}/{v}" for v in p["y"]] for p in parts]),
        "modality": np.concatenate([p["modality"] for p in parts]),
    }


def cases(sets: dict[str, dict[str, object]]) -> dict[str, tuple[dict[str, object], int | None]]:
    out = {name: (data, None) for name, data in sets.items()}
    for name, k in FIXED_K.items():
        out[f"{name} --k {k}"] = (sets[name], k)
    if "chest-xray-28" in sets and "lung-histology" in sets:
        out["mixed chest-xray-28 + lung-histology"] = (
            joined([sets["chest-xray-28"], sets["lung-histology"]]),
            None,
        )
    if "blood-cells-128" in sets:
        y = sets["blood-cells-128"]["y"]
        rows = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in BLOOD_SUBSET.items()])
        out["blood-cells 3-class imbalanced"] = (
            subset(sets["blood-cells-128"], np.sort(rows)),
            None,
        )
    return out


def single_views(data: dict[str, object]) -> dict[str, np.ndarray]:
    """Each view alone, in the space the grouper gives it."""
    out = {"cnn": FeatureReducer(random_state=0).fit_transform(data["X"])}
    blocks = ViewBlocks(weight=1.0)
    out.update(blocks.blocks(blocks.fit(data["views"]).transform(data["views"])))
    return out


def row(case: str, method: str, labels: np.ndarray, data: dict[str, object], **extra) -> None:
    score = score_grouping(data["y"], labels)
    cells = " ".join(f"{k}={v}" for k, v in extra.items())
    print(
        f"{case:38s} {method:34s} k={len(np.unique(labels)):2d} ACC {score['acc']:.3f} "
        f"NMI {score['nmi']:.3f} ARI {score['ari']:.3f} {cells}",
        flush=True,
    )


def run_case(case: str, data: dict[str, object], k: int | None) -> None:
    k_true = len(np.unique(data["y"]))
    for view, Z in single_views(data).items():
        row(case, f"{view} alone, auto k", SpectralAutoK(random_state=0).fit(Z).labels_, data)
        model = SpectralAutoK(n_clusters=k or k_true, random_state=0).fit(Z)
        row(case, f"{view} alone, k={k or k_true}", model.labels_, data)
    for method, params in (
        ("grouper, CNN only", {"view_weight": 0.0}),
        ("grouper + views at 0.2 (before)", {"single_view_weights": ()}),
        ("grouper + views, voted (default)", {}),
    ):
        started = time.process_time()
        grouper = TwoLevelGrouper(n_clusters=k, random_state=0, **params)
        grouper.fit(data["X"], views=data["views"])
        purity = score_grouping(data["modality"], grouper.modality_labels_)["acc"]
        agreement = grouper.views_used_[0].get("agreement", {})
        row(
            case,
            method,
            grouper.labels_,
            data,
            M=grouper.n_modalities_,
            purity=f"{purity:.3f}",
            cpu_s=f"{time.process_time() - started:.2f}",
            agreement=agreement,
            chosen=[used["weights"] for used in grouper.views_used_],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("scratch/bench-cache"))
    parser.add_argument("--sets", nargs="*", default=SETS)
    parser.add_argument("--cases", nargs="*", default=None, help="only these case names")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(2)
    encoder = create_encoder("efficientnet_lite0")
    cache = EmbeddingCache(args.cache_dir)
    sets = {name: load_set(name, cache, encoder) for name in args.sets}
    for case, (data, k) in cases(sets).items():
        if args.cases is None or case in args.cases:
            run_case(case, data, k)


if __name__ == "__main__":
    main()
