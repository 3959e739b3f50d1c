"""Readers chosen by file type, all returning :class:`~medsort.io.image.MedImage` items.

A reader is registered with :func:`register_reader`; :func:`find_reader` picks the first
whose ``can_read`` accepts a file, looking at its extension and its first bytes (so
DICOM files without an extension are found too).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from medsort.io.image import MedImage
from medsort.io.intensity import scale_to_uint8

HEAD_BYTES = 512
MAX_PIXELS = 20_000 * 20_000
"""Larger plain rasters are refused: they belong to the slide reader, tile by tile."""


class ReadError(Exception):
    """A file could not be turned into images; the message says why, for skipped.csv."""


@dataclass(frozen=True)
class ReadOptions:
    """User choices that change which pixels the readers produce.

    They are part of every cache key, so changing one re-embeds what it affects.
    """

    window: str | None = None
    """``None`` uses the file's own window; otherwise a preset name or ``"C,W"``."""
    frames: str = "middle"
    """Multi-frame files: ``"middle"`` frame only, or ``"all"`` frames as separate items."""
    volume: str = "middle"
    """Volumes: ``"middle"`` slice per axis, ``"axial:N"`` every N-th axial slice, ``"mip"``."""
    slide_mpp: float = 1.0
    """Whole-slide tiling resolution in microns per pixel."""
    tile_size: int = 224
    """Side of a slide tile in pixels, at ``slide_mpp``."""
    keep_tags: tuple[str, ...] = ()
    """Extra DICOM keywords to copy into item metadata. Empty by default: only the
    non-identifying allow-list of :mod:`medsort.io.phi` is ever copied otherwise."""
    draft_size: int | None = None
    """JPEGs are decoded at a reduced scale (1/2, 1/4, 1/8, in the DCT) while both sides
    stay at least this many pixels; ``None`` or ``0`` decodes full size. The embed stage
    sets it to twice the encoder's input size (the encoder sees no more)."""

    def cache_token(self) -> str:
        return ";".join(f"{key}={value}" for key, value in sorted(asdict(self).items()))


class Reader(Protocol):
    name: str

    def can_read(self, path: Path, head: bytes) -> bool:
        """Whether this reader handles ``path``, given its first bytes."""
        ...

    def read(self, path: Path, options: ReadOptions) -> Iterator[MedImage]:
        """Yield the file's 2D items; raise :class:`ReadError` with a reason on failure."""
        ...


_READERS: list[Reader] = []


def register_reader(reader: Reader, first: bool = False) -> Reader:
    """Add a reader; ``first=True`` lets it claim files before the ones already known."""
    if first:
        _READERS.insert(0, reader)
    else:
        _READERS.append(reader)
    return reader


def find_reader(path: Path) -> Reader | None:
    """The reader for ``path``, or ``None`` when no reader understands it."""
    _load_builtin_readers()
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return None
    for reader in _READERS:
        if reader.can_read(path, head):
            return reader
    return None


def read_file(path: Path, options: ReadOptions | None = None) -> list[MedImage]:
    """Read every item of one file, or raise :class:`ReadError` saying why not."""
    items = list(iter_images(Path(path), options or ReadOptions()))
    if not items:
        raise ReadError("no image found in the file")
    return items


def iter_images(path: Path, options: ReadOptions) -> Iterator[MedImage]:
    """Yield a file's items lazily (slides can hold thousands of tiles).

    Any failure, whatever the decoder raised, comes out as :class:`ReadError` with a
    reason fit for skipped.csv.
    """
    if not path.is_file():
        raise ReadError("not a file")
    size = path.stat().st_size
    if size == 0:
        raise ReadError("empty file (0 bytes)")
    reader = find_reader(path)
    if reader is None:
        raise ReadError(f"not a supported image format ({path.suffix or 'no extension'})")
    try:
        for image in reader.read(path, options):
            image.meta.setdefault("file_size", size)
            yield image
    except ReadError:
        raise
    except Exception as error:  # any decoder failure is a skip reason, not a crash
        raise ReadError(f"{reader.name} reader failed: {_describe(error)}") from error


def _describe(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


class RasterReader:
    """PNG, JPEG, TIFF, BMP, GIF and WebP through Pillow, any bit depth.

    16-bit and float images are scaled by robust percentiles (not truncated); palette
    and RGBA images become RGB (alpha composited on black); 2-channel gray+alpha becomes gray.
    """

    name = "raster"

    def can_read(self, path: Path, head: bytes) -> bool:
        return path.suffix.lower() in RASTER_SUFFIXES

    def read(self, path: Path, options: ReadOptions) -> Iterator[MedImage]:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(path)
                if image.width * image.height > MAX_PIXELS:
                    raise ReadError(
                        f"image too large ({image.width}x{image.height}); "
                        "open it as a whole-slide image"
                    )
                size = image.size
                if options.draft_size and image.format == "JPEG":
                    image.draft(image.mode, (options.draft_size, options.draft_size))
                image.load()
            except (UnidentifiedImageError, Image.DecompressionBombError) as error:
                raise ReadError(f"not a readable image: {_describe(error)}") from error
            except Image.DecompressionBombWarning as error:
                raise ReadError(f"image too large: {_describe(error)}") from error
            except OSError as error:
                raise ReadError(f"corrupt or truncated image: {_describe(error)}") from error
        meta = {
            "format": (image.format or path.suffix.lstrip(".")).upper(),
            "width": size[0],
            "height": size[1],
            "mode": image.mode,
            "bit_depth": _bit_depth(image),
            "compression": str(image.info.get("compression", "")),
        }
        yield MedImage(pixels=_display_pixels(image), path=path, meta=meta)


def _bit_depth(image: Image.Image) -> int:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return 16
    if image.mode in ("I", "F"):
        return 32
    if image.mode == "1":
        return 1
    return 8


def _display_pixels(image: Image.Image) -> np.ndarray:
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new(image.mode, image.size)
        image = Image.alpha_composite(background.convert("RGBA"), image.convert("RGBA"))
        image = image.convert("RGB") if image.mode != "LA" else image.convert("L")
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] > 3:
        pixels = pixels[:, :, :3]
    return scale_to_uint8(pixels)


register_reader(RasterReader())

_builtin_loaded = False
_builtin_lock = threading.Lock()


def _load_builtin_readers() -> None:
    """Import optional readers (DICOM, NIfTI, slides) that register themselves.

    Reader threads call this concurrently; the lock makes every thread wait until all
    readers are registered, so none sees only the raster reader.
    """
    global _builtin_loaded
    if _builtin_loaded:
        return
    with _builtin_lock:
        if _builtin_loaded:
            return
        for module in ("medsort.io.dicom", "medsort.io.nifti", "medsort.io.slide"):
            try:
                importlib.import_module(module)
            except ImportError:
                continue
        _builtin_loaded = True
