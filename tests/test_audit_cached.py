"""The audit from the read pass's recorded pixel signatures equals the audit from re-read
pixels, and a cached re-run into a new folder decodes no image at all."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_set
from PIL import Image

from medsort.audit import run_audit
from medsort.embed.cache import content_hash
from medsort.io import signatures
from medsort.pipeline import sort_folder
from medsort.results import SIGNATURES, SortResult
from medsort.sorter import Sorter

TABLES = ("duplicates.csv", "near_duplicates.csv", "outliers.csv", "quality.csv")


def _audit_without_timings(out: Path) -> dict:
    audit = json.loads((out / "audit.json").read_text())
    audit.pop("timings_s")
    return audit


def _assert_recorded_equals_reread(folder: Path, tmp_path: Path) -> dict:
    """Sort ``folder`` (signatures recorded), then audit a copy of the output whose
    signatures are removed (pixels re-read); both audits must agree in every field."""
    recorded = tmp_path / "recorded"
    sort_folder(folder, recorded, Sorter(cache=tmp_path / "cache", progress=False))
    assert (recorded / SIGNATURES).is_file()
    reread = tmp_path / "reread"
    shutil.copytree(recorded, reread)
    (reread / SIGNATURES).unlink()
    for name in TABLES:
        (reread / name).unlink(missing_ok=True)
    run_audit(reread)
    audit = _audit_without_timings(recorded)
    assert audit == _audit_without_timings(reread)
    for name in TABLES:
        assert filecmp.cmp(recorded / name, reread / name, shallow=False), name
    return audit


def test_signatures_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), np.zeros((30, 30), np.uint8)]
    # the blank image's entropy is -0.0, which quality.csv writes as such
    measured = [signatures.signature(p) for p in pixels]
    stats, descriptors, hashes = signatures.unpack(signatures.pack(measured))
    assert np.array_equal(stats, [m.stats for m in measured])
    assert [str(v) for v in stats.ravel()] == [str(v) for m in measured for v in m.stats]
    assert np.array_equal(descriptors, [m.descriptor for m in measured])
    assert np.array_equal(hashes, [m.hashes for m in measured])
    assert hashes.dtype == np.uint64 and hashes[0].max() > np.uint64(1 << 60)


def test_recorded_audit_equals_reread_audit_with_copies(demo_images: Path, tmp_path: Path) -> None:
    """Real 28 px images plus a flipped copy, a re-encoded copy and a blank image: the
    near-duplicate, quality and outlier findings come out the same both ways."""
    names = sorted(demo_images.glob("*.png"))
    with Image.open(names[0]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(demo_images / "flipped.png")
    with Image.open(names[1]) as image:
        image.convert("RGB").save(demo_images / "copy.jpg", quality=90)
    Image.new("L", (28, 28), 0).save(demo_images / "blank.png")
    shutil.copy(names[2], demo_images / "same bytes.png")
    audit = _assert_recorded_equals_reread(demo_images, tmp_path)
    assert audit["hygiene"]["quality"]["by_flag"].get("blank") == 1
    duplicates = (tmp_path / "recorded" / "duplicates.csv").read_text()
    assert "same bytes.png" in duplicates and names[2].name in duplicates


def test_cached_rerun_decodes_no_image(
    demo_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second sort of the same folder into a new output folder: embeddings, audit pixels
    and thumbnails all come from the caches; the outputs are the same."""
    cache = tmp_path / "cache"
    sort_folder(demo_images, tmp_path / "first", Sorter(cache=cache, progress=False))

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached re-run decoded an image")

    monkeypatch.setattr("medsort.embed.stream.iter_images", no_decoding)
    monkeypatch.setattr("medsort.audit.hygiene.pixel_pass", no_decoding)
    monkeypatch.setattr("medsort.report.thumbnails._read_items", no_decoding)

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audit hashed the files again")

    monkeypatch.setattr("medsort.audit.hygiene.file_hashes", no_hashing)
    sort_folder(demo_images, tmp_path / "second", Sorter(cache=cache, progress=False))
    first, second = tmp_path / "first", tmp_path / "second"
    assert _audit_without_timings(first) == _audit_without_timings(second)
    assert filecmp.cmp(first / "assignments.csv", second / "assignments.csv", shallow=False)
    thumbs = sorted(p.name for p in (second / "thumbs").glob("*.jpg"))
    assert thumbs and thumbs == sorted(p.name for p in (first / "thumbs").glob("*.jpg"))
    result = SortResult.load(second)
    assert result.run["n_embedded_files"] == 0
    paths = result.assignments["path"]
    assert result.file_hashes() == [content_hash(demo_images / path) for path in paths]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lung-histology", "dermoscopy"])
def test_recorded_audit_equals_reread_audit_on_real_sets(name: str, tmp_path: Path) -> None:
    """150 real images (LC25000's augmented copies, HAM10000's dark surrounds)."""
    source = shared_set(name)
    folder = tmp_path / "input"
    folder.mkdir()
    for path in sorted((source / "images").iterdir())[:150]:
        shutil.copy2(path, folder / path.name)
    audit = _assert_recorded_equals_reread(folder, tmp_path)
    if name == "lung-histology":
        assert audit["hygiene"]["near_duplicates"]["n_by_pixels"] > 0


def test_batched_phashes_equal_one_orientation_at_a_time(demo_images: Path) -> None:
    """The batched DCT gives the hashes of the plain per-orientation loop (real images)."""
    from scipy import fft

    def reference(content: np.ndarray) -> np.ndarray:
        square = np.asarray(
            Image.fromarray(content.astype(np.float32)).resize((32, 32), Image.BOX),
            dtype=np.float64,
        )
        out = np.zeros(8, dtype=np.uint64)
        weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
        for i, variant in enumerate(signatures.dihedral(square)):
            low = fft.dctn(variant, norm="ortho")[:8, :8].ravel()
            bits = low > np.median(low[1:])
            out[i] = np.bitwise_or.reduce(weights[bits]) if bits.any() else np.uint64(0)
        return out

    for path in sorted(demo_images.glob("*.png")):
        gray = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        content = signatures.content_image(gray)
        assert np.array_equal(signatures.dihedral_phashes(content), reference(content))
    flat = np.zeros((64, 64), np.float32)
    assert np.array_equal(signatures.dihedral_phashes(flat), reference(flat))
