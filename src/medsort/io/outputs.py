"""Writing output files safely: atomically, as valid UTF-8, and harmless in a spreadsheet.

- Every file is written to a temporary name in the same folder, flushed to disk and
  renamed over the target, so a reader (or a crash) sees the old file or the new one,
  never half of one.
- File names that are not valid UTF-8 (bytes Python keeps as surrogates) are written
  as ``\\xNN`` escapes: ``bad_\\xff.png``. :func:`unescape_text` turns them back.
- Text cells that a spreadsheet would run as a formula (starting with ``= + - @``,
  tab or carriage return) get a leading ``'``; so do cells that start with ``'``
  themselves, so :func:`read_csv` can take exactly one ``'`` off again.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
_ESCAPE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def escape_text(text: str) -> str:
    """``text`` with undecodable bytes (surrogate escapes) as ``\\xNN``; valid text as is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text`: ``\\xNN`` (NN >= 80) back to the original byte."""
    return _ESCAPE.sub(lambda match: chr(0xDC00 + int(match.group(1), 16)), text)


def neutralise(value: Any) -> Any:
    """A text cell made safe to open in a spreadsheet; other values unchanged."""
    if not isinstance(value, str):
        return value
    value = escape_text(value)
    if value.startswith((*FORMULA_STARTS, QUOTE)):
        return QUOTE + value
    return value


def restore(value: Any) -> Any:
    """A cell as it was before :func:`neutralise` (escapes are kept: see ``source_path``)."""
    if isinstance(value, str) and value.startswith(QUOTE):
        return value[1:]
    return value


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temporary file beside ``path`` that replaces it when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(handle, mode, **kwargs) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """``table`` as a neutralised UTF-8 CSV (no index), written atomically."""
    safe = table.rename(columns=lambda name: neutralise(str(name)))
    for column in _text_columns(safe):
        safe[column] = safe[column].map(neutralise)
    with atomic_open(path) as out:
        safe.to_csv(out, index=False, lineterminator="\n")


def read_csv(path: Path, dtype: Any = str) -> pd.DataFrame:
    """A CSV written by :func:`write_csv`, its cells as they were before neutralising."""
    table = pd.read_csv(path, dtype=dtype, keep_default_na=False)
    table.columns = [restore(name) for name in table.columns]
    for column in _text_columns(table):
        table[column] = table[column].map(restore)
    return table


def _text_columns(table: pd.DataFrame) -> list[Any]:
    """Columns that may hold text (object or string dtype); numbers stay numbers."""
    return [
        name
        for name, dtype in table.dtypes.items()
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
    ]


def write_text(path: Path, text: str) -> None:
    """``text`` (UTF-8, undecodable bytes escaped) written atomically."""
    with atomic_open(path) as out:
        out.write(escape_text(text))


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as out:
        np.save(out, array)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Several named arrays in one uncompressed ``.npz``, written atomically."""
    with atomic_open(path, "wb") as out:
        np.savez(out, **arrays)


def write_with(path: Path, writer: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Any ``writer(handle)`` output, written atomically."""
    with atomic_open(path, "wb" if binary else "w") as out:
        writer(out)
