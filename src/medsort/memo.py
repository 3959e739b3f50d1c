"""Remembered results: the deterministic, costly steps of a run, kept beside the cache.

Re-sorting the same folder with the same settings fits the same grouping and runs the
same audit tests again: the same inputs give the same numbers, bit for bit. A
:class:`Memo` keeps such a result under a digest of exactly its inputs (arrays by dtype,
shape and bytes; parameters as canonical JSON; and :func:`code_version`: medsort's
version and source files, the numeric libraries' versions), so any change of input (one
image more, another ``k``, seed, encoder or setting) looks for another entry and misses.

An entry is one ``.npz`` file of plain arrays plus one JSON text (read with
``allow_pickle=False``: nothing in a shared folder can run code), written atomically
(temporary file, then ``os.replace``), so two runs at once or a killed run leave either
a whole entry or none. An entry that cannot be read (truncated, corrupt, another key) is
ignored and the step is computed again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from medsort import __version__
from medsort.io.outputs import write_npz

MEMO_FORMAT = 1
"""Raised whenever what an entry holds changes (a change of the code that computes it
changes :func:`code_version` by itself)."""
MEMO_DIR = "memo"
MAX_ENTRIES = 200
"""Entries kept per folder; the least recently used go first."""
_FIELDS = "__fields__"
_KEY = "__key__"


def digest(kind: str, *parts: Any) -> str:
    """A hex digest of ``kind`` and ``parts`` (arrays, mappings of arrays, JSON values),
    and of the code that computes with them (:func:`code_version`)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{kind}|{code_version()}".encode())
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


@functools.cache
def code_version() -> str:
    """medsort's version, :data:`MEMO_FORMAT`, a digest of medsort's own source files (an
    edited checkout computes anew) and the versions of the numeric libraries."""
    h = hashlib.blake2b(digest_size=16)
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    libraries = [f"{name}={_library_version(name)}" for name in LIBRARIES]
    return "|".join([__version__, str(MEMO_FORMAT), h.hexdigest(), *libraries])


LIBRARIES = ("numpy", "scipy", "scikit-learn", "pandas", "threadpoolctl")


def _library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _feed(h: Any, part: Any) -> None:
    if isinstance(part, np.ndarray):
        array = np.ascontiguousarray(part)
        h.update(f"|array:{array.dtype.str}:{array.shape}|".encode())
        h.update(array.data if array.dtype != object else repr(array.tolist()).encode())
    elif isinstance(part, Mapping) and any(isinstance(v, np.ndarray) for v in part.values()):
        h.update(f"|map:{len(part)}|".encode())
        for name in sorted(part):
            h.update(f"|{name}|".encode())
            _feed(h, part[name])
    elif isinstance(part, list | tuple) and any(isinstance(v, np.ndarray) for v in part):
        h.update(f"|list:{len(part)}|".encode())
        for value in part:
            _feed(h, value)
    else:
        h.update(b"|json:" + json.dumps(part, sort_keys=True, default=_json_value).encode())


def _json_value(value: Any) -> Any:
    """Numpy scalars by value; an array deeper inside is a mistake (its ``repr`` is cut
    short, so two arrays could give one digest); anything else by ``repr``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        raise TypeError("digest: pass arrays as parts, in a mapping or a list, not deeper")
    return repr(value)


class Memo:
    """Results kept in ``folder/memo`` under the digest of their inputs.

    Parameters
    ----------
    folder : Path or None
        The cache folder (``memo/`` is made inside it); ``None`` remembers nothing.
    """

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = None if folder is None else Path(folder) / MEMO_DIR

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def _path(self, kind: str, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{kind}-{key}.npz"

    def load(self, kind: str, key: str) -> tuple[dict[str, np.ndarray], Any] | None:
        """The arrays and JSON fields kept under ``key``; ``None`` if absent or unreadable."""
        if self.folder is None:
            return None
        path = self._path(kind, key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            if bytes(arrays.pop(_KEY)).decode() != key:
                return None
            fields = json.loads(bytes(arrays.pop(_FIELDS)).decode())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeError):
            return None
        _touch(path)
        return arrays, fields

    def save(
        self,
        kind: str,
        key: str,
        arrays: Mapping[str, np.ndarray],
        fields: Any,
        default: Callable[[Any], Any] = str,
    ) -> None:
        """Keep ``arrays`` (plain, non-object dtypes) and ``fields`` under ``key``.

        ``fields`` is kept as the JSON that ``json.dumps(fields, default=default)`` gives,
        the way the run's own output files write it; fields that would read back as other
        JSON are not kept. A folder that cannot be written only costs the next run the
        step again.
        """
        if self.folder is None:
            return
        text = json.dumps(fields, default=default)
        if json.dumps(json.loads(text), default=default) != text:
            return
        packed = {
            **{name: np.asarray(array) for name, array in arrays.items()},
            _FIELDS: np.frombuffer(text.encode(), dtype=np.uint8),
            _KEY: np.frombuffer(key.encode(), dtype=np.uint8),
        }
        try:
            write_npz(self._path(kind, key), packed)
            self._prune()
        except OSError:
            pass

    def arrays(
        self, kind: str, compute: Callable[[], tuple[np.ndarray, ...]], *parts: Any
    ) -> tuple[np.ndarray, ...]:
        """``compute()``, a tuple of arrays, or what it gave before for the same ``parts``."""
        if self.folder is None:
            return compute()
        key = digest(kind, *parts)
        found = self.load(kind, key)
        if found is not None and isinstance(found[1], int):
            names = [f"a{i}" for i in range(found[1])]
            if set(found[0]) == set(names):
                return tuple(found[0][name] for name in names)
        computed = tuple(compute())
        self.save(kind, key, {f"a{i}": array for i, array in enumerate(computed)}, len(computed))
        return computed

    def _prune(self) -> None:
        assert self.folder is not None
        entries = sorted(self.folder.glob("*.npz"), key=_mtime)
        for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
            old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


NO_MEMO = Memo(None)
