"""The output folder: what each stage writes and the next one reads.

``assignments.csv``  one row per image item: the contract other tools rely on
``items.csv``        non-identifying metadata per item (format, size, DICOM attributes)
``embeddings.npy``   the item vectors, rows in the same order
``skipped.csv``      every file that could not be used, and why
``run.json``         input folder, encoder, options and counts
``signatures.npz``   ``file_hash``, the content hash of each item's file as it was read,
                     and the audit's pixel signatures per item
                     (:mod:`medsort.io.signatures`), measured in the read pass; those
                     arrays are left out when any item lacks them

Every file is replaced atomically (:mod:`medsort.io.outputs`). While a sort writes a
folder, :data:`INCOMPLETE` marks it: the marker is created before the first output and
removed after the last (``run.json`` is written after the data files), so a run killed
at any point leaves a folder that :meth:`SortResult.load` refuses with a clear message,
never a mix of two runs that looks complete.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsort.io.admission import Budget
from medsort.io.outputs import (
    escape_text,
    read_csv,
    unescape_text,
    write_csv,
    write_npy,
    write_npz,
    write_text,
)
from medsort.io.readers import ReadOptions

ASSIGNMENTS = "assignments.csv"
ITEMS = "items.csv"
EMBEDDINGS = "embeddings.npy"
SKIPPED = "skipped.csv"
SIGNATURES = "signatures.npz"
FILE_HASH = "file_hash"
"""Array of ``signatures.npz`` with each row's file content hash (hex, as the cache keys)."""
RUN = "run.json"
REPORT = "report.html"
INCOMPLETE = ".medsort-incomplete"
"""Present while a sort writes the folder (or after one was interrupted)."""
_WRITING: set[Path] = set()
"""Folders this process is writing: its own later stages may read them."""


class IncompleteOutputError(ValueError):
    """An output folder whose sort was interrupted, failed, or is still running."""


ASSIGNMENT_COLUMNS = [
    "path",
    "item",
    "modality_group",
    "group",
    "distance",
    "representative",
    "map_x",
    "map_y",
]


@dataclass
class RunInfo:
    """``run.json``: what a sort was run on and with, and its counts.

    Stages read it as attributes; :meth:`read_options` rebuilds the readers' options the
    sort used (the one place that turns the saved lists and dicts back into them). Keys
    other stages add (``naming``, ...) are kept in ``extra`` and written back after the
    sort's own, so ``run.json`` keeps its format. ``run["key"]`` and ``run.get("key")``
    still read any key, for code written against the plain dict.
    """

    medsort_version: str | None = None
    input_dir: str | None = None
    encoder: str | None = None
    encoder_spec: str | None = None
    """The registry spec the encoder was built from (``None`` for an encoder object)."""
    encoder_licence: dict[str, Any] | None = None
    """The encoder's licence and source (:func:`~medsort.embed.registry.describe_encoder`)."""
    n_clusters: int | None = None
    reading: dict[str, Any] = field(default_factory=dict)
    """The :class:`~medsort.io.readers.ReadOptions` as saved (``read_options`` in the file)."""
    n_items: int | None = None
    n_skipped: int | None = None
    n_embedded_files: int | None = None
    n_modality_groups: int | None = None
    n_groups: int | None = None
    views_per_modality_group: list[dict[str, Any]] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys added by later stages (``naming``) or unknown to this version."""

    _KEYS = {"reading": "read_options"}
    """Attribute -> key in ``run.json`` where they differ."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | RunInfo) -> RunInfo:
        if isinstance(data, RunInfo):
            return data
        names = [f.name for f in fields(cls) if f.name != "extra"]
        key_of = {name: cls._KEYS.get(name, name) for name in names}
        known = {name: data[key] for name, key in key_of.items() if key in data}
        extra = {key: value for key, value in data.items() if key not in key_of.values()}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The ``run.json`` mapping: the sort's keys in their order, then ``extra``."""
        out = {
            self._KEYS.get(f.name, f.name): getattr(self, f.name)
            for f in fields(self)
            if f.name != "extra"
        }
        return {**out, **self.extra}

    def read_options(self) -> ReadOptions:
        """The readers' options of the sort (defaults for a run.json without them)."""
        saved = dict(self.reading)
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        if isinstance(saved.get("budget"), dict):
            saved["budget"] = Budget(**saved["budget"])
        known = {f.name for f in fields(ReadOptions)}
        return ReadOptions(**{k: v for k, v in saved.items() if k in known})

    def with_extra(self, **values: Any) -> RunInfo:
        """A copy with ``values`` added to (or replaced in) ``extra``."""
        return replace(self, extra={**self.extra, **values})

    def __getitem__(self, key: str) -> Any:
        mapping = self.to_dict()
        if key not in mapping:
            raise KeyError(key)
        return mapping[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


@dataclass
class SortResult:
    """Everything a sort produced, as saved in and loaded from an output folder.

    ``assignments`` and ``items`` share row order with ``embeddings`` (and with each
    array of ``signatures``: the pixel measures the audit's hygiene checks use, packed by
    :func:`medsort.io.signatures.pack`, absent when not measured; and :data:`FILE_HASH`,
    each row's file content hash).
    """

    assignments: pd.DataFrame
    items: pd.DataFrame
    embeddings: np.ndarray
    skipped: pd.DataFrame
    run: RunInfo = field(default_factory=RunInfo)
    """A plain ``run.json`` mapping given here becomes a :class:`RunInfo`."""
    signatures: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run = RunInfo.from_dict(self.run)

    def file_hashes(self) -> list[str] | None:
        """Content hash of each row's file when it was read (``None`` for folders written
        before they were recorded)."""
        hashes = self.signatures.get(FILE_HASH)
        if hashes is None or len(hashes) != len(self.assignments):
            return None
        return [value.decode("ascii") for value in hashes.tolist()]

    @property
    def input_dir(self) -> Path:
        return Path(self.run.input_dir)

    def source_path(self, relative: str) -> Path:
        """The user's file behind a ``path`` value of ``assignments.csv``.

        Names that were not valid UTF-8 are written as ``\\xNN`` escapes; they are
        turned back into the original bytes when no file carries the escaped name.
        """
        path = self.input_dir / relative
        if "\\x" in relative and not os.path.lexists(path):
            return self.input_dir / unescape_text(relative)
        return path

    def save(self, out_dir: Path) -> None:
        """Write the tables, each atomically, and ``run.json`` after the data;
        :func:`medsort.report.save_folder` adds the audit and ``report.html``, as
        ``medsort sort`` does."""
        out_dir = Path(out_dir)
        with writing(out_dir):
            write_csv(self.assignments, out_dir / ASSIGNMENTS)
            write_csv(self.items, out_dir / ITEMS)
            write_npy(out_dir / EMBEDDINGS, self.embeddings.astype(np.float32, copy=False))
            write_csv(self.skipped, out_dir / SKIPPED)
            if self.signatures:
                write_npz(out_dir / SIGNATURES, self.signatures)
            else:
                (out_dir / SIGNATURES).unlink(missing_ok=True)
            write_text(out_dir / RUN, json.dumps(self.run.to_dict(), indent=2, default=str))

    @classmethod
    def load(cls, out_dir: Path) -> SortResult:
        """Read a complete output folder; :class:`IncompleteOutputError` for one that is not."""
        out_dir = Path(out_dir)
        check_complete(out_dir)
        keep_text = {"path": str, "item": str}
        try:
            return cls(
                assignments=read_csv(out_dir / ASSIGNMENTS, dtype=keep_text),
                items=read_csv(out_dir / ITEMS, dtype=keep_text),
                embeddings=np.load(out_dir / EMBEDDINGS),
                skipped=read_csv(out_dir / SKIPPED),
                run=json.loads((out_dir / RUN).read_text(encoding="utf-8")),
                signatures=_load_signatures(out_dir / SIGNATURES),
            )
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise IncompleteOutputError(
                f"{out_dir} holds a damaged sort ({type(error).__name__}: {error}); "
                f"run `medsort sort INPUT --out {out_dir}` again."
            ) from None


def _load_signatures(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def check_complete(out_dir: Path) -> None:
    """Raise unless ``out_dir`` holds a finished sort (or one this process is writing)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(
            f"Output folder not found: {out_dir}: run `medsort sort INPUT --out {out_dir}` first."
        )
    marker = out_dir / INCOMPLETE
    writing_here = out_dir.resolve() in _WRITING
    if not (out_dir / ASSIGNMENTS).is_file() and (writing_here or not marker.is_file()):
        raise FileNotFoundError(
            f"{out_dir} holds no {ASSIGNMENTS}: run `medsort sort INPUT --out {out_dir}` first."
        )
    if writing_here:
        return
    if marker.is_file() or not (out_dir / RUN).is_file():
        state = _marker_text(marker)
        raise IncompleteOutputError(
            f"{out_dir} holds an incomplete sort ({state}); "
            f"run `medsort sort INPUT --out {out_dir}` again."
        )


def _marker_text(marker: Path) -> str:
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "interrupted before run.json was written"
    return (
        f"{info.get('state', 'started')} at {info.get('started', '?')} by process "
        f"{info.get('pid', '?')}: interrupted, failed or still running"
    )


@contextmanager
def writing(out_dir: Path) -> Iterator[Path]:
    """Mark ``out_dir`` incomplete while the block writes it; unmark when it succeeds.

    Nested blocks (a sort's save, audit and report) share the outermost mark.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = out_dir.resolve()
    if key in _WRITING:
        yield out_dir
        return
    info = {"state": "started", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid()}
    write_text(out_dir / INCOMPLETE, json.dumps(info))
    _WRITING.add(key)
    try:
        yield out_dir
    finally:
        _WRITING.discard(key)
    (out_dir / INCOMPLETE).unlink(missing_ok=True)


def mark_failed(out_dir: Path, reason: str) -> None:
    """Record in the marker why the sort writing ``out_dir`` stopped."""
    marker = Path(out_dir) / INCOMPLETE
    info = {"state": f"failed ({reason})", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    info["pid"] = os.getpid()
    write_text(marker, json.dumps(info))


def skipped_table(skipped: list[tuple[str, str]]) -> pd.DataFrame:
    """The rows of ``skipped.csv``; a decoder's reason may quote an undecodable name."""
    rows = [(escape_text(path), escape_text(reason)) for path, reason in skipped]
    return pd.DataFrame(rows, columns=["path", "reason"])
