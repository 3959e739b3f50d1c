"""Whole-slide tiling (tissue only, bounded reads) and TIFFs Pillow cannot open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import make_result

from medsort.io import ReadError, ReadOptions, find_reader, read_file
from medsort.io import slide as slide_module
from medsort.io.report import slides_section

TISSUE = (170, 60, 150)
SIDE0 = 448  # tile_size 224 at 1.0 µm/px on a 0.5 µm/px slide


def pyramid(
    path: Path,
    width: int = 3584,
    height: int = 2688,
    subifds: bool = True,
    mpp: float | None = 0.5,
    tissue: bool = True,
) -> Path:
    """A 3-level tiled pyramid: white glass with a tissue block of 3x2 tiles at 1 µm/px."""
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    if tissue:
        image[SIDE0 : 3 * SIDE0, 2 * SIDE0 : 5 * SIDE0] = TISSUE
    levels = [image, image[::2, ::2], image[::4, ::4]]
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            extra: dict = {}
            if mpp is not None:
                density = 1e4 / (mpp * 2**index)
                extra = {"resolution": (density, density), "resolutionunit": "CENTIMETER"}
            if subifds and index == 0:
                extra["subifds"] = len(levels) - 1
            tif.write(level, subfiletype=1 if index else 0, **options, **extra)
    return path


def test_tiles_cover_tissue_only(tmp_path: Path) -> None:
    path = pyramid(tmp_path / "slide.tif")
    assert find_reader(path).name == "slide"
    tiles = read_file(path, ReadOptions(slide_mpp=1.0, tile_size=224))
    expected = {
        f"tile={x},{y}" for y in (SIDE0, 2 * SIDE0) for x in (2 * SIDE0, 3 * SIDE0, 4 * SIDE0)
    }
    assert {tile.item for tile in tiles} == expected
    for tile in tiles:
        assert tile.pixels.shape == (224, 224, 3)
        np.testing.assert_array_equal(tile.pixels[100, 100], TISSUE)
        assert tile.meta["level"] == 1 and tile.meta["slide_mpp"] == 1.0
        assert tile.meta["level0_mpp"] == 0.5
        assert tile.meta["tile_x"] % SIDE0 == 0 and tile.meta["slide_width"] == 3584


def test_level_nearest_below_is_chosen(tmp_path: Path) -> None:
    path = pyramid(tmp_path / "slide.tif")
    [tile, *_] = read_file(path, ReadOptions(slide_mpp=1.5, tile_size=100))
    assert tile.meta["level"] == 1  # 2x is finer than 3x; 4x would be coarser
    [tile, *_] = read_file(path, ReadOptions(slide_mpp=0.5, tile_size=224))
    assert tile.meta["level"] == 0


def test_successive_page_pyramid_through_openslide_matches_tifffile(tmp_path: Path) -> None:
    pytest.importorskip("openslide")
    path = pyramid(tmp_path / "pages.tif", subifds=False)
    via_tiff = slide_module.TiffBackend(path)
    via_openslide = slide_module.OpenSlideBackend(path)
    assert via_tiff.level_dimensions == via_openslide.level_dimensions
    assert via_openslide.mpp == pytest.approx(0.5)
    for level in (0, 1, 2):
        np.testing.assert_array_equal(
            via_tiff.read_region((800, 300), level, (300, 200)),
            via_openslide.read_region((800, 300), level, (300, 200)),
        )
    via_tiff.close()
    via_openslide.close()


class RecordingBackend:
    """Wraps a backend and records every region read."""

    def __init__(self, inner: slide_module.SlideBackend) -> None:
        self.inner = inner
        self.vendor, self.mpp = inner.vendor, inner.mpp
        self.level_dimensions, self.level_downsamples = (
            inner.level_dimensions,
            inner.level_downsamples,
        )
        self.reads: list[tuple[int, tuple[int, int]]] = []

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        self.reads.append((level, size))
        return self.inner.read_region(location, level, size)

    def close(self) -> None:
        self.inner.close()


def test_reading_is_bounded_and_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = pyramid(tmp_path / "slide.tif")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a whole level was loaded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", refuse)
    backend = RecordingBackend(slide_module.TiffBackend(path))
    tiles = slide_module.iter_tiles(backend, path, ReadOptions(slide_mpp=1.0, tile_size=224))
    first = next(tiles)
    assert first.item == f"tile={2 * SIDE0},{SIDE0}"
    thumbnail_reads = len(backend.reads) - 1
    assert all(w * h <= slide_module.READ_CHUNK**2 for _, (w, h) in backend.reads)
    rest = list(tiles)
    tile_reads = backend.reads[thumbnail_reads:]
    assert len(tile_reads) == 1 + len(rest) == 6
    assert all(size == (224, 224) and level == 1 for level, size in tile_reads)
    backend.close()


def test_blank_slide_is_skipped(tmp_path: Path) -> None:
    path = pyramid(tmp_path / "blank.tif", tissue=False)
    with pytest.raises(ReadError, match="no tissue"):
        read_file(path)


def test_unknown_resolution_tiles_level0(tmp_path: Path) -> None:
    path = pyramid(tmp_path / "nompp.tif", mpp=None)
    tiles = read_file(path, ReadOptions(slide_mpp=1.0, tile_size=224))
    assert tiles[0].meta["level0_mpp"] == "unknown" and tiles[0].meta["level"] == 0
    assert all(int(t.item.split("=")[1].split(",")[0]) % 224 == 0 for t in tiles)


def test_plain_tiff_stays_with_the_raster_reader(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((64, 64, 3), np.uint8), tile=(32, 32))
    assert find_reader(tmp_path / "plain.tif").name == "raster"


def test_sixteen_bit_rgb_tiff_is_scaled_not_truncated(tmp_path: Path) -> None:
    values = np.linspace(0, 4095, 50 * 40).reshape(50, 40).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", np.stack([values] * 3, axis=-1), photometric="rgb")
    assert find_reader(tmp_path / "rgb16.tif").name == "tiff"
    [image] = read_file(tmp_path / "rgb16.tif")
    assert image.pixels.shape == (50, 40, 3) and image.pixels.dtype == np.uint8
    assert image.pixels.min() == 0 and image.pixels.max() == 255
    assert len(np.unique(image.pixels)) > 200
    assert image.meta["bit_depth"] == 16


def test_float64_and_planar_tiffs(tmp_path: Path) -> None:
    values = np.linspace(-5.0, 5.0, 30 * 20).reshape(30, 20)
    values[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "f64.tif", values)
    [image] = read_file(tmp_path / "f64.tif")
    assert image.pixels[0, 0] == 0 and image.pixels[-1, -1] == 255
    planar = np.stack([values, values, values]).astype(np.float32)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    [image] = read_file(tmp_path / "planar.tif")
    assert image.pixels.shape == (30, 20, 3)


def test_report_lists_groups_per_slide() -> None:
    paths = ["a.svs", "a.svs", "a.svs", "b.svs", "x.png"]
    items = ["tile=0,0", "tile=448,0", "tile=896,0", "tile=0,0", ""]
    result = make_result(paths=paths, items=items, groups=[1, 1, 2, 2, 0])
    section = slides_section(result, Path("."))
    assert "2 slide(s), 4 tissue tile(s)" in section
    assert "<code>a.svs</code></td><td>3</td><td>Group 1: 2, Group 2: 1</td>" in section
    assert "x.png" not in section
    empty = make_result(paths=paths[4:], items=items[4:], groups=[0])
    assert slides_section(empty, Path(".")) == ""
