"""Slide tiling speed and memory on a synthetic pyramidal TIFF.

Writes a ``--size`` x ``--size`` three-level pyramid (written tile by tile, never held
in memory) with tissue-like blobs on white glass, then times the slide reader: thumbnail,
tissue detection, and reading + resizing every tissue tile. Prints tiles/s and peak RSS.

    python benchmarks/bench_slides.py --size 20000 --mpp 1.0 --tile 224
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from medsort.io import ReadOptions, iter_images

TILE = 256
BLOBS = [(0.3, 0.3, 0.18), (0.65, 0.4, 0.15), (0.45, 0.75, 0.2)]  # centre x, y, radius


def tiles(size: int, downsample: int) -> Iterator[np.ndarray]:
    """Tiles of one level, row by row: pink tissue inside the blobs, texture, white glass."""
    side = size // downsample
    rng = np.random.default_rng(downsample)
    for top in range(0, side, TILE):
        for left in range(0, side, TILE):
            ys, xs = np.mgrid[top : top + TILE, left : left + TILE] / side
            inside = np.zeros((TILE, TILE), dtype=bool)
            for cx, cy, radius in BLOBS:
                inside |= (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2
            tile = np.full((TILE, TILE, 3), 242, dtype=np.uint8)
            if inside.any():
                noise = rng.integers(0, 40, (TILE, TILE, 1), dtype=np.uint8)
                tissue = np.array([200, 90, 170], np.uint8) - noise
                tile = np.where(inside[:, :, None], tissue, tile)
            yield tile


def write_pyramid(path: Path, size: int, mpp: float = 0.25) -> None:
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, downsample in enumerate((1, 4, 16)):
            side = size // downsample
            density = 1e4 / (mpp * downsample)
            tif.write(
                tiles(size, downsample),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="zlib",
                compressionargs={"level": 1},
                resolution=(density, density),
                resolutionunit="CENTIMETER",
                subfiletype=1 if index else 0,
            )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--mpp", type=float, default=1.0)
    parser.add_argument("--tile", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slide.tif"
        started = time.perf_counter()
        write_pyramid(path, args.size)
        print(
            f"wrote {args.size}x{args.size} pyramid ({path.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        before = peak_rss_mib()
        started = time.perf_counter()
        first_at = None
        count = 0
        for _ in iter_images(path, ReadOptions(slide_mpp=args.mpp, tile_size=args.tile)):
            count += 1
            if first_at is None:
                first_at = time.perf_counter() - started
        elapsed = time.perf_counter() - started
    print(f"tiles: {count} at {args.mpp} µm/px, {args.tile}px (tissue only)")
    print(f"thumbnail + tissue detection + first tile: {first_at:.2f}s")
    print(f"tiling: {elapsed:.2f}s, {count / elapsed:.0f} tiles/s")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (before tiling {before:.0f} MiB)")


if __name__ == "__main__":
    main()
