"""How far the default grouping's dev figures move when a few images are left out.

A figure measured once on a whole dev set can be a lucky or unlucky draw: the automatic
``k`` and the view vote are choices between near-tied candidates. This benchmark groups
random subsets of each case (``--fraction`` of its images, ``--subsets`` draws) with the
default grouper and prints, per case, the whole set's figure next to the mean, standard
deviation and range over the subsets, and how often each ``k`` was chosen. Labels only
score. Features come from ``--cache-dir`` through the real pipeline, as in
``bench_views.py`` (which also defines the cases).

    python benchmarks/bench_stability.py [--fraction 0.99] [--subsets 20] [--cases ...]
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from bench_views import SETS, cases, load_set, subset

from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.group import TwoLevelGrouper, score_grouping


def grouped(data: dict[str, object], k: int | None) -> tuple[float, float, int]:
    """ACC, NMI and group count of the default grouper on ``data``."""
    grouper = TwoLevelGrouper(n_clusters=k, random_state=0).fit(data["X"], views=data["views"])
    score = score_grouping(data["y"], grouper.labels_)
    return score["acc"], score["nmi"], grouper.n_groups_


def spread(values: list[float]) -> str:
    array = np.asarray(values)
    return f"{array.mean():.3f} ± {array.std():.3f} [{array.min():.3f}, {array.max():.3f}]"


def run_case(case: str, data: dict[str, object], k: int | None, fraction: float, n: int) -> None:
    acc, nmi, n_groups = grouped(data, k)
    rows = len(data["y"])
    scores = []
    for seed in range(1, n + 1):
        keep = np.sort(np.random.default_rng(seed).permutation(rows)[: round(rows * fraction)])
        scores.append(grouped(subset(data, keep), k))
    ks = Counter(groups for _, _, groups in scores)
    print(
        f"| {case} | {acc:.3f} / {nmi:.3f} (k = {n_groups}) "
        f"| {spread([s[0] for s in scores])} | {spread([s[1] for s in scores])} "
        f"| {', '.join(f'{key}: {count}' for key, count in sorted(ks.items()))} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("scratch/bench-cache"))
    parser.add_argument("--fraction", type=float, default=0.99, help="share of images kept")
    parser.add_argument("--subsets", type=int, default=20, help="random subsets per case")
    parser.add_argument("--cases", nargs="*", default=None, help="only these case names")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    encoder = create_encoder("efficientnet_lite0")
    cache = EmbeddingCache(args.cache_dir)
    sets = {name: load_set(name, cache, encoder) for name in SETS}
    print(f"# {args.subsets} random subsets of {args.fraction:.0%} of each case")
    print("| case | whole set ACC / NMI | subsets ACC | subsets NMI | k chosen (subsets) |")
    print("|---|---|---|---|---|")
    for case, (data, k) in cases(sets).items():
        if args.cases is None or case in args.cases:
            run_case(case, data, k, args.fraction, args.subsets)


if __name__ == "__main__":
    main()
