"""Embedding cache keyed by file content, reader options and encoder.

Re-running on the same folder embeds nothing again; adding images embeds only those.
Keys are content hashes, so moving or renaming files keeps their embeddings, and no
path or patient information is stored.

The store is one SQLite file in WAL mode shared by every process (two ``medsort``
runs at once, Ray actors' drivers): readers never wait, writers take short
``BEGIN IMMEDIATE`` transactions and wait up to :data:`BUSY_TIMEOUT_S` for each other.
New entries are committed every :data:`COMMIT_SECONDS` or :data:`COMMIT_FILES` files,
so a killed run loses at most one interval. A file that is not a readable cache is
moved aside (named in a warning) and a fresh one is started. ``docs/reliability.md``
explains the choice over a file-per-entry store, with ``benchmarks/bench_cache.py``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsort.io.admission import check_regular, file_kind
from medsort.io.errors import ReadError

HASH_CHUNK = 1 << 20
CACHE_NAME = "embeddings.sqlite"
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another process's transaction before giving up."""
COMMIT_SECONDS = 2.0
COMMIT_FILES = 64
"""Pending entries are committed when either this much time or this many files passed."""
SCHEMA = "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, fields TEXT, arrays BLOB)"
SCHEMA_VERSION = 2
"""Version 1 kept one ``files`` table of ``(key, dim, items, vectors)``; it is still read."""


def default_cache_dir() -> Path:
    """``$MEDSORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/medsort``, else ``~/.cache/medsort``."""
    if "MEDSORT_CACHE_DIR" in os.environ:
        return Path(os.environ["MEDSORT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medsort"


def content_hash(path: Path) -> str:
    """BLAKE2b digest of the file's bytes; ``OSError`` for anything but a regular file.

    The reason follows :mod:`medsort.io.admission` (FIFOs, devices, sockets, broken
    links). The file is also opened without blocking and checked after opening, so
    one swapped for a FIFO in between cannot hang the run either.
    """
    try:
        check_regular(path)
    except ReadError as error:
        raise OSError(errno.EINVAL, str(error)) from None
    digest = hashlib.blake2b(digest_size=16)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file ({file_kind(mode)})")
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CachedFile:
    """Everything a file produced: one vector and one item record per 2D item."""

    items: list[dict[str, Any]]
    vectors: np.ndarray
    views: dict[str, np.ndarray] = field(default_factory=dict)
    """Hand-crafted views (:mod:`medsort.embed.views`): name -> ``(n_items, d)`` float32."""
    signatures: dict[str, np.ndarray] = field(default_factory=dict)
    """The audit's pixel signatures (:func:`medsort.io.signatures.pack`): name ->
    ``(n_items, d)`` float32; empty for entries written without them."""


def pack(entry: CachedFile) -> tuple[str, bytes]:
    """``(JSON of the plain fields and array layout, raw float32 bytes)`` of any
    :class:`CachedFile`: array fields and dict-of-array fields are stored as arrays,
    every other field as JSON."""
    plain: dict[str, Any] = {}
    layout: list[list[Any]] = []
    blobs: list[bytes] = []
    for spec in dataclasses.fields(entry):
        value = getattr(entry, spec.name)
        for name, array in _arrays_of(spec.name, value):
            array = np.ascontiguousarray(array, dtype=np.float32)
            layout.append([name, list(array.shape)])
            blobs.append(array.tobytes())
        if not _is_arrays(value):
            plain[spec.name] = value
    header = json.dumps({"plain": plain, "arrays": layout}, default=str)
    return header, b"".join(blobs)


def unpack(header: str, blob: bytes, cls: type[CachedFile] = CachedFile) -> CachedFile:
    """The :class:`CachedFile` (or ``cls``) of :func:`pack`; fields the stored entry
    lacks take their defaults, stored fields ``cls`` lacks are dropped."""
    spec = json.loads(header)
    values: dict[str, Any] = dict(spec["plain"])
    offset = 0
    for name, shape in spec["arrays"]:
        count = int(np.prod(shape)) if shape else 1
        array = np.frombuffer(blob, np.float32, count, offset).reshape(shape)
        offset += count * 4
        field, _, part = name.partition("/")
        if part:
            values.setdefault(field, {})[part] = array
        else:
            values[field] = array
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def _is_arrays(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, np.ndarray) for v in value.values())
    )


def _arrays_of(name: str, value: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(value, np.ndarray):
        return [(name, value)]
    if _is_arrays(value):
        return [(f"{name}/{key}", array) for key, array in value.items()]
    return []


class EmbeddingCache:
    """A SQLite store of per-file embeddings that several processes can share.

    Parameters
    ----------
    folder : Path or None
        Where ``embeddings.sqlite`` lives; ``None`` keeps nothing between runs.
    commit_seconds, commit_files : float, int
        Pending entries are committed once either is reached (and by :meth:`commit`).
    """

    def __init__(
        self,
        folder: Path | None,
        commit_seconds: float = COMMIT_SECONDS,
        commit_files: int = COMMIT_FILES,
    ) -> None:
        self.commit_seconds = commit_seconds
        self.commit_files = commit_files
        self.path = None if folder is None else Path(folder) / CACHE_NAME
        self._pending: dict[str, tuple[str, bytes]] = {}
        self._last_commit = time.monotonic()
        self._db = self._open()
        self._legacy = _has_table(self._db, "files")

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return _connect(":memory:")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _connect(str(self.path))
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise
            _warn(f"cannot use the embedding cache {self.path} ({error}); nothing is kept")
            self.path = None
            return _connect(":memory:")
        except sqlite3.DatabaseError as error:
            return self._start_over(error)

    def _start_over(self, error: Exception) -> sqlite3.Connection:
        """Move a damaged cache aside, say so, and open a new one."""
        assert self.path is not None
        aside = set_aside(self.path)
        _warn(
            f"the embedding cache {self.path} is damaged ({error}); "
            f"moved it to {aside.name} and started a new one"
        )
        return _connect(str(self.path))

    @staticmethod
    def key(file_hash: str, encoder_name: str, options_token: str) -> str:
        return f"{file_hash}|{encoder_name}|{options_token}"

    def get(self, key: str) -> CachedFile | None:
        if key in self._pending:
            return unpack(*self._pending[key])
        try:
            row = self._db.execute(
                "SELECT fields, arrays FROM entries WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return unpack(*row)
            return self._get_legacy(key) if self._legacy else None
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError):
            return None  # a damaged row is embedded again

    def _get_legacy(self, key: str) -> CachedFile | None:
        row = self._db.execute(
            "SELECT dim, items, vectors FROM files WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        dim, items, blob = row
        vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
        return CachedFile(items=json.loads(items), vectors=vectors)

    def put(self, key: str, entry: CachedFile) -> None:
        """Store ``entry``; it is committed within the commit interval."""
        self._pending[key] = pack(entry)
        elapsed = time.monotonic() - self._last_commit
        if len(self._pending) >= self.commit_files or elapsed >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Write the pending entries in one short transaction."""
        if self._pending:
            rows = [(key, *packed) for key, packed in self._pending.items()]
            try:
                _write(self._db, rows)
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as error:
                if self.path is None:
                    raise
                self._db.close()
                self._db = self._start_over(error)
                _write(self._db, rows)
            self._pending.clear()
        self._last_commit = time.monotonic()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (name,)).fetchone() is not None


def _warn(message: str) -> None:
    print(f"medsort: warning: {message}", file=sys.stderr, flush=True)


def _write(db: sqlite3.Connection, rows: list[tuple[str, str, bytes]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _connect(target: str) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with a busy timeout, schema in place.

    Also reads the schema and a first row, so that a file that is not a database
    fails here, not halfway through a run (a full integrity check would read it all).
    """
    db = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if target != ":memory:":
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        db.execute(SCHEMA)
        db.execute("SELECT key FROM entries LIMIT 1").fetchall()
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def set_aside(path: Path) -> Path:
    """Rename a damaged cache (and its WAL files) to ``<name>.corrupt-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.replace(aside.with_name(aside.name + suffix))
    if path.exists():
        path.replace(aside)
    return aside


def keep_mask(hashes: Sequence[str], paths: Sequence[str] | None = None) -> np.ndarray:
    """Rows to keep so that each file content is used once (the first file of each copy set).

    Parameters
    ----------
    hashes : sequence of str
        Content hash of each row's source file (rows of one multi-item file share it).
    paths : sequence of str, optional
        Source file of each row; rows of the first file with a given hash are all kept.
        Without it each row is taken as its own file.

    Returns
    -------
    ndarray of bool, shape (n_rows,)
        ``True`` for rows to keep. Rows with an empty hash (unreadable) are kept.
    """
    paths = list(paths) if paths is not None else [str(i) for i in range(len(hashes))]
    first: dict[str, str] = {}
    mask = np.ones(len(hashes), dtype=bool)
    for row, (digest, path) in enumerate(zip(hashes, paths, strict=True)):
        if not digest:
            continue
        owner = first.setdefault(digest, path)
        mask[row] = owner == path
    return mask


CacheSpec = EmbeddingCache | Path | str | bool | None
"""What a ``cache=`` parameter takes: ``None`` the default folder (:func:`default_cache_dir`),
``False`` no cache (nothing kept between runs), a folder, or an open :class:`EmbeddingCache`."""


def open_cache(cache: CacheSpec) -> tuple[EmbeddingCache, bool]:
    """The :class:`EmbeddingCache` a :data:`CacheSpec` names, and whether it was opened here
    (then the caller closes it; an open cache passed in stays open)."""
    if isinstance(cache, EmbeddingCache):
        return cache, False
    if cache is True:
        raise ValueError(
            "cache=True names no place: use None (the default folder), False or a folder."
        )
    if cache is None:
        return EmbeddingCache(default_cache_dir()), True
    return EmbeddingCache(None if cache is False else Path(cache)), True
