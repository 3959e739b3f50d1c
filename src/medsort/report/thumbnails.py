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
    try:
        for image in iter_images(path, options):
            if image.item == item:
                return _encode(Image.fromarray(image.pixels), size)
    except (ReadError, OSError):
        pass
    return ""


def _encode(image: Image.Image, size: int) -> str:
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
        buffer, format="JPEG", quality=85
    )
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
