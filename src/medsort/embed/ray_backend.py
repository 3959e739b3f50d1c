"""Ray backend for the embed stage: the same cache and results as :func:`embed_files`, on a cluster.

What runs where
---------------
* **Driver** (the process that calls :func:`embed_files_ray`): hashes every file (a thread
  pool, I/O bound), looks each one up in the SQLite :class:`EmbeddingCache`, and sends only
  the misses to Ray. It consumes the results as a stream, writes each result block as a
  Parquet shard (when ``shards_dir`` is given) and stores every file in the same SQLite
  cache, so local and Ray runs share it and nothing is embedded twice.
* **Encoder actors** (``num_workers`` of them, a Ray Data ``map_batches`` actor pool): each
  builds its encoder once from the registry spec string (nothing big is pickled), then, for
  every block of files, decodes them in background threads and embeds them in model batches
  exactly as the local backend does (:mod:`medsort.embed.stream`). Unreadable files come back
  with their reason and end up in ``skipped``, as locally.

Workers read the files by path, so on a multi-node cluster the input folder must be on
storage every node mounts at the same path (NFS, a shared volume). See ``docs/scaling.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medsort.embed.cache import CachedFile, EmbeddingCache, content_hash
from medsort.embed.stream import (
    Embedded,
    PendingFile,
    assemble_embedded,
    cache_token,
    embed_pending,
)
from medsort.embed.views import pack_views, unpack_views
from medsort.io.readers import ReadOptions

__all__ = ["embed_files_ray", "default_num_workers"]

CPUS_PER_WORKER = 4
"""Default CPU share of one encoder actor when ``num_workers`` is not given."""
HASH_THREADS = 8


def embed_files_ray(
    files: Sequence[Path],
    encoder_spec: str,
    cache: EmbeddingCache,
    options: ReadOptions | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    *,
    encoder_name: str | None = None,
    num_gpus: float = 0.0,
    n_readers: int = 2,
    shards_dir: Path | None = None,
) -> Embedded:
    """Embed every readable file with a pool of Ray encoder actors; rows in file order.

    Parameters
    ----------
    files : sequence of Path
        Files to embed, in the order the output rows should follow. Every Ray worker must
        be able to open them by these paths.
    encoder_spec : str
        Registry spec, e.g. ``"efficientnet_lite0"``; each actor calls ``create_encoder``.
    cache : EmbeddingCache
        Looked up on the driver before anything is sent to Ray; results are stored back.
    options : ReadOptions, optional
        Reader choices (windowing, frames, slices, tiling); part of the cache key.
    batch_size : int
        Images per model call inside an actor.
    num_workers : int or None
        Encoder actors. ``None``: one per ``CPUS_PER_WORKER`` CPUs of the cluster (at least 1).
    address : str or None
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``). ``None`` joins the Ray
        instance already initialised in this process, else starts a local one.
    progress : bool
        Show a progress bar.
    encoder_name : str or None
        The encoder's ``name`` (its cache-key part). ``None`` builds the encoder once on the
        driver to read it.
    num_gpus : float
        GPUs per actor; above 0 the actor moves its encoder to CUDA (the encoder must have a
        ``to(device)`` method).
    n_readers : int
        Decoding threads inside each actor.
    shards_dir : Path or None
        If given, each result block is also written there as ``part-NNNNN.parquet``
        (columns ``key, items, n, dim, vectors``), under a fresh ``run-*`` sub-folder.

    Returns
    -------
    Embedded
        The same structure :func:`medsort.embed.stream.embed_files` returns.
    """
    options = options or ReadOptions()
    if encoder_name is None:
        from medsort.embed.registry import create_encoder

        encoder_name = create_encoder(encoder_spec).name
    done, hashes, skipped, pending = _check_cache(files, encoder_name, options, cache, progress)
    n_embedded = 0
    if pending:
        started = _connect(address)
        try:
            n_embedded = _run_ray(
                files,
                pending,
                encoder_spec,
                cache,
                options,
                batch_size,
                num_workers,
                num_gpus,
                n_readers,
                shards_dir,
                progress,
                done,
                skipped,
            )
        finally:
            if started:
                _disconnect()
    cache.commit()
    return assemble_embedded(files, done, hashes, skipped, n_embedded=n_embedded)


def default_num_workers(total_cpus: float) -> int:
    """One encoder actor per ``CPUS_PER_WORKER`` CPUs, at least one."""
    return max(1, int(total_cpus // CPUS_PER_WORKER))


def _check_cache(
    files: Sequence[Path],
    encoder_name: str,
    options: ReadOptions,
    cache: EmbeddingCache,
    progress: bool,
) -> tuple[dict[int, CachedFile], dict[int, str], dict[int, str], dict[int, str]]:
    """Hash files in parallel; return cache hits, every content hash, unreadable files and
    misses (their cache keys), each keyed by file index."""
    token = cache_token(options)
    done: dict[int, CachedFile] = {}
    hashes: dict[int, str] = {}
    skipped: dict[int, str] = {}
    pending: dict[int, str] = {}
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        digests = pool.map(_safe_hash, files)
        bar = tqdm(
            digests,
            total=len(files),
            desc="checking cache",
            unit="file",
            leave=False,
            disable=not progress,
        )
        for index, (file_hash, error) in enumerate(bar):
            if error is not None:
                skipped[index] = error
                continue
            hashes[index] = file_hash
            key = EmbeddingCache.key(file_hash, encoder_name, token)
            hit = cache.get(key)
            if hit is None:
                pending[index] = key
            else:
                done[index] = hit
    return done, hashes, skipped, pending


def _safe_hash(path: Path) -> tuple[str, str | None]:
    try:
        return content_hash(path), None
    except OSError as error:
        return "", f"cannot open file: {error.strerror or error}"


def _connect(address: str | None) -> bool:
    """Join ``address`` or the running instance, else start a quiet local one.

    Returns whether this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray runs workers at niceness 15; on a busy machine that starves the encoder actors
    # behind every other process, unlike the local backend. Set it to 0 (overridable).
    os.environ.setdefault("RAY_worker_niceness", "0")
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def _disconnect() -> None:
    import ray

    ray.shutdown()


def _run_ray(
    files: Sequence[Path],
    pending: dict[int, str],
    encoder_spec: str,
    cache: EmbeddingCache,
    options: ReadOptions,
    batch_size: int,
    num_workers: int | None,
    num_gpus: float,
    n_readers: int,
    shards_dir: Path | None,
    progress: bool,
    done: dict[int, CachedFile],
    skipped: dict[int, str],
) -> int:
    """Embed the cache misses on Ray; fill ``done``/``skipped``; return files embedded."""
    import ray

    _quiet_ray_data(progress)
    total_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    workers = num_workers or default_num_workers(total_cpus)
    cpus_per_worker = max(1.0, math.floor(total_cpus / workers))
    files_per_call = _files_per_call(len(pending), batch_size, workers)
    rows = [{"index": i, "path": str(files[i]), "key": key} for i, key in pending.items()]
    dataset = _from_items(rows, max(1, math.ceil(len(rows) / files_per_call))).map_batches(
        _EncoderActor,
        fn_constructor_kwargs={
            "encoder_spec": encoder_spec,
            "options": options,
            "batch_size": batch_size,
            "n_readers": n_readers,
            "threads": int(cpus_per_worker),
            "use_gpu": num_gpus > 0,
        },
        batch_size=files_per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=num_gpus or None,
    )
    shard_folder = _shard_folder(shards_dir)
    bar = tqdm(total=len(pending), desc="embedding (ray)", unit="file", disable=not progress)
    n_embedded = 0
    for number, block in enumerate(dataset.iter_batches(batch_size=None, batch_format="numpy")):
        if shard_folder is not None:
            _write_shard(block, shard_folder / f"part-{number:05d}.parquet")
        n_embedded += _store_block(block, cache, done, skipped)
        bar.update(len(block["index"]))
    bar.close()
    return n_embedded


def _from_items(rows: list[dict[str, Any]], n_blocks: int) -> Any:
    """``ray.data.from_items`` split into ``n_blocks`` blocks (Ray < 2.10 calls it parallelism)."""
    import ray

    try:
        return ray.data.from_items(rows, override_num_blocks=n_blocks)
    except TypeError:
        return ray.data.from_items(rows, parallelism=n_blocks)


def _files_per_call(n_files: int, batch_size: int, workers: int) -> int:
    """Files per actor call: a few model batches, but enough blocks to keep every actor busy."""
    per_worker = math.ceil(n_files / (4 * workers))
    return max(1, min(4 * batch_size, per_worker))


def _quiet_ray_data(progress: bool) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.verbose_progress = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray").setLevel(logging.WARNING)
    del progress  # the driver shows its own bar


def _store_block(
    block: dict[str, np.ndarray],
    cache: EmbeddingCache,
    done: dict[int, CachedFile],
    skipped: dict[int, str],
) -> int:
    """Put one result block into the cache and the result maps; return files embedded."""
    embedded = 0
    rows = zip(
        block["index"],
        block["key"],
        block["items"],
        block["n"],
        block["dim"],
        block["vectors"],
        zip(block["view_dims"], block["views"], strict=True),
        zip(block["signature_dims"], block["signatures"], strict=True),
        block["error"],
        strict=True,
    )
    for index, key, items, n, dim, vectors, views, measured, error in rows:
        if error:
            skipped[int(index)] = str(error)
            continue
        matrix = np.frombuffer(vectors, dtype=np.float32).reshape(int(n), int(dim))
        entry = CachedFile(
            json.loads(items), matrix, _unpacked(*views), signatures=_unpacked(*measured)
        )
        cache.put(str(key), entry)
        done[int(index)] = entry
        embedded += 1
    return embedded


def _unpacked(dims: str, blob: bytes) -> dict[str, np.ndarray]:
    """Arrays of :func:`~medsort.embed.views.pack_views` (views, pixel signatures)."""
    return unpack_views(str(dims), bytes(blob))


def _shard_folder(shards_dir: Path | None) -> Path | None:
    if shards_dir is None:
        return None
    folder = Path(shards_dir) / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_shard(block: dict[str, np.ndarray], path: Path) -> None:
    """Write the embedded files of one block (not the failures) as a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keep = np.array([not error for error in block["error"]], dtype=bool)
    if not keep.any():
        return
    table = pa.table(
        {
            "key": pa.array([str(v) for v in block["key"][keep]], pa.string()),
            "items": pa.array([str(v) for v in block["items"][keep]], pa.string()),
            "n": pa.array(block["n"][keep].astype(np.int32)),
            "dim": pa.array(block["dim"][keep].astype(np.int32)),
            "vectors": pa.array([bytes(v) for v in block["vectors"][keep]], pa.binary()),
            "view_dims": pa.array([str(v) for v in block["view_dims"][keep]], pa.string()),
            "views": pa.array([bytes(v) for v in block["views"][keep]], pa.binary()),
            "signature_dims": pa.array(
                [str(v) for v in block["signature_dims"][keep]], pa.string()
            ),
            "signatures": pa.array([bytes(v) for v in block["signatures"][keep]], pa.binary()),
        }
    )
    pq.write_table(table, path)


class _Collector:
    """Stands in for the cache inside an actor: keeps what ``embed_pending`` stores."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedFile] = {}

    def put(self, key: str, entry: CachedFile) -> None:
        self.entries[key] = entry


class _EncoderActor:
    """One model load per actor; each call embeds a block of files like the local backend.

    Parameters
    ----------
    encoder_spec : str
        Registry spec passed to ``create_encoder``.
    options : ReadOptions
        Reader choices.
    batch_size : int
        Images per model call.
    n_readers : int
        Decoding threads.
    threads : int
        Torch intra-op threads (the actor's CPU share).
    use_gpu : bool
        Move the encoder to CUDA.
    """

    def __init__(
        self,
        encoder_spec: str,
        options: ReadOptions,
        batch_size: int,
        n_readers: int,
        threads: int,
        use_gpu: bool,
    ) -> None:
        from medsort.embed.registry import create_encoder
        from medsort.embed.runtime import tune_cpu_runtime

        tune_cpu_runtime(num_threads=max(1, threads))  # as the local backend does
        self.encoder = create_encoder(encoder_spec)
        if use_gpu:
            if not hasattr(self.encoder, "to"):
                raise ValueError(f"Encoder {encoder_spec!r} cannot be moved to a GPU.")
            self.encoder.to("cuda")
        self.options = options
        self.batch_size = batch_size
        self.n_readers = n_readers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(str(path)) for path in batch["path"]]
        keys = [str(key) for key in batch["key"]]
        pending = {i: PendingFile(key=key, file_hash="") for i, key in enumerate(keys)}
        collector = _Collector()
        embed_pending(
            files,
            pending,
            self.encoder,
            collector,  # type: ignore[arg-type]
            self.options,
            self.batch_size,
            self.n_readers,
            False,
        )
        return _result_columns(batch["index"], keys, pending, collector, self.encoder.dim)


def _result_columns(
    indices: np.ndarray,
    keys: list[str],
    pending: dict[int, PendingFile],
    collector: _Collector,
    dim: int,
) -> dict[str, np.ndarray]:
    """One output row per input file: items (JSON), vectors, views and pixel signatures
    (float32 bytes) or an error."""
    items, counts, vectors, errors = [], [], [], []
    views: list[tuple[str, bytes]] = []
    measured: list[tuple[str, bytes]] = []
    for position, key in enumerate(keys):
        entry = collector.entries.get(key)
        error = pending[position].error
        if entry is None and error is None:
            error = "the file produced no embedding"
        if error is not None or entry is None:
            items.append("[]")
            counts.append(0)
            vectors.append(b"")
            views.append(("{}", b""))
            measured.append(("{}", b""))
            errors.append(error)
            continue
        items.append(json.dumps(entry.items, default=str))
        counts.append(len(entry.items))
        vectors.append(np.ascontiguousarray(entry.vectors, dtype=np.float32).tobytes())
        views.append(pack_views(entry.views))
        measured.append(pack_views(entry.signatures))
        errors.append("")
    return {
        "index": np.asarray(indices, dtype=np.int64),
        "key": np.asarray(keys, dtype=object),
        "items": np.asarray(items, dtype=object),
        "n": np.asarray(counts, dtype=np.int64),
        "dim": np.full(len(keys), dim, dtype=np.int64),
        "vectors": np.asarray(vectors, dtype=object),
        "view_dims": np.asarray([dims for dims, _ in views], dtype=object),
        "views": np.asarray([blob for _, blob in views], dtype=object),
        "signature_dims": np.asarray([dims for dims, _ in measured], dtype=object),
        "signatures": np.asarray([blob for _, blob in measured], dtype=object),
        "error": np.asarray(errors, dtype=object),
    }
