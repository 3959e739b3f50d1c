"""Small embedded thumbnails of the user's images, re-read from the source files."""

from __future__ import annotations

import base64
import io
from pathlib import Path

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


def _encode(image: Image.Image, size: int) -> str:
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
        buffer, format="JPEG", quality=85
    )
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
