"""Whole-slide images as tissue tiles, read lazily at a chosen microns per pixel.

A slide is never loaded whole: a thumbnail is built from the smallest pyramid level
region by region, tissue is found on it (Otsu on saturation), and each tissue tile is
then read on its own from the pyramid level nearest below the wanted resolution and
resized. Vendor formats (``.svs``, ``.ndpi``, ``.mrxs``, ``.scn``, ...) go through
OpenSlide; pyramidal TIFFs also go through :mod:`tifffile` (which understands SubIFD
pyramids OpenSlide does not). Plain single-resolution TIFFs stay with the raster
reader, except 16-bit/float multi-sample ones Pillow cannot open, which
:class:`TiffArrayReader` reads with tifffile.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from medsort.io.admission import Budget, check_array, display_factor
from medsort.io.errors import error_text
from medsort.io.image import MedImage
from medsort.io.intensity import scale_to_uint8
from medsort.io.readers import MAX_PIXELS, ReadError, ReadOptions, register_reader
from medsort.lazy import lazy_module

tifffile = lazy_module("tifffile")  # imported with the first TIFF file

try:  # OpenSlide is optional: tifffile covers pyramidal TIFFs without it.
    import openslide
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    openslide = None

VENDOR_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
TIFF_SUFFIXES = {".tif", ".tiff", ".qptiff", ".btf", ".tf8"}
THUMB_MAX_SIDE = 2048
THUMB_MIN_SIDE = 512
THUMB_PIXELS_PER_TILE = 8
"""The thumbnail has at least this many pixels along each tile side (within limits)."""
READ_CHUNK = 2048
"""Largest region read at once while building the thumbnail."""
MIN_TISSUE_FRACTION = 0.25
"""A tile is kept when at least this share of it is tissue on the thumbnail."""
MIN_SATURATION = 20
"""Saturation (0-255) below which nothing counts as stained tissue."""
BACKGROUND = 255


class SlideBackend(Protocol):
    """What tiling needs from a slide library (OpenSlide conventions)."""

    vendor: str
    level_dimensions: list[tuple[int, int]]
    """``(width, height)`` of each level, level 0 first."""
    level_downsamples: list[float]
    mpp: float | None
    """Microns per pixel at level 0, ``None`` when the file does not say."""

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB ``uint8`` ``(h, w, 3)`` at ``level``; ``location`` in level-0 pixels."""
        ...

    def close(self) -> None: ...


class OpenSlideBackend:
    """Any format OpenSlide knows; transparent (unscanned) areas become white."""

    def __init__(self, path: Path) -> None:
        self._slide = openslide.OpenSlide(str(path))
        self.vendor = str(self._slide.properties.get("openslide.vendor", "openslide"))
        self.level_dimensions = [tuple(d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        mpp = self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        self.mpp = float(mpp) if mpp else None

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        region = self._slide.read_region(location, level, size)
        white = Image.new("RGBA", region.size, (BACKGROUND,) * 4)
        return np.asarray(Image.alpha_composite(white, region).convert("RGB"))

    def close(self) -> None:
        self._slide.close()


class TiffBackend:
    """Tiled or stripped pyramidal TIFF through tifffile, decoding only touched segments.

    Every level's tile (or strip) size is checked against ``budget`` when opening, since
    each segment is decoded whole.
    """

    def __init__(self, path: Path, budget: Budget | None = None) -> None:
        self._tif = tifffile.TiffFile(path)
        try:
            self._pages = [_first_page(level) for level in _pyramid(self._tif)]
            for page in self._pages:
                check_segment(page, budget or Budget())
        except Exception:
            self._tif.close()
            raise
        base = self._pages[0]
        self.vendor = "tiff"
        self.level_dimensions = [(p.imagewidth, p.imagelength) for p in self._pages]
        self.level_downsamples = [base.imagewidth / p.imagewidth for p in self._pages]
        self.mpp = tiff_mpp(base)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        page = self._pages[level]
        scale = self.level_downsamples[level]
        x0, y0 = int(location[0] / scale), int(location[1] / scale)
        width, height = size
        out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        seg_h, seg_w = _segment_shape(page)
        per_row = math.ceil(page.imagewidth / seg_w)
        for row in range(max(y0, 0) // seg_h, min(y0 + height, page.imagelength - 1) // seg_h + 1):
            for col in range(
                max(x0, 0) // seg_w, min(x0 + width, page.imagewidth - 1) // seg_w + 1
            ):
                self._paste(page, row * per_row + col, out, x0, y0)
        return out

    def _paste(self, page: Any, index: int, out: np.ndarray, x0: int, y0: int) -> None:
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if not count:
            return
        handle = self._tif.filehandle
        handle.seek(offset)
        segment, position, _ = page.decode(handle.read(count), index)
        if segment is None:
            return
        pixels = _as_rgb(np.asarray(segment)[0])
        top, left = position[2] - y0, position[3] - x0
        src_top, src_left = max(0, -top), max(0, -left)
        dst_top, dst_left = max(0, top), max(0, left)
        h = min(pixels.shape[0] - src_top, out.shape[0] - dst_top)
        w = min(pixels.shape[1] - src_left, out.shape[1] - dst_left)
        if h > 0 and w > 0:
            out[dst_top : dst_top + h, dst_left : dst_left + w] = pixels[
                src_top : src_top + h, src_left : src_left + w
            ]

    def close(self) -> None:
        self._tif.close()


def _pyramid(tif: tifffile.TiffFile) -> list[Any]:
    """Levels of the first series, largest first (SubIFD or successive-page pyramids)."""
    series = tif.series[0]
    levels = list(series.levels)
    if len(series.shape) > 3 or series.dtype != np.uint8:
        raise ReadError(
            "pyramidal TIFF is not 8-bit RGB or gray (multi-channel slides unsupported)"
        )
    return levels


def _first_page(level: Any) -> Any:
    page = level.pages[0] if hasattr(level, "pages") else level
    if page.planarconfig != 1 and page.samplesperpixel > 1:
        raise ReadError("planar (separate-channel) slide TIFFs are not supported")
    return page


def check_segment(page: Any, budget: Budget) -> None:
    """Refuse a TIFF level whose tiles or strips are too large to decode one at a time."""
    seg_h, seg_w = _segment_shape(page)
    itemsize = np.dtype(page.dtype or np.uint8).itemsize
    if seg_h * seg_w * page.samplesperpixel * itemsize > budget.max_tile_bytes:
        raise ReadError(
            f"TIFF tile too large ({seg_w}x{seg_h} x {page.samplesperpixel} samples; "
            f"the budget is {budget.max_tile_bytes >> 20} MiB per tile)"
        )


def check_slide(backend: SlideBackend, max_side: int, budget: Budget) -> None:
    """Refuse a slide over budget, or one whose thumbnail would need a huge level read."""
    width0, height0 = backend.level_dimensions[0]
    if width0 <= 0 or height0 <= 0:
        raise ReadError(f"slide declares an empty size ({width0}x{height0})")
    if width0 * height0 > budget.max_slide_pixels:
        raise ReadError(
            f"slide too large ({width0}x{height0}; budget {budget.max_slide_pixels:,} pixels)"
        )
    level_w, level_h = backend.level_dimensions[thumbnail_level(backend, max_side)]
    if level_w * level_h > budget.max_thumbnail_source_pixels:
        raise ReadError(
            f"slide of {width0}x{height0} without a pyramid level small enough to find "
            f"tissue on (smallest usable level {level_w}x{level_h}; budget "
            f"{budget.max_thumbnail_source_pixels:,} pixels)"
        )


def _segment_shape(page: Any) -> tuple[int, int]:
    if page.is_tiled:
        return page.tilelength, page.tilewidth
    return min(page.rowsperstrip or page.imagelength, page.imagelength), page.imagewidth


def _as_rgb(segment: np.ndarray) -> np.ndarray:
    """A decoded segment ``(h, w[, s])`` as RGB ``uint8``."""
    if segment.ndim == 2 or segment.shape[-1] == 1:
        gray = segment.reshape(segment.shape[0], segment.shape[1])
        return np.repeat(gray[:, :, None], 3, axis=2)
    if segment.shape[-1] == 2:
        return np.repeat(segment[:, :, :1], 3, axis=2)
    return segment[:, :, :3]


def tiff_mpp(page: Any) -> float | None:
    """Level-0 microns per pixel from the resolution tags or an Aperio ``MPP =`` field."""
    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1))
    try:
        x_resolution = float(page.resolution[0])
    except (TypeError, IndexError, ValueError):
        return None
    unit = int(page.resolutionunit)
    if x_resolution <= 0 or unit not in (2, 3):  # 2: inch, 3: centimetre
        return None
    return (25_400.0 if unit == 2 else 10_000.0) / x_resolution


def is_pyramidal_tiff(path: Path) -> bool:
    """Whether a TIFF holds a multi-resolution pyramid or is too large for the raster reader."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if len(series.levels) > 1:
                return True
            page = series.pages[0]
            return bool(page.is_tiled and page.imagewidth * page.imagelength > MAX_PIXELS)
    except Exception:
        return False


def open_slide(path: Path, budget: Budget | None = None) -> SlideBackend:
    """The backend for a slide: tifffile for TIFFs it reads with more levels, else OpenSlide."""
    errors: list[str] = []
    if path.suffix.lower() in TIFF_SUFFIXES | {".svs"}:
        try:
            backend: SlideBackend = TiffBackend(path, budget)
            if len(backend.level_dimensions) > 1 or openslide is None:
                return backend
            backend.close()
        except ReadError:
            raise
        except Exception as error:  # e.g. a codec tifffile lacks: try OpenSlide
            errors.append(f"tifffile: {error_text(error)}")
    if openslide is not None:
        try:
            return OpenSlideBackend(path)
        except Exception as error:
            errors.append(f"openslide: {error_text(error)}")
    else:
        errors.append("openslide not installed (pip install openslide-bin openslide-python)")
    raise ReadError("cannot open slide: " + "; ".join(errors))


@dataclass(frozen=True)
class TilePlan:
    """Where tiles come from: ``side0`` level-0 pixels read as ``read_size`` at ``level``."""

    level: int
    side0: int
    read_size: int
    level0_mpp: float | None


def plan_tiles(backend: SlideBackend, slide_mpp: float, tile_size: int) -> TilePlan:
    """Pick the pyramid level nearest below the wanted resolution (finer, then resized)."""
    if slide_mpp <= 0 or tile_size < 8:
        raise ReadError("slide_mpp must be positive and tile_size at least 8")
    downsample = slide_mpp / backend.mpp if backend.mpp else 1.0
    side0 = max(1, int(round(tile_size * downsample)))
    downsamples = backend.level_downsamples
    finer = [index for index, value in enumerate(downsamples) if value <= downsample * 1.001]
    level = max(finer, key=lambda index: downsamples[index]) if finer else 0
    read_size = max(1, int(round(side0 / backend.level_downsamples[level])))
    return TilePlan(level=level, side0=side0, read_size=read_size, level0_mpp=backend.mpp)


def thumbnail_level(backend: SlideBackend, max_side: int) -> int:
    """The coarsest level at least as fine as a thumbnail of ``max_side`` pixels."""
    width0, height0 = backend.level_dimensions[0]
    scale = max_side / max(width0, height0)
    level = len(backend.level_downsamples) - 1
    while level > 0 and backend.level_downsamples[level] * scale > 1.0:
        level -= 1
    return level


def thumbnail(backend: SlideBackend, max_side: int) -> tuple[np.ndarray, float]:
    """An RGB thumbnail built region by region, and its scale (thumbnail px per level-0 px)."""
    width0, height0 = backend.level_dimensions[0]
    scale = max_side / max(width0, height0)
    level = thumbnail_level(backend, max_side)
    level_w, level_h = backend.level_dimensions[level]
    factor = backend.level_downsamples[level] * scale
    thumb = Image.new("RGB", (max(1, round(width0 * scale)), max(1, round(height0 * scale))))
    for top in range(0, level_h, READ_CHUNK):
        for left in range(0, level_w, READ_CHUNK):
            w, h = min(READ_CHUNK, level_w - left), min(READ_CHUNK, level_h - top)
            location = (
                int(left * backend.level_downsamples[level]),
                int(top * backend.level_downsamples[level]),
            )
            region = Image.fromarray(backend.read_region(location, level, (w, h)))
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            thumb.paste(
                region.resize(size, Image.Resampling.BOX),
                (round(left * factor), round(top * factor)),
            )
    return np.asarray(thumb), scale


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue on a thumbnail: Otsu on HSV saturation (on darkness for unstained slides)."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
    saturation = hsv[:, :, 1]
    if int(np.percentile(saturation, 99)) >= MIN_SATURATION:
        return (saturation > otsu_threshold(saturation)) & (saturation >= MIN_SATURATION)
    darkness = 255 - np.asarray(Image.fromarray(rgb).convert("L"))
    return (darkness > otsu_threshold(darkness)) & (darkness >= MIN_SATURATION)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of ``uint8`` values: pixels above it form the foreground."""
    histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = histogram.sum()
    if total == 0:
        return 255
    levels = np.arange(256)
    weight_low = np.cumsum(histogram)
    mean_low = np.cumsum(histogram * levels)
    weight_high = total - weight_low
    overall = mean_low[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (overall * weight_low / total - mean_low) ** 2 / (weight_low * weight_high)
    between = np.nan_to_num(between, nan=0.0, posinf=0.0)
    return int(np.argmax(between))


def tissue_tiles(
    mask: np.ndarray, scale: float, slide_size: tuple[int, int], side0: int
) -> Iterator[tuple[int, int, float]]:
    """``(x, y, tissue fraction)`` in level-0 pixels of every full tile with enough tissue."""
    width0, height0 = slide_size
    for y in range(0, height0 - side0 + 1, side0):
        for x in range(0, width0 - side0 + 1, side0):
            top, left = int(y * scale), int(x * scale)
            bottom = max(top + 1, int(round((y + side0) * scale)))
            right = max(left + 1, int(round((x + side0) * scale)))
            fraction = float(mask[top:bottom, left:right].mean()) if mask.size else 0.0
            if fraction >= MIN_TISSUE_FRACTION:
                yield x, y, fraction


class SlideReader:
    """Whole-slide images (vendor formats and pyramidal TIFF) as lazily read tissue tiles."""

    name = "slide"

    def can_read(self, path: Path, head: bytes) -> bool:
        suffix = path.suffix.lower()
        if suffix in VENDOR_SUFFIXES:
            return True
        return suffix in TIFF_SUFFIXES and head[:4] in _TIFF_MAGIC and is_pyramidal_tiff(path)

    def read(self, path: Path, options: ReadOptions) -> Iterator[MedImage]:
        backend = open_slide(path, options.budget)
        try:
            yield from iter_tiles(backend, path, options)
        finally:
            backend.close()


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def iter_tiles(backend: SlideBackend, path: Path, options: ReadOptions) -> Iterator[MedImage]:
    """Tissue tiles of one slide, read one at a time (memory stays bounded)."""
    plan = plan_tiles(backend, options.slide_mpp, options.tile_size)
    width0, height0 = backend.level_dimensions[0]
    per_side = max(width0, height0) / plan.side0
    side = int(min(THUMB_MAX_SIDE, max(THUMB_MIN_SIDE, per_side * THUMB_PIXELS_PER_TILE)))
    check_slide(backend, side, options.budget)
    thumb, scale = thumbnail(backend, side)
    mask = tissue_mask(thumb)
    found = False
    base = {
        "format": f"slide ({backend.vendor})",
        "width": options.tile_size,
        "height": options.tile_size,
        "bit_depth": 8,
        "slide_width": width0,
        "slide_height": height0,
        "slide_mpp": float(options.slide_mpp) if plan.level0_mpp else "native",
        "level0_mpp": round(plan.level0_mpp, 5) if plan.level0_mpp else "unknown",
        "level": plan.level,
    }
    for x, y, fraction in tissue_tiles(mask, scale, (width0, height0), plan.side0):
        found = True
        region = backend.read_region((x, y), plan.level, (plan.read_size, plan.read_size))
        tile = _resize(region, options.tile_size)
        meta = {**base, "tile_x": x, "tile_y": y, "tissue": round(fraction, 3)}
        yield MedImage(pixels=tile, path=path, item=f"tile={x},{y}", meta=meta)
    if not found:
        raise ReadError("no tissue found on the slide")


def _resize(region: np.ndarray, size: int) -> np.ndarray:
    if region.shape[0] == size and region.shape[1] == size:
        return region
    image = Image.fromarray(region).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


class TiffArrayReader:
    """Single-resolution TIFFs Pillow cannot open: 16-bit/float multi-sample, float64, ..."""

    name = "tiff"

    def can_read(self, path: Path, head: bytes) -> bool:
        if path.suffix.lower() not in TIFF_SUFFIXES or head[:4] not in _TIFF_MAGIC:
            return False
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return _pillow_cannot(page.dtype, page.samplesperpixel)
        except Exception:
            return False

    def read(self, path: Path, options: ReadOptions) -> Iterator[MedImage]:
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                if page.imagewidth * page.imagelength > options.budget.max_pixels:
                    raise ReadError(f"image too large ({page.imagewidth}x{page.imagelength})")
                shape = (page.imagelength, page.imagewidth, page.samplesperpixel)
                check_array(shape, np.dtype(page.dtype).itemsize, options.budget, "TIFF image")
                data = page.asarray()
                axes = page.axes
        except ReadError:
            raise
        except Exception as error:
            raise ReadError(f"corrupt or truncated TIFF: {error_text(error)}") from None
        pixels = _samples_last(data, axes)
        height, width = pixels.shape[:2]
        step = display_factor(width, height)
        pixels = pixels[::step, ::step] if step > 1 else pixels  # before float temporaries
        meta = {
            "format": "TIFF",
            "width": int(width),
            "height": int(height),
            "bit_depth": int(data.dtype.itemsize * 8),
            "samples": int(pixels.shape[2]) if pixels.ndim == 3 else 1,
        }
        yield MedImage(pixels=scale_to_uint8(pixels), path=path, meta=meta)


def _pillow_cannot(dtype: np.dtype | None, samples: int) -> bool:
    if dtype is None:
        return False
    dtype = np.dtype(dtype)
    if samples > 1 and dtype != np.uint8:
        return True
    return dtype.kind == "c" or dtype in (
        np.dtype("float64"),
        np.dtype("float16"),
        np.dtype("int8"),
    )


def _samples_last(data: np.ndarray, axes: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)``: samples moved last, extra samples dropped, others squeezed."""
    if "S" in axes and axes.index("S") < axes.index("Y"):
        data = np.moveaxis(data, axes.index("S"), -1)
    data = np.squeeze(data)
    if np.iscomplexobj(data):
        data = np.abs(data)
    if data.ndim == 3:
        data = data[:, :, 0] if data.shape[2] < 3 else data[:, :, :3]
    return data


register_reader(TiffArrayReader(), first=True)
register_reader(SlideReader(), first=True)
