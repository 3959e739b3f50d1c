"""Embed stage: read, preprocess and embed every file, streaming and cached.

Decoding runs in background threads (PIL's decoders and resizers, and ONNX Runtime,
release the GIL, so threads use every core). On a CPU each of them, one per core, also
runs the ONNX model on its own images, 2 a call (:func:`worker_batch`); otherwise (torch,
a GPU) the main thread runs the model on batches while the threads decode the next ones.
A bounded queue keeps memory flat however many images (or slide tiles) there are.
JPEGs are decoded at the smallest DCT scale that keeps twice the encoder's input size.
The decoding threads also measure each item's appearance attributes, hand-crafted views
and the audit's pixel signatures (:mod:`medsort.io.signatures`), all cached with the
embedding, so neither a cached re-run nor its audit decodes an image again; given a
:class:`~medsort.io.thumbnails.ThumbnailWriter`, they also write the report's thumbnails,
so the report of a cold run decodes none either.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medsort.embed.cache import CachedFile, EmbeddingCache, content_hash
from medsort.embed.registry import Encoder
from medsort.embed.runtime import inference_threads, tune_cpu_runtime
from medsort.embed.views import compute_views, views_token
from medsort.io import appearance, signatures
from medsort.io.image import MedImage
from medsort.io.readers import ReadError, ReadOptions, find_reader, iter_images
from medsort.io.thumbnails import ThumbnailWriter
from medsort.preprocess import to_model_input, to_tensor_batch


@dataclass(frozen=True)
class EmbeddedItem:
    """One 2D item of a file, as the embed stage hands it on."""

    item: str
    """Which item of its file (``""`` for a plain image; a frame, slice or tile id)."""
    meta: dict[str, Any]
    """Non-identifying metadata of the item (format, size, appearance, DICOM attributes)."""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EmbeddedItem:
        """From the ``{"item": ..., "meta": {...}}`` record the cache stores."""
        return cls(item=record["item"], meta=record.get("meta", {}))


@dataclass
class Embedded:
    """What the embed stage returns, one row per 2D item, in file order."""

    files: list[Path]
    """Source file of each row."""
    items: list[EmbeddedItem]
    """The item id and metadata of each row."""
    hashes: list[str]
    """Content hash of each row's source file."""
    vectors: np.ndarray
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    n_embedded_files: int = 0
    """Files that were embedded now, not taken from the cache."""
    views: dict[str, np.ndarray] = field(default_factory=dict)
    """Hand-crafted views (:mod:`medsort.embed.views`), name -> ``(n_rows, d)``; empty when
    any file's cache entry has none (e.g. written by the Ray backend)."""
    signatures: dict[str, np.ndarray] = field(default_factory=dict)
    """The audit's pixel signatures (:func:`medsort.io.signatures.pack`), name ->
    ``(n_rows, d)``; empty when any file's cache entry has none."""


@dataclass
class PendingFile:
    """A file to embed: its cache key, content hash, and the items embedded so far."""

    key: str
    file_hash: str
    items: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    views: list[dict[str, np.ndarray]] = field(default_factory=list)
    signatures: list[signatures.Signature] = field(default_factory=list)
    expected: int | None = None
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.expected is not None and len(self.vectors) == self.expected


def embed_files(
    files: Sequence[Path],
    encoder: Encoder,
    cache: EmbeddingCache,
    options: ReadOptions | None = None,
    batch_size: int = 32,
    n_readers: int = 2,
    progress: bool = True,
    views: bool = True,
    thumbnails: ThumbnailWriter | None = None,
) -> Embedded:
    """Embed every readable file; unreadable ones are returned in ``skipped`` with a reason.

    Parameters
    ----------
    files : sequence of Path
        Files to embed, in the order the output rows should follow.
    encoder : Encoder
        The model; its ``name`` and ``config`` are part of the cache key.
    cache : EmbeddingCache
        Where finished files are looked up and stored.
    options : ReadOptions, optional
        Reader choices (windowing, frames, slices, tiling).
    batch_size : int
        Images per model call.
    n_readers : int
        Background decoding threads.
    progress : bool
        Show progress bars.
    views : bool
        Also compute the hand-crafted views of :mod:`medsort.embed.views` (``Embedded.views``).
    thumbnails : ThumbnailWriter, optional
        Also write the report's thumbnails of the files embedded now.
    """
    options = decode_options(options, encoder)
    token = cache_token(options, views)
    done: dict[int, CachedFile] = {}
    hashes: dict[int, str] = {}
    skipped: dict[int, str] = {}
    pending: dict[int, PendingFile] = {}
    for index, path in enumerate(
        tqdm(files, desc="checking cache", unit="file", disable=not progress, leave=False)
    ):
        try:
            file_hash = content_hash(path)
        except OSError as error:
            skipped[index] = f"cannot open file: {error.strerror or error}"
            continue
        hashes[index] = file_hash
        key = EmbeddingCache.key(file_hash, encoder.name, token)
        hit = cache.get(key)
        if hit is None:
            pending[index] = PendingFile(key=key, file_hash=file_hash)
        else:
            done[index] = hit
    if pending:
        tune_cpu_runtime()
        embed_pending(
            files, pending, encoder, cache, options, batch_size, n_readers, progress, views,
            thumbnails,
        )  # fmt: skip
    for index, entry in pending.items():
        if entry.error is not None:
            skipped[index] = entry.error
        else:
            done[index] = finished_entry(entry, encoder.dim)
    cache.commit()
    return assemble_embedded(
        files,
        done,
        hashes,
        skipped,
        n_embedded=len(pending) - sum(entry.error is not None for entry in pending.values()),
    )


def decode_options(options: ReadOptions | None, encoder: Encoder) -> ReadOptions:
    """``options`` with ``draft_size`` set to twice the encoder's input size, unless already
    chosen (``0`` keeps full-size decoding).

    Twice, not once: the final resize then still averages at least 2x2 decoded pixels per
    input pixel, as it does from the full image. Decoding right down to the input size
    touched 46 of brain-MRI's 253 images and moved its ACC from 0.601 to 0.581; at twice,
    10 images and 0.585 (a set grouped near chance, see docs/benchmarks.md). A 4000x3000
    photo still decodes at 1/4 scale.
    """
    return (options or ReadOptions()).for_input(encoder.config.size)


def cache_token(options: ReadOptions, views: bool = True) -> str:
    """Reader options plus the versions of what is stored with each item: the appearance
    attributes, the pixel signatures and (``views``) the hand-crafted views."""
    token = (
        f"{options.cache_token()};appearance={appearance.VERSION};signatures={signatures.VERSION}"
    )
    return f"{token};{views_token()}" if views else token


def embed_pending(
    files: Sequence[Path],
    pending: dict[int, PendingFile],
    encoder: Encoder,
    cache: EmbeddingCache,
    options: ReadOptions,
    batch_size: int,
    n_readers: int,
    progress: bool,
    views: bool = True,
    thumbnails: ThumbnailWriter | None = None,
) -> None:
    """Embed the ``pending`` files (index into ``files`` -> entry) and store each in ``cache``.

    Used by the local backend and by each Ray encoder actor: ``n_readers`` threads decode
    ahead of the model, which runs in batches of ``batch_size``; with ``thumbnails`` they
    also write the report's thumbnails.
    """
    outbox: queue.Queue[tuple[str, int, Any]] = queue.Queue(maxsize=4 * batch_size)
    todo: queue.Queue[int] = queue.Queue()
    for index in pending:
        todo.put(index)
    if thumbnails is not None and not thumbnails.prepare():
        thumbnails = None
    in_workers = worker_batch(encoder)
    if in_workers:
        n_readers = max(n_readers, inference_threads())
        prepare = getattr(encoder, "prepare_one_core", None)
        # Loading the graph overlaps the first decodes, where there will be any: a re-run
        # whose only pending files are ones no reader takes (a labels.csv) loads nothing.
        if callable(prepare) and any(find_reader(files[index]) for index in pending):
            threading.Thread(target=_quietly, args=(prepare,), daemon=True).start()
    workers = [
        threading.Thread(
            target=_read_worker,
            args=(files, todo, outbox, encoder, options, views, in_workers, thumbnails),
            daemon=True,
        )
        for _ in range(max(1, n_readers))
    ]
    for worker in workers:
        worker.start()
    bar = tqdm(total=len(pending), desc="embedding", unit="file", disable=not progress)
    batch: list[tuple[int, np.ndarray]] = []
    finished_workers = 0
    while finished_workers < len(workers):
        kind, index, payload = outbox.get()
        if kind == "worker-done":
            finished_workers += 1
            continue
        if kind == "model-error":  # the model itself failed: no file is to blame
            raise payload
        if kind == "vectors":
            _add_vectors(payload, pending, cache, bar)
            continue
        entry = pending[index]
        if kind == "item":
            meta, model_input, views, measured = payload
            entry.items.append(meta)
            entry.views.append(views)
            entry.signatures.append(measured)
            if model_input is not None:
                batch.append((index, model_input))
            if len(batch) >= batch_size:
                _run_batch(batch, pending, encoder, cache, bar)
                batch = []
        elif kind == "file-done":
            entry.expected = payload
            _store_if_complete(index, entry, cache, bar)
        else:  # "error"
            entry.error = payload
            bar.update(1)
    if batch:
        _run_batch(batch, pending, encoder, cache, bar)
    bar.close()


def worker_batch(encoder: Encoder) -> int:
    """Images per model call when each decoding thread runs ``encoder`` itself, on one core
    (``encoder.worker_batch``, :class:`~medsort.embed.onnx_encoder.OnnxEncoder` on a CPU);
    0 when the main thread runs it on whole batches (torch, a GPU).

    On a CPU that is faster than one multi-threaded model fed by the decoders: each
    thread's work is independent (no intra-op barrier waiting on a thread the decoders
    took the core from) and a few images' activations stay in the CPU caches.
    """
    size = getattr(encoder, "worker_batch", None)
    return int(size) if size and callable(getattr(encoder, "embed_one_core", None)) else 0


MEASURING = threading.Lock()
"""Held by the decoding thread that measures an image (and writes its thumbnail).
Measuring is many small NumPy calls, each releasing and retaking the GIL: two threads
measuring at once trade the GIL on every call, which cost them 1.2-1.9x the CPU of
measuring alone (docs/benchmarks.md). One at a time, the other thread runs the model
(which holds no GIL) or decodes."""


def _measure(
    image: MedImage, encoder: Encoder, views: bool
) -> tuple[dict[str, Any], np.ndarray, dict[str, np.ndarray], signatures.Signature]:
    """An item's cache record, model input, hand-crafted views and pixel signature."""
    rgb = image.rgb()
    model_input = to_model_input(rgb, encoder.config)
    record = {"item": image.item, "meta": {**image.meta, **appearance.appearance(image)}}
    extra = compute_views(rgb) if views else {}
    return record, model_input, extra, signatures.signature(image.pixels)


def _read_worker(
    files: Sequence[Path],
    todo: queue.Queue[int],
    outbox: queue.Queue[tuple[str, int, Any]],
    encoder: Encoder,
    options: ReadOptions,
    views: bool,
    in_workers: int = 0,
    thumbnails: ThumbnailWriter | None = None,
) -> None:
    """Decode and measure the files taken from ``todo``; with ``in_workers``, also embed
    them, that many images per model call; with ``thumbnails``, write their thumbnails."""
    inputs: list[tuple[int, np.ndarray]] = []
    while True:
        try:
            index = todo.get_nowait()
        except queue.Empty:
            try:
                _flush(inputs, encoder, outbox)
            except _ModelFailedError:
                return
            outbox.put(("worker-done", -1, None))
            return
        count = 0
        stamp = "" if thumbnails is None else thumbnails.stamp(files[index])
        try:
            for image in iter_images(files[index], options):
                with MEASURING:
                    if thumbnails is not None and stamp and count < thumbnails.max_items:
                        thumbnails.write(files[index], stamp, image, options)
                    record, model_input, extra, measured = _measure(image, encoder, views)
                if in_workers:
                    outbox.put(("item", index, (record, None, extra, measured)))
                    inputs.append((index, model_input))
                    if len(inputs) >= in_workers:
                        _flush(inputs, encoder, outbox)
                else:
                    outbox.put(("item", index, (record, model_input, extra, measured)))
                count += 1
            if count == 0:
                raise ReadError("no image found in the file")
            outbox.put(("file-done", index, count))
        except _ModelFailedError:  # the main thread raises the model's error
            return
        except ReadError as error:
            outbox.put(
                ("error", index, str(error) if count == 0 else f"{error} (after {count} items)")
            )
        except Exception as error:  # a decoder crash names the file, the run goes on
            outbox.put(("error", index, f"{type(error).__name__}: {error}"))


def _quietly(function: Any) -> None:
    """Call ``function``; an error is left to the workers, whose next call raises it."""
    with contextlib.suppress(Exception):
        function()


class _ModelFailedError(Exception):
    """The model failed in a decoding thread (sent to the main thread, which raises it)."""


def _flush(
    inputs: list[tuple[int, np.ndarray]],
    encoder: Encoder,
    outbox: queue.Queue[tuple[str, int, Any]],
) -> None:
    """Embed a worker's gathered ``inputs`` on its core and send the vectors (emptied)."""
    if not inputs:
        return
    batch = to_tensor_batch([image for _, image in inputs], encoder.config)
    try:
        vectors = encoder.embed_one_core(batch)  # type: ignore[attr-defined]
    except Exception as error:
        outbox.put(("model-error", -1, error))
        raise _ModelFailedError from error
    rows = [(index, vector) for (index, _), vector in zip(inputs, vectors, strict=True)]
    outbox.put(("vectors", -1, rows))
    inputs.clear()


def _add_vectors(
    rows: list[tuple[int, np.ndarray]],
    pending: dict[int, PendingFile],
    cache: EmbeddingCache,
    bar: tqdm,
) -> None:
    for index, vector in rows:
        pending[index].vectors.append(vector)
    for index in {index for index, _ in rows}:
        _store_if_complete(index, pending[index], cache, bar)


def _run_batch(
    batch: list[tuple[int, np.ndarray]],
    pending: dict[int, PendingFile],
    encoder: Encoder,
    cache: EmbeddingCache,
    bar: tqdm,
) -> None:
    vectors = encoder.embed(to_tensor_batch([image for _, image in batch], encoder.config))
    _add_vectors(
        [(index, v) for (index, _), v in zip(batch, vectors, strict=True)], pending, cache, bar
    )


def _store_if_complete(index: int, entry: PendingFile, cache: EmbeddingCache, bar: tqdm) -> None:
    if entry.complete and entry.error is None:
        cache.put(entry.key, finished_entry(entry, 0))
        bar.update(1)


def finished_entry(entry: PendingFile, dim: int) -> CachedFile:
    """The cache entry of a completely embedded file: items, vectors, stacked views and
    pixel signatures."""
    views = {
        name: np.stack([row[name] for row in entry.views]).astype(np.float32, copy=False)
        for name in (entry.views[0] if entry.views else {})
    }
    packed = signatures.pack(entry.signatures) if entry.signatures else {}
    return CachedFile(entry.items, _stack(entry.vectors, dim), views, packed)


def _stack(vectors: list[np.ndarray], dim: int) -> np.ndarray:
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack(vectors).astype(np.float32, copy=False)


def assemble_embedded(
    files: Sequence[Path],
    done: dict[int, CachedFile],
    hashes: dict[int, str],
    skipped: dict[int, str],
    n_embedded: int,
) -> Embedded:
    """The :class:`Embedded` result in file order from the files' cached entries."""
    rows: list[Path] = []
    row_hashes: list[str] = []
    items: list[EmbeddedItem] = []
    blocks: list[np.ndarray] = []
    view_blocks: dict[str, list[np.ndarray]] | None = None
    signature_blocks: dict[str, list[np.ndarray]] | None = None
    for index in sorted(done):
        entry = done[index]
        rows.extend([files[index]] * len(entry.items))
        row_hashes.extend([hashes[index]] * len(entry.items))
        items.extend(EmbeddedItem.from_record(record) for record in entry.items)
        blocks.append(entry.vectors)
        view_blocks = _add_views(view_blocks, entry.views)
        signature_blocks = _add_views(signature_blocks, entry.signatures)
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    return Embedded(
        files=rows,
        items=items,
        hashes=row_hashes,
        vectors=vectors,
        skipped=[(files[index], reason) for index, reason in sorted(skipped.items())],
        n_embedded_files=n_embedded,
        views={name: np.concatenate(parts) for name, parts in (view_blocks or {}).items()},
        signatures={
            name: np.concatenate(parts) for name, parts in (signature_blocks or {}).items()
        },
    )


def _add_views(
    blocks: dict[str, list[np.ndarray]] | None, arrays: dict[str, np.ndarray]
) -> dict[str, list[np.ndarray]]:
    """Append one entry's arrays (views or signatures) to ``blocks``; names missing from
    any entry are dropped."""
    if blocks is None:
        return {name: [array] for name, array in arrays.items()}
    return {name: [*parts, arrays[name]] for name, parts in blocks.items() if name in arrays}
