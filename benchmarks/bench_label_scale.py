"""Time and memory of ``medsort label``'s default model on many rows (synthetic embeddings).

Each size runs in its own process (so peak memory is that size's), on non-negative
``--dim``-dimensional vectors drawn around 20 centres, 5 classes of 4 centres each, 10
labels per class and the 20 centres as groups (the sort's groups)::

    python benchmarks/bench_label_scale.py --sizes 20000 200000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

N_CENTRES, N_CLASSES, LABELS_PER_CLASS = 20, 5, 10


def one_size(n: int, dim: int) -> dict[str, float]:
    from medsort.refine.propagate import GraphLabelSpreading

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_CENTRES, dim)).astype(np.float32)
    groups = rng.integers(0, N_CENTRES, n)
    truth = (groups % N_CLASSES).astype(str)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):  # float32 throughout: the data, not its making, is measured
        part = slice(start, min(start + 65536, n))
        noise = rng.standard_normal((part.stop - start, dim), dtype=np.float32)
        X[part] = np.abs(centres[groups[part]] + 2.0 * noise)
    y = np.full(n, None, dtype=object)
    for name in np.unique(truth):
        y[rng.choice(np.flatnonzero(truth == name), LABELS_PER_CLASS, replace=False)] = name
    started = time.perf_counter()
    model = GraphLabelSpreading().fit(X, y, groups=groups)
    seconds = time.perf_counter() - started
    rest = y == None  # noqa: E711 - elementwise on an object array
    return {
        "rows": n,
        "dim": dim,
        "fit_s": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "accuracy": round(float((model.transduction_[rest] == truth[rest]).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.dim)), flush=True)
        return
    for n in args.sizes:
        command = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
