"""Grouping at scale: a million synthetic 512-d embeddings with planted clusters.

The data are ``--clusters`` anisotropic Gaussian clusters of unequal sizes (largest ten
times the smallest), non-negative like pooled CNN features, generated in float32 chunks.
The run fits :class:`~medsort.group.TwoLevelGrouper` (automatic k unless ``--k``), scores
the recovered groups against the planted ones (ARI, NMI), prints the time spent in each
step and the peak resident memory, then checks the report side at that size: writing
``assignments.csv`` and building the (sampled) map section.

    python benchmarks/bench_scale.py                       # 1,000,000 rows
    python benchmarks/bench_scale.py --n 100000 --k 20
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def make_clusters(
    n: int, dim: int, k: int, seed: int, separation: float, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of ``k`` anisotropic Gaussian clusters with unequal sizes, in float32.

    Parameters
    ----------
    n, dim, k : int
        Rows, features and clusters.
    seed : int
        Random seed.
    separation : float
        Standard deviation of the cluster centres per feature (noise is about 1).
    chunk : int
        Rows generated at a time (bounds the temporary memory).

    Returns
    -------
    X : numpy.ndarray of shape (n, dim), float32
    labels : numpy.ndarray of shape (n,)
        Planted cluster of each row.
    """
    rng = np.random.default_rng(seed)
    weights = rng.permutation(np.linspace(1.0, 10.0, k))
    sizes = np.floor(weights / weights.sum() * n).astype(np.int64)
    sizes[: n - sizes.sum()] += 1
    labels = rng.permutation(np.repeat(np.arange(k), sizes))
    centres = (2.0 + separation * rng.standard_normal((k, dim))).astype(np.float32)
    scales = rng.uniform(0.3, 1.5, (k, dim)).astype(np.float32)  # anisotropic per cluster
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        part = labels[start : start + chunk]
        noise = rng.standard_normal((len(part), dim), dtype=np.float32)
        noise *= scales[part]
        noise += centres[part]
        np.maximum(noise, 0.0, out=noise)  # pooled ReLU features are non-negative
        X[start : start + len(part)] = noise
    return X, labels


def timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` so its wall time adds up in ``TIMES[label]``."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def instrument() -> None:
    """Time the grouping's main steps (nested steps are included in their parents)."""
    from medsort.group import cluster, reduce, two_level

    timed(reduce.FeatureReducer, "fit", "reducer fit (PCA on a sample)")
    timed(reduce.FeatureReducer, "transform", "reducer transform (all rows)")
    timed(reduce, "knn_graph", "kNN graph (fit sample)")
    timed(reduce, "laplacian_eigenmaps", "Laplacian eigenmaps")
    timed(reduce.SpectralEmbedding, "transform", "spectral transform (out of sample)")
    timed(two_level.TwoLevelGrouper, "_split_modalities", "level 1: modalities")
    timed(cluster.SpectralAutoK, "fit", "level 2: conditions (SpectralAutoK.fit)")
    timed(cluster, "kmeans_labels", "k-means (all candidates)")
    timed(cluster, "silhouette", "silhouette (all candidates)")
    timed(two_level.TwoLevelGrouper, "_layout", "2-D map layout")


class PeakRSS:
    """Samples this process's resident memory in the background; ``peak_gib`` is the max seen."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as handle:
                self.peak = max(self.peak, int(handle.read().split()[1]) * page)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30


def check_report(grouper: Any, n: int) -> dict[str, float]:
    """Time writing ``assignments.csv`` and building the sampled map section at this size."""
    from medsort.report.html import MAX_MAP_POINTS, map_section
    from medsort.results import SortResult, skipped_table
    from medsort.sorter import representatives

    started = time.perf_counter()
    assignments = pd.DataFrame(
        {
            "path": [f"images/img_{i:07d}.png" for i in range(n)],
            "item": "",
            "modality_group": grouper.modality_labels_,
            "group": grouper.labels_,
            "distance": np.round(grouper.distances_, 6),
            "representative": representatives(grouper.labels_, grouper.distances_, 8),
            "map_x": np.round(grouper.map_2d_[:, 0], 4),
            "map_y": np.round(grouper.map_2d_[:, 1], 4),
        }
    )
    times = {"assignments table": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        assignments.to_csv(Path(folder) / "assignments.csv", index=False)
        times["assignments.csv write"] = time.perf_counter() - started
        times["assignments.csv MiB"] = (Path(folder) / "assignments.csv").stat().st_size / 2**20
        result = SortResult(
            assignments=assignments,
            items=pd.DataFrame({"path": assignments["path"], "item": ""}),
            embeddings=np.zeros((0, 0), dtype=np.float32),
            skipped=skipped_table([]),
            run={"input_dir": folder},
        )
        started = time.perf_counter()
        html = map_section(result, Path(folder))
        times[f"map section (<= {MAX_MAP_POINTS} points)"] = time.perf_counter() - started
        times["map section KiB"] = len(html.encode()) / 1024
    return times


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--separation", type=float, default=0.5)
    parser.add_argument("--k", type=int, default=None, help="flat k (default: automatic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()

    from medsort.group import TwoLevelGrouper

    instrument()
    with PeakRSS() as memory:
        started = time.perf_counter()
        X, truth = make_clusters(args.n, args.dim, args.clusters, args.seed, args.separation)
        generate_s = time.perf_counter() - started
        print(
            f"generated {X.shape} float32 ({X.nbytes / 2**30:.2f} GiB) in {generate_s:.1f} s",
            flush=True,
        )
        started, cpu_started = time.perf_counter(), cpu_seconds()
        grouper = TwoLevelGrouper(n_clusters=args.k, random_state=args.seed).fit(X)
        group_s, group_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        group_peak = memory.peak_gib
        report = {} if args.no_report else check_report(grouper, args.n)
    labels = grouper.labels_
    print(
        f"grouping: {group_s:.1f} s wall, {group_cpu:.1f} s CPU (load average "
        f"{os.getloadavg()[0]:.1f}), peak RSS {group_peak:.2f} GiB (data included)"
    )
    for step, seconds in TIMES.items():
        print(f"  {step:45} {seconds:7.1f} s  ({CALLS[step]} call(s))")
    print(
        f"groups found: {grouper.n_groups_} in {grouper.n_modalities_} modality group(s) "
        f"for {args.clusters} planted; ARI {adjusted_rand_score(truth, labels):.3f}, "
        f"NMI {normalized_mutual_info_score(truth, labels):.3f}"
    )
    for step, value in report.items():
        print(f"  report: {step:40} {value:8.1f}")
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of the whole run (ru_maxrss): {peak_self:.2f} GiB")


if __name__ == "__main__":
    main()
