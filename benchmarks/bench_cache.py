"""The embedding cache under contention: SQLite WAL (the store medsort uses) vs. a
file-per-entry store (content-hash-named files written by temp + rename).

P processes start together on one cold cache; each puts N entries (1280 float32
vectors, as the default encoder makes), half of them shared with the other processes
(the same images sorted twice), committing as ``EmbeddingCache`` does, then reads
every key back. Prints wall time per phase, errors and the cache's size on disk.

    PYTHONPATH=src python benchmarks/bench_cache.py --processes 4 --entries 2000
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from medsort.embed.cache import CachedFile, EmbeddingCache, pack, unpack

DIM = 1280


class FileStore:
    """The alternative: one file per entry, named by a hash of the key."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / "entries"
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        name = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return self.folder / name[:2] / name

    def get(self, key: str) -> CachedFile | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        size = int.from_bytes(data[:4], "little")
        return unpack(data[4 : 4 + size].decode(), data[4 + size :])

    def put(self, key: str, entry: CachedFile) -> None:
        header, blob = pack(entry)
        raw = header.encode()
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(handle, "wb") as out:
            out.write(len(raw).to_bytes(4, "little") + raw + blob)
        os.replace(temp, path)

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


def _entry(key: str) -> CachedFile:
    seed = int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16)
    vectors = np.random.default_rng(seed).standard_normal((1, DIM)).astype(np.float32)
    return CachedFile(items=[{"item": "", "meta": {"format": "PNG", "width": 28}}], vectors=vectors)


def _worker(kind: str, folder: str, rank: int, n: int, start: mp.Barrier, out: mp.Queue) -> None:
    keys = [f"shared-{i}" if i % 2 == 0 else f"own-{rank}-{i}" for i in range(n)]
    entries = {key: _entry(key) for key in keys}
    start.wait()
    errors = 0
    clock = time.perf_counter()
    try:
        store = EmbeddingCache(Path(folder)) if kind == "sqlite" else FileStore(Path(folder))
        for key in keys:
            if store.get(key) is None:
                store.put(key, entries[key])
        store.commit()
    except Exception as error:  # counted, the benchmark goes on
        errors += 1
        print(f"{kind} worker {rank}: {type(error).__name__}: {error}")
        out.put((rank, time.perf_counter() - clock, 0.0, errors, 0))
        return
    written = time.perf_counter() - clock
    clock = time.perf_counter()
    found = sum(store.get(key) is not None for key in keys)
    read = time.perf_counter() - clock
    store.close()
    out.put((rank, written, read, errors, found))


def run(kind: str, processes: int, entries: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-cache-{kind}-"))
    try:
        context = mp.get_context("spawn")
        start, out = context.Barrier(processes), context.Queue()
        workers = [
            context.Process(target=_worker, args=(kind, str(folder), r, entries, start, out))
            for r in range(processes)
        ]
        clock = time.perf_counter()
        for worker in workers:
            worker.start()
        results = [out.get() for _ in workers]
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - clock
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        n_files = sum(1 for p in folder.rglob("*") if p.is_file())
        write = max(r[1] for r in results)
        read = max(r[2] for r in results)
        errors = sum(r[3] for r in results)
        found = sum(r[4] for r in results)
        print(
            f"{kind:7s} P={processes} N={entries}: write {write:6.2f} s, read {read:6.2f} s, "
            f"wall {wall:6.2f} s, errors {errors}, found {found}/{processes * entries}, "
            f"{size / 2**20:.1f} MiB in {n_files} file(s)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--entries", type=int, default=2000)
    args = parser.parse_args()
    for kind in ("sqlite", "files"):
        run(kind, args.processes, args.entries)


if __name__ == "__main__":
    main()
