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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HASH_CHUNK = 1 << 20


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
            "(key TEXT PRIMARY KEY, dim INTEGER, items TEXT, vectors BLOB)"
        )

    @staticmethod
    def key(file_hash: str, encoder_name: str, options_token: str) -> str:
        return f"{file_hash}|{encoder_name}|{options_token}"

    def get(self, key: str) -> CachedFile | None:
        row = self._db.execute(
            "SELECT dim, items, vectors FROM files WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        dim, items, blob = row
        vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
        return CachedFile(items=json.loads(items), vectors=vectors)

    def put(self, key: str, entry: CachedFile) -> None:
        vectors = np.ascontiguousarray(entry.vectors, dtype=np.float32)
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
            (key, vectors.shape[1], json.dumps(entry.items, default=str), vectors.tobytes()),
        )

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
