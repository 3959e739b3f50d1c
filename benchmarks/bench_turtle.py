"""TURTLE (numpy, :mod:`turtle_numpy`) against the default grouper on the real dev sets.

Same features and cases as ``bench_views.py`` (cached ``embed_files``: CNN vector, colour and
texture views; labels only score). Per modality group of the default grouper, TURTLE runs on
the CNN PCA block of the grouper, the colour block, the texture block and the row-normalised
Laplacian eigenmaps the default formed its groups in (``--no-spectral``: the first three). Rows:

- the default grouper (``k`` by silhouette, view weighting voted);
- TURTLE as a replacement at the default's ``k``, and with ``k`` in 2..k_max chosen by its
  cross-validated generalisation score (``acc``, the paper's) or its chance-corrected ``kappa``;
- TURTLE as a seventh candidate in the default's median-partition vote.

    python benchmarks/bench_turtle.py [--cache-dir scratch/bench-cache] [--cases ...]
        [--gamma 10] [--restarts 3] [--k-max 10 | 1: no k scan] [--no-spectral]

Figures: docs/benchmarks.md, "TURTLE, the actual optimisation".
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_views import SETS, cases, load_set  # noqa: E402
from turtle_numpy import Turtle, generalisation_score, standardised  # noqa: E402

from medsort.embed.cache import EmbeddingCache  # noqa: E402
from medsort.embed.registry import create_encoder  # noqa: E402
from medsort.group import TwoLevelGrouper, score_grouping  # noqa: E402
from medsort.group.multiview import ViewBlocks, most_agreed  # noqa: E402
from medsort.group.two_level import transform_rows  # noqa: E402


class RecordingGrouper(TwoLevelGrouper):
    """The default grouper, keeping every candidate partition of the vote per modality group."""

    def _fit_conditions(self, X: np.ndarray, Z: np.ndarray) -> None:
        self.candidate_labels_: dict[int, list[np.ndarray]] = {}
        super()._fit_conditions(X, Z)

    def _candidate_model(self, model, base, parts, weights, fit_rows):
        chosen = super()._candidate_model(model, base, parts, weights, fit_rows)
        self.candidate_labels_.setdefault(len(self.view_models_), []).append(chosen.labels_)
        return chosen


def modality_spaces(grouper: TwoLevelGrouper, data: dict, rows: np.ndarray, m: int) -> list:
    """TURTLE spaces of one modality group, standardised: the CNN PCA block, colour, texture
    and (fourth, only in some variants) the row-normalised Laplacian eigenmaps the default
    grouper formed its groups in."""
    reducer = grouper.modality_models_[m][0]
    cnn = transform_rows(reducer, np.asarray(data["X"], dtype=np.float32), rows)
    views = {name: array[rows] for name, array in data["views"].items()}
    blocks = ViewBlocks(weight=1.0, random_state=0)
    parts = blocks.blocks(blocks.fit(views).transform(views))
    spectral = grouper.modality_models_[m][1].spectral_coords_
    spectral = spectral / np.maximum(np.linalg.norm(spectral, axis=1, keepdims=True), 1e-12)
    return [
        standardised(cnn),
        *(standardised(parts[name]) for name in blocks.names_),
        standardised(spectral),
    ]


def turtle_labels(spaces: list, k: int, **params) -> tuple[np.ndarray, float]:
    started = time.process_time()
    model = Turtle(k, random_state=0, **params).fit(spaces)
    return model.labels_, time.process_time() - started


def assemble(parts: dict[int, np.ndarray], modality: np.ndarray) -> np.ndarray:
    """Flat labels from per-modality-group labels (offset per group)."""
    out, offset = np.zeros(len(modality), dtype=np.int64), 0
    for m in sorted(parts):
        rows = np.flatnonzero(modality == m)
        out[rows] = parts[m] + offset
        offset += int(parts[m].max()) + 1
    return out


def row(case: str, method: str, labels: np.ndarray, y: np.ndarray, extra: str = "") -> None:
    score = score_grouping(y, labels)
    print(
        f"{case:38s} {method:34s} k={len(np.unique(labels)):2d} ACC {score['acc']:.3f} "
        f"NMI {score['nmi']:.3f} {extra}",
        flush=True,
    )


def run_case(
    case: str, data: dict, k: int | None, k_max: int, params: dict, spectral: bool = True
) -> None:
    y = data["y"]
    started = time.process_time()
    grouper = RecordingGrouper(n_clusters=k, random_state=0).fit(data["X"], views=data["views"])
    row(case, "default", grouper.labels_, y, f"cpu_s={time.process_time() - started:.2f}")
    fixed, by_acc, by_kappa, voted, costs, scan = {}, {}, {}, {}, [], []
    for m in range(grouper.n_modalities_):
        rows = np.flatnonzero(grouper.modality_labels_ == m)
        spaces = modality_spaces(grouper, data, rows, m)
        spaces = spaces if spectral else spaces[:3]
        k_default = grouper.modality_models_[m][1].n_clusters_
        fixed[m], cost = turtle_labels(spaces, k_default, **params)
        costs.append(cost)
        candidates = grouper.candidate_labels_.get(m, [grouper.modality_models_[m][1].labels_])
        best, _ = most_agreed([*candidates, fixed[m]])
        voted[m] = [*candidates, fixed[m]][best]
        if k is not None or k_max < 2:
            by_acc[m] = by_kappa[m] = fixed[m]
            continue
        results = {}
        for kk in range(2, k_max + 1):
            labels, _ = turtle_labels(spaces, kk, **params)
            results[kk] = (labels, generalisation_score(spaces, labels))
            sc = score_grouping(y[rows], labels)
            scan.append(
                f"m{m} k={kk} acc_score {results[kk][1]['acc']:.3f} "
                f"kappa {results[kk][1]['kappa']:.3f} -> ACC {sc['acc']:.3f} NMI {sc['nmi']:.3f}"
            )
        by_acc[m] = results[max(results, key=lambda kk: results[kk][1]["acc"])][0]
        by_kappa[m] = results[max(results, key=lambda kk: results[kk][1]["kappa"])][0]
    modality = grouper.modality_labels_
    row(case, "TURTLE at default k", assemble(fixed, modality), y, f"cpu_s={sum(costs):.2f}")
    if k is None and k_max >= 2:
        row(case, "TURTLE, k by CV accuracy", assemble(by_acc, modality), y)
        row(case, "TURTLE, k by CV kappa", assemble(by_kappa, modality), y)
    chosen = "turtle" if any(voted[m] is fixed[m] for m in voted) else "a default candidate"
    row(case, "vote + TURTLE candidate", assemble(voted, modality), y, f"won={chosen}")
    for line in scan:
        print(f"{case:38s}   {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("scratch/bench-cache"))
    parser.add_argument("--sets", nargs="*", default=SETS)
    parser.add_argument("--cases", nargs="*", default=None, help="only these case names")
    parser.add_argument("--k-max", type=int, default=10, help="below 2: no k scan")
    parser.add_argument("--gamma", type=float, default=10.0)
    parser.add_argument("--n-iter", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--warm-start", action="store_true")
    parser.add_argument(
        "--no-spectral", action="store_true", help="only the CNN, colour and texture spaces"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    params = {
        "gamma": args.gamma,
        "n_iter": args.n_iter,
        "n_restarts": args.restarts,
        "warm_start": args.warm_start,
    }
    print(f"TURTLE params: {params}, spectral space: {not args.no_spectral}", flush=True)
    encoder = create_encoder("efficientnet_lite0")
    cache = EmbeddingCache(args.cache_dir)
    sets = {name: load_set(name, cache, encoder) for name in args.sets}
    with threadpool_limits(1):
        for case, (data, k) in cases(sets).items():
            if args.cases is None or case in args.cases:
                run_case(case, data, k, args.k_max, params, spectral=not args.no_spectral)


if __name__ == "__main__":
    main()
