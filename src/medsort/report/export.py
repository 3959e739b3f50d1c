"""``--export copy|link``: the images sorted into ``OUT_DIR/groups/<group>/`` folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from medsort.results import SortResult

EXPORT_DIR = "groups"


def export_groups(result: SortResult, out_dir: Path, mode: str = "copy") -> int:
    """Copy or link every used file into its group's folder; returns the number placed.

    The folder structure under the input folder is kept inside each group folder, so
    files with the same name never overwrite each other. A file whose items fall in
    several groups (frames, slices, tiles) is placed in each of them. The user's files
    are only read, never moved.
    """
    if mode not in ("copy", "link"):
        raise ValueError(f"export mode must be 'copy' or 'link', not {mode!r}")
    placed = 0
    pairs = result.assignments[["path", "group"]].drop_duplicates()
    for relative, group in pairs.itertuples(index=False):
        source = result.source_path(relative)
        target = Path(out_dir) / EXPORT_DIR / str(group) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        if mode == "link":
            _link(source, target)
        else:
            shutil.copy2(source, target)
        placed += 1
    return placed


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # no symlinks allowed (e.g. Windows without developer mode)
        shutil.copy2(source, target)
