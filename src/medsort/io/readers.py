"""Readers chosen by file type, all returning :class:`~medsort.io.image.MedImage` items.

A reader is registered with :func:`register_reader`; :func:`find_reader` picks the first
whose ``can_read`` accepts a file, looking at its extension and its first bytes (so
DICOM files without an extension are found too).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from medsort.io.admission import (
    DEFAULT_BUDGET,
    Budget,
    admit,
    check_array,
    check_pixels,
    display_factor,
    draft_factor,
)
from medsort.io.errors import ReadError, error_text
from medsort.io.image import MedImage
from medsort.io.intensity import scale_to_uint8
from medsort.plugins import import_plugins

HEAD_BYTES = 512
MAX_PIXELS = DEFAULT_BUDGET.max_pixels
"""Larger plain rasters are refused: they belong to the slide reader, tile by tile."""
_PILLOW_LOCK = threading.Lock()


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
    stay at least this many pixels, and every other image is box-reduced after decoding
    by the largest whole factor that keeps them so; ``None`` or ``0`` reads full size.
    The embed stage sets it to twice the encoder's input size (the encoder sees no more)."""
    budget: Budget = DEFAULT_BUDGET
    """What a file may make a reader allocate (:mod:`medsort.io.admission`); it decides
    which files are read, not their pixels, so it is not part of the cache key."""

    def __post_init__(self) -> None:
        # Options rebuilt from run.json carry the budget as a plain dict.
        if isinstance(self.budget, dict):
            object.__setattr__(self, "budget", Budget(**self.budget))

    def for_input(self, size: int) -> ReadOptions:
        """These options with :attr:`draft_size` twice a model's input ``size``, unless
        already chosen (``0`` keeps full-size reading)."""
        return self if self.draft_size is not None else replace(self, draft_size=2 * size)

    def cache_token(self) -> str:
        values = asdict(self)
        values.pop("budget")
        return ";".join(f"{key}={value}" for key, value in sorted(values.items()))


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
    """Yield a file's items lazily (slides can hold thousands of tiles); with
    ``options.draft_size``, each reduced by :func:`~medsort.io.admission.draft_factor`.

    Any failure, whatever the decoder raised, comes out as :class:`ReadError` with a
    reason fit for skipped.csv.
    """
    size = admit(path, options.budget).st_size
    reader = find_reader(path)
    if reader is None:
        raise ReadError(
            f"not a supported image format ({path.suffix or 'no extension'})" + _unavailable_note()
        )
    try:
        for image in reader.read(path, options):
            image.meta.setdefault("file_size", size)
            height, width = image.pixels.shape[:2]
            yield image.reduced(draft_factor(width, height, options.draft_size))
    except ReadError:
        raise
    except Exception as error:  # any decoder failure is a skip reason, not a crash
        raise ReadError(f"{reader.name} reader failed: {error_text(error, path)}") from error


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
        try:
            image = open_within_budget(path, options.budget)
            size = image.size
            if options.draft_size and image.format == "JPEG":
                image.draft(image.mode, (options.draft_size, options.draft_size))
            image.load()
        except UnidentifiedImageError as error:
            raise ReadError(f"not a readable image: {error_text(error, path)}") from error
        except OSError as error:
            raise ReadError(f"corrupt or truncated image: {error_text(error, path)}") from error
        meta = {
            "format": (image.format or path.suffix.lstrip(".")).upper(),
            "width": size[0],
            "height": size[1],
            "mode": image.mode,
            "bit_depth": _bit_depth(image),
            "compression": str(image.info.get("compression", "")),
        }
        display = display_factor(image.width, image.height)
        factor = max(display, draft_factor(image.width, image.height, options.draft_size))
        # Drafted: not the pixels a read without the draft option gives.
        drafted = image.size != size or factor != display
        pixels = _display_pixels(_reduced(image, factor))
        yield MedImage(pixels=pixels, path=path, meta=meta, drafted=drafted)


def open_within_budget(path: Path, budget: Budget) -> Image.Image:
    """``Image.open`` (header only) checked against the project's budget, not Pillow's.

    Pillow's decompression-bomb limit (89 Mpx) would refuse a valid 12000 x 12000 PNG the
    budget admits, so it is lifted while the header is read; the declared size is then
    checked against ``budget`` before any pixel is decoded.
    """
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    try:
        check_pixels(image.width, image.height, budget)
        shape = (image.height, image.width, len(image.getbands()))
        check_array(shape, _bytes_per_band(image.mode), budget, "image")
    except ReadError:
        image.close()
        raise
    return image


def _reduced(image: Image.Image, factor: int) -> Image.Image:
    """A large raster reduced by a whole ``factor`` (for display, or to the draft size)
    before its display conversion, so 16-bit scaling runs on fewer pixels; meta keeps
    the original size."""
    if factor == 1:
        return image
    if image.mode in ("P", "1"):
        image = image.convert("RGBA" if image.mode == "P" else "L")
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor)


def _bytes_per_band(mode: str) -> int:
    if mode.startswith("I;16"):
        return 2
    return 4 if mode in ("I", "F") else 1


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
        grey = image.mode == "LA"
        background = Image.new(image.mode, image.size)
        image = Image.alpha_composite(background.convert("RGBA"), image.convert("RGBA"))
        image = image.convert("L" if grey else "RGB")
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] > 3:
        pixels = pixels[:, :, :3]
    return scale_to_uint8(pixels)


register_reader(RasterReader())

OPTIONAL_READERS: list[str] = []
"""Modules of readers whose libraries may be missing, imported on first use (each
registers itself then); their packages list them with :func:`register_optional_readers`."""
UNAVAILABLE_READERS: dict[str, str] = {}
"""Optional reader module -> why it could not be imported (reported, never hidden)."""

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
        then = "files only it can read will be skipped"
        UNAVAILABLE_READERS.update(import_plugins(OPTIONAL_READERS, "reader", then))
        _builtin_loaded = True


def register_optional_readers(*modules: str) -> None:
    """List reader modules to import on first use (a reader whose library may be
    missing registers itself with :func:`register_reader` when imported)."""
    global _builtin_loaded
    for module in modules:
        if module not in OPTIONAL_READERS:
            OPTIONAL_READERS.append(module)
            _builtin_loaded = False


def _unavailable_note() -> str:
    if not UNAVAILABLE_READERS:
        return ""
    named = ", ".join(
        f"{module.rsplit('.', 1)[-1]} ({why})" for module, why in UNAVAILABLE_READERS.items()
    )
    return f"; readers that failed to load: {named}"
