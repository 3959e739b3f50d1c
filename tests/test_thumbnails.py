"""The read pass writes the report's thumbnails: the same names and bytes as the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_set
from PIL import Image
from pydicom.data import get_testdata_file

from medsort.demo import demo_folder
from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import embed_files
from medsort.io.readers import ReadOptions
from medsort.io.scan import scan_folder
from medsort.io.thumbnails import ThumbnailWriter
from medsort.pipeline import sort_folder
from medsort.report import thumbnails
from medsort.report.thumbnails import ThumbnailStore
from medsort.sorter import Sorter


def mixed_folder(root: Path) -> tuple[Path, str]:
    """Demo PNGs, a 16-bit PNG, an RGBA PNG, two DICOMs, a small JPEG (decoded full size
    with the draft option on), a large one (decoded at 1/2) and a large PNG (box-reduced
    by 2); returns the folder and the large files' names."""
    images = root / "images"
    images.mkdir()
    for source in sorted(demo_folder().glob("*.png"))[:12]:
        shutil.copy2(source, images / source.name)
    rng = np.random.default_rng(0)
    ramp = (np.add.outer(np.arange(64), np.arange(64)) * 1200 // 126).astype(np.uint16)
    Image.fromarray(ramp).save(images / "ct16.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8), "RGBA").save(
        images / "rgba.png"
    )
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy2(get_testdata_file(name, download=False), images / name)
    smooth = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((10, 10, 1)))
    Image.fromarray(smooth[:200, :300].astype(np.uint8)).save(images / "small.jpg", quality=90)
    Image.fromarray(smooth.astype(np.uint8)).resize((1000, 900)).save(images / "large.jpg")
    Image.fromarray(smooth.astype(np.uint8)).resize((950, 1100)).save(images / "large.png")
    return images, ["large.jpg", "large.png"]


def is_drafted(image: Image.Image) -> bool:
    """Whether the read pass reads ``image`` at a reduced size (1/2 still keeps 448)."""
    return min(image.size) >= 2 * 448


def fresh_thumbnails(out: Path, images: Path, rows: pd.DataFrame) -> dict[str, bytes]:
    """The thumbnails the report makes by reading every image: name -> bytes."""
    store = ThumbnailStore(out, ReadOptions())
    store.build(rows, lambda path: images.resolve() / path)
    assert store.n_read_ == len(rows)
    return {path.name: path.read_bytes() for path in (out / "thumbs").glob("*.jpg")}


def test_a_cold_sorts_report_reads_no_image_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, large = mixed_folder(tmp_path)
    read_again: list[str] = []
    real_iter_images = thumbnails.iter_images

    def recording(path: Path, options: ReadOptions):  # noqa: ANN202
        read_again.append(Path(path).name)
        return real_iter_images(path, options)

    monkeypatch.setattr(thumbnails, "iter_images", recording)
    out = tmp_path / "out"
    sorter = Sorter(cache=tmp_path / "cache", progress=False, thumbnails=True)
    monkeypatch.chdir(tmp_path)  # a relative input folder, as typed on the command line
    sort_folder(Path(images.name), out, sorter, audit=False)
    assert read_again == []  # the large ones too: read at the thumbnails' draft size
    assert all(is_drafted(Image.open(images / name)) for name in large)
    rows = pd.read_csv(out / "assignments.csv", keep_default_na=False)[["path", "item"]]
    made = {path.name: path.read_bytes() for path in (out / "thumbs").glob("*.jpg")}
    monkeypatch.setattr(thumbnails, "iter_images", real_iter_images)
    assert made == fresh_thumbnails(tmp_path / "fresh", images, rows)


def test_without_a_cache_folder_or_the_option_the_report_makes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = mixed_folder(tmp_path)
    for sorter in (
        Sorter(cache=False, progress=False, thumbnails=True),
        Sorter(cache=tmp_path / "cache", progress=False),
    ):
        out = tmp_path / f"out-{sorter.cache is False}"
        sort_folder(images, out, sorter, audit=False)
        assert not (tmp_path / "cache" / "thumbs").exists() or sorter.cache is not False
        rows = pd.read_csv(out / "assignments.csv", keep_default_na=False)
        assert len(list((out / "thumbs").glob("*.jpg"))) == len(rows)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "n"), [("lung-histology", 120), ("brain-mri", 253)])
def test_read_pass_thumbnails_equal_the_reports_on_real_images(
    tmp_path: Path, name: str, n: int
) -> None:
    """Real JPEGs and PNGs of every size, brain-MRI's large ones read at a reduced size:
    every thumbnail is written, with the report's bytes."""
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((shared_set(name) / "images").iterdir())[:n]:
        shutil.copy2(source, images / source.name)
    files = scan_folder(images)
    shared = tmp_path / "shared"
    writer = ThumbnailWriter(shared, ReadOptions(), lambda path: path.resolve())
    encoder = create_encoder("efficientnet_lite0")
    embed_files(files, encoder, EmbeddingCache(None), progress=False, thumbnails=writer)
    rows = pd.DataFrame({"path": [f.name for f in files], "item": ""})
    fresh = fresh_thumbnails(tmp_path / "out", images, rows)
    written = {path.name: path.read_bytes() for path in shared.glob("*.jpg")}
    assert written and all(fresh[name] == data for name, data in written.items())
    assert len(written) == len(files)
    drafted = sum(is_drafted(Image.open(f)) for f in files)
    assert drafted > 0 or name != "brain-mri"
