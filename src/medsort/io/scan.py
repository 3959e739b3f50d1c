"""Walk an input folder and list the files to read."""

from __future__ import annotations

import os
from pathlib import Path

from medsort.io.outputs import escape_text

IGNORED_NAMES = {"Thumbs.db", "desktop.ini", ".DS_Store"}


def scan_folder(root: Path, exclude: Path | None = None) -> list[Path]:
    """All regular files under ``root`` in a stable order, hidden ones left out.

    ``exclude`` (typically the output folder, when it lies inside ``root``) is skipped,
    so a second run never reads its own outputs.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"Input folder not found: {root}")
    excluded = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root, followlinks=False):
        here = Path(folder)
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and not _is_excluded(here / name, excluded)
        )
        found.extend(
            here / name
            for name in sorted(files)
            if not name.startswith(".") and name not in IGNORED_NAMES
        )
    return found


def _is_excluded(folder: Path, excluded: Path | None) -> bool:
    return excluded is not None and folder.resolve() == excluded


def relative_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes, as written in every output.

    Bytes of a name that are not valid UTF-8 become ``\\xNN`` escapes
    (:func:`~medsort.io.outputs.escape_text`); ``SortResult.source_path`` finds the file.
    """
    return escape_text(Path(path).relative_to(root).as_posix())
