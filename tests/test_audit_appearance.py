"""Appearance attributes: measured from real pixels, stored by the read pass, named by the audit.

Planted shortcuts use real images of one class of ``../shared/data/blood-cells-128``
(BloodMNIST, CC BY 4.0) split at random into two pseudo-classes, so that nothing but the
planted artefact tells them apart: a dark vignette, a burned-in text corner, or blur on
one half. The audit must name each; the untouched split must get no appearance warning.
Unit tests use the bundled demo images (MedMNIST, CC BY 4.0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_result, shared_set
from PIL import Image, ImageDraw, ImageFilter

from medsort.audit import run_audit
from medsort.audit.hygiene import pixel_pass
from medsort.demo import demo_folder
from medsort.io.appearance import WORDS, appearance, jpeg_quality
from medsort.io.readers import read_file


def _two_groups():  # noqa: ANN202 - the sorter of these tests: two flat groups, no output
    from medsort.group import TwoLevelGrouper
    from medsort.sorter import Sorter

    return Sorter(grouper=TwoLevelGrouper(n_clusters=2), progress=False)


N_IMAGES = 60
CELL = "neutrophil"


# --- planting ---------------------------------------------------------------------------


def vignette(image: Image.Image) -> Image.Image:
    """Dark corners, as a dermoscope or a fundus camera leaves them."""
    w, h = image.size
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2)) / np.sqrt(2)
    fall = np.clip(1.0 - 1.6 * np.clip(r - 0.35, 0, None), 0.05, 1.0)
    pixels = np.asarray(image.convert("RGB"), dtype=float) * fall[:, :, None]
    return Image.fromarray(pixels.astype(np.uint8))


def text_corner(image: Image.Image) -> Image.Image:
    """Burned-in annotation in the top-left corner: white letters on a dark label."""
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 40, 24), fill=(20, 20, 20))
    draw.text((3, 1), "L 2019", fill=(255, 255, 255))
    draw.text((3, 12), "AP 40x", fill=(255, 255, 255))
    return image


def blur(image: Image.Image) -> Image.Image:
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(1.6))


def _demo(index: int = 0, side: int = 128) -> Image.Image:
    path = sorted(demo_folder().glob("*.png"))[index]
    return Image.open(path).convert("RGB").resize((side, side), Image.BICUBIC)


def _measure(image: Image.Image, tmp_path: Path, name: str = "x.png", **save) -> dict:
    path = tmp_path / name
    image.save(path, **save)
    return appearance(read_file(path)[0])


# --- unit: the attributes move the right way --------------------------------------------


def test_appearance_sees_vignette_text_blur_padding_and_jpeg(tmp_path: Path) -> None:
    base = _demo(3)
    plain = _measure(base, tmp_path, "plain.png")
    assert _measure(vignette(base), tmp_path, "v.png")["vignette"] > plain["vignette"] + 0.3
    assert _measure(text_corner(base), tmp_path, "t.png")["text_marks"] > max(
        3 * plain["text_marks"], 0.02
    )
    native = _demo(3, side=28)
    sharp = _measure(native, tmp_path, "n.png")["sharpness"]
    assert _measure(blur(native), tmp_path, "b.png")["sharpness"] < 0.8 * sharp
    boxed = Image.new("RGB", (128, 176))
    boxed.paste(base, (0, 24))
    assert _measure(boxed, tmp_path, "p.png")["padding"] > 0.2 > plain["padding"]
    assert np.isnan(plain["saturation"])  # a grey image has no colour cast
    values = _measure(base, tmp_path, "q.jpg", quality=60)
    assert abs(values["jpeg_quality"] - 60) < 2
    assert np.isnan(jpeg_quality(tmp_path / "plain.png", "PNG"))


def test_appearance_of_tiny_images_skips_strokes(tmp_path: Path) -> None:
    small = Image.open(sorted(demo_folder().glob("*.png"))[0])
    values = _measure(small, tmp_path)
    assert np.isnan(values["text_marks"]) and np.isfinite(values["sharpness"])


def test_sixteen_bit_png_is_read_through_the_readers(tmp_path: Path) -> None:
    """A valid 16-bit PNG with values in 1,000-5,000 is not 'blank' (it once was)."""
    gray = np.asarray(_demo(1).convert("L"), dtype=np.uint16)
    wide = (1000 + gray.astype(np.uint32) * 16).astype(np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I;16")
    read = pixel_pass([path], with_appearance=True)
    assert read.stats["std"].iloc[0] > 20
    assert read.appearance["contrast"].iloc[0] > 20
    assert np.abs(read.descriptors[0]).sum() > 0


def test_embed_stage_stores_appearance_with_each_item(demo_images: Path, cache_dir: Path) -> None:
    from medsort.embed.cache import EmbeddingCache
    from medsort.embed.registry import create_encoder
    from medsort.embed.stream import embed_files
    from medsort.io.scan import scan_folder

    files = scan_folder(demo_images)[:4]
    encoder = create_encoder("efficientnet_lite0")
    cache = EmbeddingCache(cache_dir)
    first = embed_files(files, encoder, cache, progress=False)
    again = embed_files(files, encoder, cache, progress=False)
    cache.close()
    assert again.n_embedded_files == 0
    for entry in (first.items[0], again.items[0]):
        assert {"sharpness", "vignette", "padding"} <= set(entry.meta)


def test_audit_of_one_image_does_not_crash(tmp_path: Path) -> None:
    source = sorted(demo_folder().glob("*.png"))[0]
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / source.name).write_bytes(source.read_bytes())
    make_result(
        np.ones((1, 8)), paths=[source.name], input_dir=folder, item_columns={"format": ["PNG"]}
    ).save(tmp_path / "out")
    audit = run_audit(tmp_path / "out")
    assert audit["n_items"] == 1
    assert audit["hygiene"]["near_duplicates"]["n_pairs"] == 0


# --- planted shortcuts on real images ---------------------------------------------------


@pytest.fixture(scope="module")
def cells() -> list[Path]:
    data = shared_set("blood-cells-128")
    labels = pd.read_csv(data / "labels.csv")
    chosen = labels.loc[labels["label"] == CELL, "path"].head(N_IMAGES)
    return [data / p for p in chosen]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("planted")


def _planted_sort(cells: list[Path], work: Path, name: str, plant) -> tuple[Path, Path]:  # noqa: ANN001
    """Half the images (chosen at random) carry ``plant``; labels say which half."""
    from medsort.pipeline import sort_folder

    folder = work / name / "input"
    rng = np.random.default_rng(7)
    marked = set(rng.choice(len(cells), size=len(cells) // 2, replace=False).tolist())
    rows = []
    for i, source in enumerate(cells):
        target = folder / "images" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(source).convert("RGB")
        (plant(image) if (plant and i in marked) else image).save(target)
        rows.append({"path": f"images/{source.name}", "label": "a" if i in marked else "b"})
    truth = work / name / "labels.csv"
    pd.DataFrame(rows).to_csv(truth, index=False)
    out = sort_folder(folder, work / name / "out", _two_groups(), audit=False)
    return out, truth


def _appearance_warnings(audit: dict) -> set[str]:
    named = set()
    for f in audit["findings"]:
        if f["level"] == "warning" and f.get("source") == "image":
            named |= set(f.get("attributes") or [f.get("attribute")])
    return named - {None}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("plant", "attribute"),
    [(vignette, "vignette"), (text_corner, "text_marks"), (blur, "sharpness")],
)
def test_planted_appearance_shortcut_is_named(
    cells: list[Path], work: Path, plant, attribute: str
) -> None:  # noqa: ANN001
    out, truth = _planted_sort(cells, work, attribute, plant)
    audit = run_audit(out, truth_csv=truth)
    assert attribute in _appearance_warnings(audit), [f["message"] for f in audit["findings"]]
    assert any(WORDS[attribute] in f["message"] for f in audit["findings"])
    saved = json.loads((out / "audit.json").read_text())
    assert set(saved["group_explanations"]) == {"0", "1"}
    assert saved["stability"]["overall"] is not None


@pytest.mark.slow
def test_clean_folder_gets_no_appearance_warning(work: Path) -> None:
    """Two real cell types, untouched: the groups follow the types, nothing is blamed."""
    data = shared_set("blood-cells-128")
    labels = pd.read_csv(data / "labels.csv")
    chosen = pd.concat(
        [labels[labels["label"] == c].head(N_IMAGES // 2) for c in (CELL, "eosinophil")]
    )
    folder = work / "clean" / "input"
    for path in chosen["path"]:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes((data / path).read_bytes())
    truth = work / "clean" / "labels.csv"
    chosen[["path", "label"]].to_csv(truth, index=False)
    from medsort.pipeline import sort_folder

    out = sort_folder(folder, work / "clean" / "out", _two_groups(), audit=False)
    audit = run_audit(out, truth_csv=truth)
    assert _appearance_warnings(audit) == set(), [f["message"] for f in audit["findings"]]
    assert audit["grouping_verdict"]["verdict"] == "ok"


# --- near duplicates: a shared black frame is not a copy -------------------------------


def _fundus_like(image: Image.Image) -> Image.Image:
    """A round field of view in a black surround, as a fundus camera or dermoscope frames it."""
    vignetted = vignette(image)
    w, h = vignetted.size
    y, x = np.mgrid[0:h, 0:w]
    inside = np.hypot(x - w / 2, y - h / 2) < 0.45 * w
    pixels = np.asarray(vignetted) * inside[:, :, None]
    return Image.fromarray(pixels.astype(np.uint8))


def test_shared_black_frame_does_not_make_copies(tmp_path: Path) -> None:
    from medsort.audit.hygiene import hash_distance, pair_correlation

    labels = pd.read_csv(demo_folder().parent / "labels.csv")
    names = labels.loc[labels["label"].str.startswith("breast"), "path"].head(8)
    paths = []
    for i, name in enumerate(names):  # eight different ultrasounds in one round black frame
        path = tmp_path / f"frame_{i}.png"
        image = Image.open(demo_folder() / name).convert("RGB").resize((128, 128), Image.BICUBIC)
        _fundus_like(image).save(path)
        paths.append(path)
    flipped = tmp_path / "flipped.png"
    Image.open(paths[0]).transpose(Image.FLIP_LEFT_RIGHT).save(flipped)
    read = pixel_pass([*paths, flipped])
    n = len(paths)
    a, b = np.triu_indices(n, k=1)
    raw = np.stack([np.asarray(Image.open(p).convert("L"), dtype=float).ravel() for p in paths])
    raw = (raw - raw.mean(axis=1, keepdims=True)) / raw.std(axis=1, keepdims=True)
    framed = (raw[a] * raw[b]).mean(axis=1)
    assert np.median(framed) > 0.7  # the frame alone makes them correlate
    different = pair_correlation(read.descriptors, a, b)
    distance = hash_distance(read.hashes, a, b)
    assert np.median(different) < np.median(framed) - 0.2
    assert not np.any((different >= 0.9) & (distance <= 10))  # pixels alone never agree
    copy = np.array([0]), np.array([n])
    assert pair_correlation(read.descriptors, *copy)[0] > 0.95
    assert hash_distance(read.hashes, *copy)[0] <= 10


def test_window_filters_equal_scipy() -> None:
    """The fast min/max window filters give scipy.ndimage's values exactly (edges too)."""
    from scipy import ndimage

    from medsort.io.appearance import _max_filter, _min_filter

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (2, 9), (7, 3), (40, 61), (160, 120)]:
        for dtype in (np.float32, np.uint8, np.uint16):
            x = (rng.random(shape) * 255).astype(dtype)
            for size in (1, 3, 5, 7):
                assert np.array_equal(
                    _min_filter(x, size), ndimage.minimum_filter(x, size, mode="nearest")
                )
                assert np.array_equal(
                    _max_filter(x, size), ndimage.maximum_filter(x, size, mode="nearest")
                )


def test_grey_equals_numpy_mean() -> None:
    from medsort.io.appearance import grey

    rng = np.random.default_rng(4)
    for shape in [(1, 1, 3), (33, 17, 3), (160, 160, 3)]:
        x = (rng.random(shape) * 255).astype(np.float32)
        assert np.array_equal(grey(x), x.mean(axis=2))
    assert np.array_equal(grey(np.ones((4, 4, 4), np.float32)), np.ones((4, 4), np.float32))
