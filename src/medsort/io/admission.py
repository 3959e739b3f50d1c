"""Which files a reader may open, and how much any reader may allocate for one.

One policy for every reader, applied before a byte of pixel data is decoded:

- only regular files are opened: named pipes, devices, sockets and folders are skipped
  with a reason (a FIFO would block forever, ``/dev/zero`` never ends);
- symbolic links are resolved and the target checked the same way (broken links and
  loops are reasons too);
- each reader compares the sizes a file *declares* (width x height, voxels, tile
  sizes, Rows x Columns) with a :class:`Budget` before allocating anything, so a 452-byte
  header claiming 2048^3 voxels is refused in microseconds instead of allocating 17 GB.

The defaults admit real 100k x 100k slides (they are read through their pyramid, tile
by tile) and CT/MR volumes of a few hundred million voxels.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from medsort.io.errors import ReadError

GIB = 1 << 30


@dataclass(frozen=True)
class Budget:
    """Limits on what one file may make a reader allocate. Not part of cache keys."""

    max_file_bytes: int = 256 * GIB
    """Largest file opened at all."""
    max_pixels: int = 20_000 * 20_000
    """Largest plain raster decoded at once (larger ones belong to the slide reader)."""
    max_array_bytes: int = 2 * GIB
    """Largest single array a reader decodes at once: an image, a DICOM frame, the
    first volume of a NIfTI file (as float32)."""
    max_tile_bytes: int = 256 << 20
    """Largest TIFF tile or strip a slide reader decodes at once."""
    max_slide_pixels: int = 400_000 * 400_000
    """Largest slide (level 0) tiled at all."""
    max_thumbnail_source_pixels: int = 25_000 * 25_000
    """Largest pyramid level a slide thumbnail may be built from: a 100k x 100k slide
    without smaller levels would be read whole (minutes of CPU) just to find tissue."""


DEFAULT_BUDGET = Budget()
DISPLAY_MAX_SIDE = 4096
"""Plain rasters larger than this are reduced (box filter, whole factor) right after
decoding: models see 224-448 px and thumbnails less, while display conversion of a
16-bit 20000^2 image would need ~10 GB of float64 temporaries."""


def display_factor(width: int, height: int) -> int:
    """The whole reduction factor that brings the longer side to at most
    :data:`DISPLAY_MAX_SIDE` (1: no reduction)."""
    return max(1, -(-max(width, height) // DISPLAY_MAX_SIDE))


def draft_factor(width: int, height: int, draft_size: int | None) -> int:
    """The largest whole factor that keeps both sides at least ``draft_size`` pixels, as
    a JPEG draft decode does in the DCT (1: none, or no ``draft_size``).

    The embed stage sets ``draft_size`` (twice the encoder's input), so every format, not
    only JPEG, hands the measuring steps no more pixels than the encoder needs: a
    2000 x 2400 PNG X-ray read whole cost about 145 ms of CPU per image in the read pass,
    against 20 ms for a 224-px one (docs/benchmarks.md)."""
    return max(1, min(width, height) // draft_size) if draft_size else 1


_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` that is not a regular file is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: Path) -> os.stat_result:
    """The ``stat`` of ``path`` (of its target for a link); :class:`ReadError` unless it
    is a regular file."""
    path = Path(path)
    try:
        info = path.lstat()
    except OSError as error:
        raise ReadError(f"cannot open file: {error.strerror or error}") from None
    link = stat.S_ISLNK(info.st_mode)
    if link:
        info = _link_target(path)
    if not stat.S_ISREG(info.st_mode):
        target = "symbolic link to " if link else ""
        raise ReadError(f"not a regular file ({target}{file_kind(info.st_mode)})")
    return info


def admit(path: Path, budget: Budget = DEFAULT_BUDGET) -> os.stat_result:
    """:func:`check_regular`, then refuse an empty file or one over ``budget``."""
    info = check_regular(path)
    if info.st_size == 0:
        raise ReadError("empty file (0 bytes)")
    if info.st_size > budget.max_file_bytes:
        raise ReadError(
            f"file too large ({_size(info.st_size)}; the budget is {_size(budget.max_file_bytes)})"
        )
    return info


def _link_target(path: Path) -> os.stat_result:
    try:
        return Path(os.path.realpath(path, strict=True)).stat()
    except OSError as error:
        if error.errno == 40:  # ELOOP
            raise ReadError("symbolic link loop") from None
        raise ReadError(f"broken symbolic link ({error.strerror or error})") from None
    except RuntimeError:  # some Pythons report loops this way
        raise ReadError("symbolic link loop") from None


def check_array(shape: tuple[int, ...], itemsize: int, budget: Budget, what: str) -> None:
    """Refuse to allocate an array of ``shape`` x ``itemsize`` bytes over the budget.

    ``shape`` comes from the file's header, so it is checked for sense first.
    """
    dims = [int(n) for n in shape]
    if any(n <= 0 for n in dims):
        raise ReadError(f"{what} declares an empty or negative size ({_shape(dims)})")
    n_bytes = itemsize
    for n in dims:
        n_bytes *= n
    if n_bytes > budget.max_array_bytes:
        raise ReadError(
            f"{what} too large: {_shape(dims)} needs {_size(n_bytes)} "
            f"(the budget is {_size(budget.max_array_bytes)})"
        )


def check_pixels(width: int, height: int, budget: Budget, what: str = "image") -> None:
    """Refuse a plain raster of more than ``budget.max_pixels``."""
    if width <= 0 or height <= 0:
        raise ReadError(f"{what} declares an empty size ({width}x{height})")
    if width * height > budget.max_pixels:
        raise ReadError(
            f"{what} too large ({width}x{height}, budget {budget.max_pixels:,} pixels); "
            "open it as a whole-slide image"
        )


def _shape(dims: list[int]) -> str:
    return "x".join(str(n) for n in dims)


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"
