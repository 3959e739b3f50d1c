"""Reduced-size JPEG decoding for the encoder: fewer pixels decoded, the same embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medsort.demo import demo_folder
from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import decode_options, embed_files
from medsort.io import ReadOptions
from medsort.io.readers import read_file


def _large_jpegs(folder: Path, count: int = 4, size: tuple[int, int] = (1000, 800)) -> list[Path]:
    """Real demo images scaled up to large JPEGs (the size of a camera image)."""
    folder.mkdir()
    paths = []
    for source in sorted(demo_folder().glob("*.png"))[:count]:
        image = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        path = folder / f"{source.stem}.jpg"
        image.save(path, quality=92)
        paths.append(path)
    return paths


def test_draft_decoding_reads_fewer_pixels_keeps_the_true_size(tmp_path: Path) -> None:
    path = _large_jpegs(tmp_path / "jpegs", 1)[0]
    full = read_file(path, ReadOptions())[0]
    draft = read_file(path, ReadOptions(draft_size=224))[0]
    assert full.pixels.shape[:2] == (800, 1000)
    assert draft.pixels.shape[:2] == (400, 500)  # 1/2: 1/4 would leave 200 < 224 rows
    assert (draft.meta["width"], draft.meta["height"]) == (1000, 800)  # what the audit sees


def test_draft_decoding_gives_the_same_embedding(tmp_path: Path) -> None:
    files = _large_jpegs(tmp_path / "jpegs", size=(2000, 1600))
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    options = decode_options(None, encoder)
    assert options.draft_size == 448
    assert read_file(files[0], options)[0].pixels.shape[:2] == (800, 1000)  # decoded at 1/2
    vectors = {
        size: embed_files(
            files, encoder, EmbeddingCache(None), ReadOptions(draft_size=size), progress=False
        ).vectors
        for size in (0, 448)
    }
    full, draft = vectors[0], vectors[448]
    cosine = (full * draft).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(draft, axis=1)
    assert cosine.min() > 0.995
    others = full @ draft.T / np.outer(np.linalg.norm(full, axis=1), np.linalg.norm(draft, axis=1))
    assert (np.argmax(others, axis=1) == np.arange(len(files))).all()


def test_png_and_explicit_full_decoding_are_untouched(tmp_path: Path) -> None:
    source = sorted(demo_folder().glob("*.png"))[0]
    assert read_file(source, ReadOptions(draft_size=8))[0].pixels.shape[:2] == (28, 28)
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    assert decode_options(ReadOptions(draft_size=0), encoder).draft_size == 0
