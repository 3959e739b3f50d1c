"""Embedding throughput: the local backend vs the Ray backend with 1 and 2 encoder actors.

Each run is a fresh subprocess with an empty (in-memory) cache, on real images of
``../shared/data/lung-histology``. Per run it measures

* ``start_s``: ``ray.init`` of a local instance (0 for the local backend);
* ``small_s``: embedding 8 other images first: the fixed cost of a call (local: model load;
  Ray: actor pool start, one model load per actor, Ray Data planning);
* ``main_s``: embedding the N images in a second call (Ray starts a new actor pool per call,
  so this includes that fixed cost again).

and reports images/s end to end (``N / (start_s + main_s)``) and in steady state
(``(N - 8) / (main_s - small_s)``, the fixed per-call cost taken out). A first call on 4
other images warms up imports and is not timed. Medians over ``--repeats``.

    python benchmarks/bench_backends.py                   # 600 images, 3 repeats
    python benchmarks/bench_backends.py --n 200 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-histology" / "images"
CONFIGS = {"local": ("local", 0), "ray, 1 worker": ("ray", 1), "ray, 2 workers": ("ray", 2)}
N_SMALL = 8


def run_once(backend: str, workers: int, n: int, batch_size: int) -> dict[str, float]:
    """Time one backend in this process (called in a fresh subprocess)."""
    from medsort.embed.cache import EmbeddingCache

    files = sorted(DATA.iterdir())
    warm, small, main = files[-4:], files[:N_SMALL], files[N_SMALL : N_SMALL + n]
    start_s = 0.0
    if backend == "ray":
        import ray

        from medsort.embed.ray_backend import embed_files_ray

        os.environ.setdefault("RAY_worker_niceness", "0")  # as medsort's own ray.init does
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        start_s = time.perf_counter() - started

        def embed(paths: list[Path]) -> int:
            return embed_files_ray(
                paths,
                "efficientnet_lite0",
                EmbeddingCache(None),
                batch_size=batch_size,
                num_workers=workers,
                progress=False,
                encoder_name="efficientnet_lite0",
            ).vectors.shape[0]
    else:
        from medsort.embed.registry import create_encoder
        from medsort.embed.stream import embed_files

        def embed(paths: list[Path]) -> int:
            encoder = create_encoder("efficientnet_lite0")
            result = embed_files(
                paths, encoder, EmbeddingCache(None), batch_size=batch_size, progress=False
            )
            return result.vectors.shape[0]

    embed(warm)  # imports and first-call warm-up, not timed
    timings = {"start_s": start_s}
    for name, paths in (("small_s", small), ("main_s", main)):
        started = time.perf_counter()
        assert embed(paths) == len(paths)
        timings[name] = time.perf_counter() - started
    return timings


def measure(backend: str, workers: int, n: int, batch_size: int) -> dict[str, float]:
    """Run :func:`run_once` in a fresh interpreter and return its timings."""
    command = [sys.executable, __file__, "--child", backend, str(workers), str(n), str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} x{workers} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, workers, n, batch = args.child
        print(json.dumps(run_once(backend, int(workers), int(n), int(batch))))
        return
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; N={args.n}, batch {args.batch_size}"
    )
    print(
        f"{'backend':16} {'start s':>8} {'fixed s':>8} {'N wall s':>9} "
        f"{'img/s e2e':>10} {'img/s steady':>13}"
    )
    for label, (backend, workers) in CONFIGS.items():
        runs = [measure(backend, workers, args.n, args.batch_size) for _ in range(args.repeats)]
        start = statistics.median(r["start_s"] for r in runs)
        small = statistics.median(r["small_s"] for r in runs)
        wall = statistics.median(r["main_s"] for r in runs)
        e2e = statistics.median(args.n / (r["start_s"] + r["main_s"]) for r in runs)
        steady = statistics.median(
            (args.n - N_SMALL) / max(r["main_s"] - r["small_s"], 1e-9) for r in runs
        )
        print(
            f"{label:16} {start:8.1f} {small:8.1f} {wall:9.1f} {e2e:10.1f} {steady:13.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
