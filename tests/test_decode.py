"""Reduced-size decoding for the encoder: fewer pixels decoded or kept, the same embedding.

JPEGs are reduced in the DCT (draft mode), every other format by a whole-factor box
reduction right after decoding.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medsort.demo import demo_folder
from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import decode_options, embed_files
from medsort.io import ReadOptions, intensity
from medsort.io.readers import read_file


def _large_images(
    folder: Path, count: int = 4, size: tuple[int, int] = (1000, 800), suffix: str = ".jpg"
) -> list[Path]:
    """Real demo images scaled up to large files (the size of a camera image or X-ray)."""
    folder.mkdir()
    paths = []
    for source in sorted(demo_folder().glob("*.png"))[:count]:
        image = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        path = folder / f"{source.stem}{suffix}"
        image.save(path, **({"quality": 92} if suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def _box_reduced(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor`` x ``factor`` blocks, rounded half up (sides divisible by it)."""
    h, w = pixels.shape[:2]
    blocks = pixels.reshape(h // factor, factor, w // factor, factor, *pixels.shape[2:])
    return np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def test_draft_decoding_reads_fewer_pixels_keeps_the_true_size(tmp_path: Path) -> None:
    path = _large_images(tmp_path / "jpegs", 1)[0]
    full = read_file(path, ReadOptions())[0]
    draft = read_file(path, ReadOptions(draft_size=224))[0]
    assert full.pixels.shape[:2] == (800, 1000)
    assert draft.pixels.shape[:2] == (400, 500)  # 1/2: 1/4 would leave 200 < 224 rows
    assert (draft.meta["width"], draft.meta["height"]) == (1000, 800)  # what the audit sees


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_draft_decoding_gives_the_same_embedding(tmp_path: Path, suffix: str) -> None:
    files = _large_images(tmp_path / "images", size=(2000, 1600), suffix=suffix)
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    options = decode_options(None, encoder)
    assert options.draft_size == 448
    decoded = read_file(files[0], options)[0]
    # JPEG at 1/2 in the DCT; PNG box-reduced by 3, the largest factor keeping 448 rows
    assert decoded.pixels.shape[:2] == ((800, 1000) if suffix == ".jpg" else (534, 667))
    assert decoded.drafted and (decoded.meta["width"], decoded.meta["height"]) == (2000, 1600)
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


def test_other_formats_are_box_reduced_by_a_whole_factor(tmp_path: Path) -> None:
    # 16-bit PNG: reduced before its display scaling, so compare with the 8-bit copy's
    grey = np.asarray(Image.open(_large_images(tmp_path / "png", 1, (960, 640), ".png")[0]))
    path = tmp_path / "x16.png"
    Image.fromarray(grey[:, :, 0].astype(np.uint16) * 257).save(path)
    full = read_file(path, ReadOptions())[0]
    reduced = read_file(path, ReadOptions(draft_size=200))[0]  # 640 // 200 = 3
    assert not full.drafted and full.pixels.shape == (640, 960)
    assert reduced.drafted and reduced.pixels.shape == (214, 320)
    assert (reduced.meta["width"], reduced.meta["height"]) == (960, 640)
    # NIfTI and the rest: their display pixels are reduced as they leave the reader
    volume = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.tile(grey[:512, :512, :1], (1, 1, 3)), np.eye(4)), volume)
    slices = read_file(volume, ReadOptions(volume="axial:1"))
    reduced_slices = read_file(volume, ReadOptions(volume="axial:1", draft_size=128))
    np.testing.assert_array_equal(reduced_slices[0].pixels, _box_reduced(slices[0].pixels, 4))
    assert reduced_slices[0].drafted


def test_dicom_stored_values_are_reduced_before_the_window(tmp_path: Path) -> None:
    stored = np.array([[-1000, -998, 7, 8, 5], [-996, -997, 9, 10, 5]], dtype=np.int16)
    np.testing.assert_array_equal(
        intensity.reduce_stored(stored, 2), np.array([[-998, 8, 5]], dtype=np.int16)
    )  # block means -997.75, 8.5 (to even), 5 (the edge block's own two values)
    dicom = Path(get_testdata_file("CT_small.dcm", download=False))  # 128 x 128, rescaled
    window = "500,6000"  # wide enough to clip nothing: then the order does not matter
    shown = read_file(dicom, ReadOptions(window=window))[0]
    small = read_file(dicom, ReadOptions(window=window, draft_size=32))[0]
    assert small.pixels.shape == (32, 32) and small.drafted and small.meta["width"] == 128
    assert shown.pixels.min() > 0 and shown.pixels.max() < 255
    difference = np.abs(small.pixels.astype(int) - _box_reduced(shown.pixels, 4))
    assert difference.max() <= 1  # two roundings


def test_small_images_and_explicit_full_decoding_are_untouched(tmp_path: Path) -> None:
    source = sorted(demo_folder().glob("*.png"))[0]  # 28 x 28
    assert read_file(source, ReadOptions(draft_size=448))[0].pixels.shape[:2] == (28, 28)
    assert not read_file(source, ReadOptions(draft_size=448))[0].drafted
    assert read_file(source, ReadOptions(draft_size=8))[0].pixels.shape[:2] == (10, 10)
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    assert decode_options(ReadOptions(draft_size=0), encoder).draft_size == 0
