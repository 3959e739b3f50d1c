"""Embedding cache keyed by file content, reader options and encoder.

Re-running on the same folder embeds nothing again; adding images embeds only those.
Keys are content hashes, so moving or renaming files keeps their embeddings, and no
path or patient information is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HASH_CHUNK = 1 << 20
CACHE_VERSION = "2"
"""Part of every key: entries written before views existed (version 1) are recomputed."""


def default_cache_dir() -> Path:
    """``$MEDSORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/medsort``, else ``~/.cache/medsort``."""
    if "MEDSORT_CACHE_DIR" in os.environ:
        return Path(os.environ["MEDSORT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medsort"


def content_hash(path: Path) -> str:
    """BLAKE2b digest of the file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
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


def pack_views(views: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """``(JSON {name: dim}, float32 bytes of the arrays side by side)`` for storage."""
    if not views:
        return "{}", b""
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in views.values()]
    dims = {name: int(a.shape[1]) for name, a in zip(views, arrays, strict=True)}
    return json.dumps(dims), np.hstack(arrays).tobytes()


def unpack_views(dims_json: str | None, blob: bytes | None) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_views`."""
    dims = json.loads(dims_json or "{}")
    if not dims:
        return {}
    matrix = np.frombuffer(blob, dtype=np.float32).reshape(-1, sum(dims.values()))
    out, start = {}, 0
    for name, dim in dims.items():
        out[name] = matrix[:, start : start + dim]
        start += dim
    return out


class EmbeddingCache:
    """A small SQLite store of per-file embeddings.

    Parameters
    ----------
    folder : Path or None
        Where ``embeddings.sqlite`` lives; ``None`` keeps nothing between runs.
    """

    def __init__(self, folder: Path | None) -> None:
        if folder is None:
            self._db = sqlite3.connect(":memory:")
        else:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(Path(folder) / "embeddings.sqlite")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files "
            "(key TEXT PRIMARY KEY, dim INTEGER, items TEXT, vectors BLOB, "
            "view_dims TEXT, views BLOB)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if "views" not in columns:  # a version-1 cache file: its old keys never match again
            self._db.execute("ALTER TABLE files ADD COLUMN view_dims TEXT")
            self._db.execute("ALTER TABLE files ADD COLUMN views BLOB")

    @staticmethod
    def key(file_hash: str, encoder_name: str, options_token: str) -> str:
        return f"{file_hash}|{encoder_name}|{options_token}|v{CACHE_VERSION}"

    def get(self, key: str) -> CachedFile | None:
        row = self._db.execute(
            "SELECT dim, items, vectors, view_dims, views FROM files WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        dim, items, blob, view_dims, view_blob = row
        vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
        views = unpack_views(view_dims, view_blob)
        return CachedFile(items=json.loads(items), vectors=vectors, views=views)

    def put(self, key: str, entry: CachedFile) -> None:
        vectors = np.ascontiguousarray(entry.vectors, dtype=np.float32)
        view_dims, view_blob = pack_views(entry.views)
        self._db.execute(
            "INSERT OR REPLACE INTO files (key, dim, items, vectors, view_dims, views) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                key,
                vectors.shape[1],
                json.dumps(entry.items, default=str),
                vectors.tobytes(),
                view_dims,
                view_blob,
            ),
        )

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
