"""The report's JPEG thumbnails: their names, their bytes, and writing them from the
read pass.

A thumbnail is named by a hash of the source file's path, size and modification time,
the item, the read options and its size (:func:`thumbnail_name`), so a changed file or
option gets a new one. :mod:`medsort.report.thumbnails` makes the ones it is missing by
reading the images again; a cold ``medsort sort`` need not: its decoding threads hand
each image's pixels to a :class:`ThumbnailWriter`, which writes the same JPEG (same
name, same bytes) into the ``thumbs/`` folder beside the embedding cache, where the
report finds it. Making one from decoded pixels costs about 0.3 ms instead of the 1.6 ms
of reading the file again (lung-histology, 224-px JPEGs).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from PIL import Image

from medsort.io.image import MedImage
from medsort.io.readers import ReadOptions

THUMB_SIZE = 112
PREVIEW_SIZE = 256
"""Side of the cached thumbnails: sharp in the grid, and the large view's image."""
THUMB_DIR = "thumbs"
JPEG_QUALITY = 85
THUMBNAIL_DRAFT = 448
"""Thumbnails are made from images read at this draft size (``ReadOptions.draft_size``):
still more pixels than the 256-px preview needs, and the size the default encoder's
read pass decodes at (twice its 224-px input), so that pass can write every thumbnail,
large images included, and the report decodes none of them again."""


def thumbnail_options(options: ReadOptions) -> ReadOptions:
    """How an image is read for its thumbnail: ``options`` at :data:`THUMBNAIL_DRAFT`."""
    return replace(options, draft_size=THUMBNAIL_DRAFT)


def file_stamp(source: Path) -> str:
    """The size and modification time that go into a thumbnail's name (``""`` when the
    file is not there)."""
    try:
        stat = source.stat()
    except OSError:
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def thumbnail_name(source: Path, item: str, stamp: str, options_token: str, size: int) -> str:
    """The file name of the thumbnail of ``item`` of ``source`` (``""`` without a
    :func:`file_stamp`): the same in every output folder and in the shared folder."""
    if not stamp:
        return ""
    token = f"{source}\0{item}\0{stamp}\0{options_token}\0{size}"
    return hashlib.sha1(token.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ".jpg"


def jpeg_bytes(image: Image.Image, size: int) -> bytes:
    """``image`` reduced to at most ``size`` pixels a side (never enlarged), as a JPEG."""
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    (image if image.mode in ("L", "RGB") else image.convert("RGB")).save(
        buffer, format="JPEG", quality=JPEG_QUALITY
    )
    return buffer.getvalue()


def write_jpeg(image: Image.Image, size: int, target: Path) -> None:
    """Write :func:`jpeg_bytes` to ``target`` atomically (a partial name of this process
    and thread, so two runs or threads writing the same thumbnail never mix)."""
    partial = _partial(target)
    try:
        partial.write_bytes(jpeg_bytes(image, size))
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def place(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content: a hard link where possible, else a copy,
    replacing atomically (thumbnails are never modified in place, so a link is safe).

    A new name is linked directly (a link appears whole, one system call); an existing
    one is replaced through a partial file."""
    try:
        os.link(source, target)
        return
    except OSError:
        pass
    partial = _partial(target)
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def _partial(target: Path) -> Path:
    """A partial file's name of this process and thread: two runs or threads writing the
    same thumbnail never share one."""
    return target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")


@dataclass(frozen=True)
class ThumbnailWriter:
    """Writes the report's thumbnails from pixels the read pass decoded anyway.

    Parameters
    ----------
    folder : Path
        Where the thumbnails go: the ``thumbs/`` folder shared by every output folder.
    options : ReadOptions
        The options the report reads with (``run.json``'s): part of every name.
    source_of : callable
        A scanned path to the path the report will read it by (the resolved input folder
        joined with the path relative to it): the name is made of that.
    size : int
        Longest side of a thumbnail.
    max_items : int
        Thumbnails made per file at most: a slide's thousands of tiles are left to the
        report, which shows a few of them.
    """

    folder: Path
    options: ReadOptions
    source_of: Callable[[Path], Path]
    size: int = PREVIEW_SIZE
    max_items: int = 16

    def prepare(self) -> bool:
        """Create :attr:`folder`; whether thumbnails can be written there."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return True

    def stamp(self, path: Path) -> str:
        """:func:`file_stamp` of ``path``, taken before it is decoded (a file changed in
        between then gets a thumbnail under its old stamp, which no report asks for)."""
        return file_stamp(path)

    def write(self, path: Path, stamp: str, image: MedImage, decoded: ReadOptions) -> None:
        """The thumbnail of ``image`` (item of ``path`` read with ``decoded``), unless it
        is there already or the pixels are not the report's (a reduced JPEG decode)."""
        if not self._same_pixels(decoded, image):
            return
        name = thumbnail_name(self.source_of(path), image.item, stamp, self._token, self.size)
        if not name:
            return
        target = self.folder / name
        try:
            if not target.is_file():
                write_jpeg(Image.fromarray(image.pixels), self.size, target)
        except OSError:  # a read-only or full cache costs only the report's time
            pass

    @cached_property
    def _token(self) -> str:
        return thumbnail_options(self.options).cache_token()

    def _same_pixels(self, decoded: ReadOptions, image: MedImage) -> bool:
        """Whether the report, reading with :func:`thumbnail_options`, gets ``image``'s
        pixels: the same options, or (another encoder's draft size) options that differ
        by the draft size alone on an image that neither draft reduces."""
        if decoded.cache_token() == self._token:
            return True
        same_otherwise = replace(decoded, draft_size=THUMBNAIL_DRAFT)
        # Unreduced at THUMBNAIL_DRAFT too: a JPEG draft rounds its halved sides up, so
        # stay a pixel clear of twice the draft size.
        unreduced = min(image.pixels.shape[:2]) < 2 * (THUMBNAIL_DRAFT - 1)
        return not image.drafted and unreduced and same_otherwise.cache_token() == self._token
