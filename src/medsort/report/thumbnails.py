"""Small embedded thumbnails of the user's images, re-read from the source files."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from medsort.io.readers import ReadError, ReadOptions, iter_images

THUMB_SIZE = 112


def thumbnail_uri(path: Path, item: str, options: ReadOptions, size: int = THUMB_SIZE) -> str:
    """A ``data:`` URI holding a JPEG thumbnail of one item, or ``""`` if it cannot be read."""
    return thumbnail_uris(path, {item}, options, size).get(item, "")


def thumbnail_uris(
    path: Path, items: set[str], options: ReadOptions, size: int = THUMB_SIZE
) -> dict[str, str]:
    """Thumbnails of several items of one file, read in a single pass.

    Reading stops once every wanted item is found, so a slide's or multi-frame file's
    representatives cost one partial read, not one read each. Items that cannot be read
    are missing from the result.
    """
    found: dict[str, str] = {}
    try:
        for image in iter_images(path, options):
            if image.item in items:
                found[image.item] = _encode(Image.fromarray(image.pixels), size)
                if len(found) == len(items):
                    break
    except (ReadError, OSError):
        pass
    return found


def thumbnails_of(
    rows: pd.DataFrame,
    source_path: Callable[[str], Path],
    options: ReadOptions,
    size: int = THUMB_SIZE,
) -> dict[tuple[str, str], str]:
    """``(path, item) -> data URI`` for every row (columns ``path``, ``item``), each file
    read once.

    ``source_path`` maps a path as stored in the output folder to the file to read
    (:meth:`medsort.results.SortResult.source_path`). Unreadable items are missing.
    """
    items_by_path: dict[str, set[str]] = {}
    for path, item in rows[["path", "item"]].itertuples(index=False):
        items_by_path.setdefault(path, set()).add(item)
    return {
        (path, item): uri
        for path, items in items_by_path.items()
        for item, uri in thumbnail_uris(source_path(path), items, options, size).items()
    }


def figure(uri: str, path: str, item: str, caption: str = "") -> str:
    """A report ``<figure>``: the thumbnail (or "n/a"), the file and item, a caption."""
    label = html.escape(path + (f" [{item}]" if item else ""))
    image = f'<img src="{uri}" alt="{label}">' if uri else '<div class="muted">n/a</div>'
    extra = f"<br>{html.escape(caption)}" if caption else ""
    return f'<figure title="{label}">{image}<figcaption>{label}{extra}</figcaption></figure>'


def _encode(image: Image.Image, size: int) -> str:
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
        buffer, format="JPEG", quality=85
    )
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
