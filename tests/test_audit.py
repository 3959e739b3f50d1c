"""Audit stage: planted shortcuts are named, clean data is not flagged, copies are found.

Real images come from ``../shared/data/lung-histology`` (benign vs squamous cell carcinoma,
which the embeddings separate cleanly); the tests are skipped when it is absent. Embeddings
are cached for the whole module, so each image content is embedded once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_set
from PIL import Image

from medsort.audit import duplicate_keep_mask, keep_mask, run_audit
from medsort.audit.attributes import discretise
from medsort.audit.hygiene import calibrate_near_threshold, robust_z
from medsort.audit.shortcuts import benjamini_hochberg, conditional_score, utility

PER_CLASS = 30
CLASSES = ("benign", "squamous_cell_carcinoma")

# --- helpers -------------------------------------------------------------------------------


def _sources() -> dict[str, list[Path]]:
    data = shared_set("lung-histology")
    labels = pd.read_csv(data / "labels.csv")
    return {
        c: [data / p for p in labels.loc[labels["label"] == c, "path"].head(PER_CLASS)]
        for c in CLASSES
    }


def _save(source: Path, target: Path, fmt: str | None = None, transform=None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt is None and transform is None:
        shutil.copyfile(source, target)
        return
    with Image.open(source) as image:
        image = image.convert("RGB")
        if transform is not None:
            image = transform(image)
        image.save(target, format=fmt or "JPEG", quality=90)


def _truth(folder: Path, labels: dict[str, str]) -> Path:
    path = folder.parent / f"{folder.name}-labels.csv"
    pd.DataFrame({"path": list(labels), "label": list(labels.values())}).to_csv(path, index=False)
    return path


def _sort(folder: Path, out: Path, cache: Path) -> Path:
    from medsort.group import TwoLevelGrouper
    from medsort.pipeline import sort_folder
    from medsort.sorter import Sorter

    sorter = Sorter(grouper=TwoLevelGrouper(n_clusters=2), cache=cache, progress=False)
    return sort_folder(folder, out, sorter)


def _warned(audit: dict, target: str | None = None) -> set[str]:
    """Attributes with a warning-level finding (optionally for one target)."""
    return {
        f["attribute"]
        for f in audit["findings"]
        if f["kind"] == "attribute"
        and f["level"] == "warning"
        and (target is None or f["target"] == target)
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


# --- shortcuts on real images --------------------------------------------------------------


@pytest.mark.slow
def test_format_shortcut_is_named(tmp_path: Path, cache: Path) -> None:
    """One class saved as PNG, the other re-encoded as JPEG: the audit names the format."""
    folder, labels = tmp_path / "input", {}
    for label, fmt, suffix in ((CLASSES[0], "PNG", ".png"), (CLASSES[1], "JPEG", ".jpg")):
        for source in _sources()[label]:
            name = f"images/{source.stem}{suffix}"
            _save(source, folder / name, fmt=fmt)
            labels[name] = label
    out = _sort(folder, tmp_path / "out", cache)
    audit = run_audit(out)
    assert "format" in _warned(audit, "groups")
    message = next(f["message"] for f in audit["findings"] if f.get("attribute") == "format")
    assert "PNG" in message and "JPEG" in message
    with_truth = run_audit(out, truth_csv=_truth(folder, labels))
    assert "format" in _warned(with_truth, "label")
    saved = json.loads((out / "audit.json").read_text())
    assert saved["findings"] == with_truth["findings"]


@pytest.mark.slow
def test_size_shortcut_and_metadata_column_are_named(tmp_path: Path, cache: Path) -> None:
    """One class downsized to 160 px, and a user CSV whose 'hospital' matches the class."""
    folder, rows = tmp_path / "input", []
    for label in CLASSES:
        shrink = label == CLASSES[1]
        for source in _sources()[label]:
            name = f"images/{source.name}"
            resize = (lambda im: im.resize((160, 160), Image.BILINEAR)) if shrink else None
            _save(source, folder / name, transform=resize)
            rows.append({"path": name, "hospital": "north" if shrink else "south"})
    meta = tmp_path / "meta.csv"
    pd.DataFrame(rows).to_csv(meta, index=False)
    out = _sort(folder, tmp_path / "out", cache)
    audit = run_audit(out, metadata_csv=meta)
    warned = _warned(audit, "groups")
    assert {"width", "height", "hospital"} <= warned
    assert "aspect" in {i["name"] for i in audit["ignored"]}  # square either way: constant


@pytest.mark.slow
def test_no_shortcut_flags_nothing(tmp_path: Path, cache: Path) -> None:
    """Untouched copies plus a random metadata column: no attribute warning."""
    folder, rows = tmp_path / "input", []
    rng = np.random.default_rng(0)
    for label in CLASSES:
        for source in _sources()[label]:
            name = f"images/{source.name}"
            _save(source, folder / name)
            rows.append({"path": name, "scanner": rng.choice(["A", "B", "C"]), "id": name})
    meta = tmp_path / "meta.csv"
    pd.DataFrame(rows).to_csv(meta, index=False)
    out = _sort(folder, tmp_path / "out", cache)
    audit = run_audit(out, metadata_csv=meta)
    assert _warned(audit) == set()
    scanner = next(a for a in audit["attributes"] if a["name"] == "scanner")
    assert scanner["targets"]["groups"]["verdict"] == "ok"
    ignored = {i["name"]: i["reason"] for i in audit["ignored"]}
    assert "identifier" in ignored["id"] and "constant" in ignored["format"]


@pytest.mark.slow
def test_duplicates_flips_and_cli(tmp_path: Path, cache: Path) -> None:
    """Exact copies and flipped/rotated copies are found; the CLI writes CSVs and report."""
    from medsort.cli import main

    folder = tmp_path / "input"
    originals = _sources()[CLASSES[0]][:20] + _sources()[CLASSES[1]][:20]
    for source in originals:
        _save(source, folder / "images" / source.name)
    for source in originals[:3]:
        _save(source, folder / "copies" / source.name)
    planted = set()
    flips = [Image.FLIP_LEFT_RIGHT, Image.ROTATE_90, Image.FLIP_TOP_BOTTOM] * 2
    for source, op in zip(originals[5:10], flips[:5], strict=True):
        _save(source, folder / "flips" / source.name, transform=lambda im, op=op: im.transpose(op))
        planted.add(frozenset({f"images/{source.name}", f"flips/{source.name}"}))
    out = _sort(folder, tmp_path / "out", cache)

    assert main(["audit", str(out), "--quiet"]) == 0

    duplicates = pd.read_csv(out / "duplicates.csv", keep_default_na=False)
    assert len(duplicates) == 6 and duplicates["set"].nunique() == 3
    near = pd.read_csv(out / "near_duplicates.csv", keep_default_na=False)
    found = {frozenset({a, b}) for a, b in zip(near["path_a"], near["path_b"], strict=True)}
    assert planted <= found
    assert len(found - planted) <= 2  # few false alarms among 40 distinct images
    mask = duplicate_keep_mask(out)
    assignments = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    assert (~mask).sum() == 3
    assert all(p.startswith("copies/") for p in sorted(assignments.loc[~mask, "path"])) or all(
        p.startswith("images/") for p in assignments.loc[~mask, "path"]
    )
    html = (out / "report.html").read_text()
    assert html.index("Audit: before you trust") < html.index("<h2>Groups</h2>")
    assert "byte-identical" in html


# --- units (fast, no data) ---------------------------------------------------------------


def test_utility_detects_dependence_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 3, 600)
    strong = utility((t == 0).astype(np.int64), t, 200, rng)
    noise = utility(rng.integers(0, 2, 600), t, 200, rng)
    assert strong.value > 0.5 and strong.p < 1e-6
    assert noise.value < 0.05 and noise.p > 0.01


def test_conditional_score_ignores_what_the_condition_explains() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 800)
    a = y.copy()  # A is the label: nothing left to detect
    b = y.copy()
    assert conditional_score(a, b, y, 100, rng).value == 0.0
    a2 = rng.integers(0, 2, 800)  # A independent of Y, B copies A 80% of the time
    b2 = np.where(rng.random(800) < 0.8, a2, 1 - a2)
    assert conditional_score(a2, b2, y, 100, rng).value > 0.2


def test_benjamini_hochberg_matches_definition() -> None:
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    # sorted 0.01, 0.03, 0.04, 0.5 -> p*m/rank = 0.04, 0.06, 0.0533, 0.5 -> running min from the top
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_discretise_bins_numbers_and_ignores_ids() -> None:
    ages = pd.Series(np.arange(100) % 60 + 20.0)
    binned = discretise("age", "metadata", ages)
    assert binned.kind == "binned" and len(binned.levels) == 5
    ids = discretise("patient", "metadata", pd.Series([f"P{i}" for i in range(100)]))
    assert "identifier" in ids.reason
    sizes = discretise("width", "file", pd.Series([224] * 90 + [512] * 10))
    assert sizes.levels == ["224", "512"]


def test_keep_mask_keeps_first_copy_and_all_items_of_a_file() -> None:
    mask = keep_mask(["h1", "h2", "h1", "h1", ""], ["a", "b", "c", "c", "d"])
    np.testing.assert_array_equal(mask, [True, True, False, False, True])


def test_near_threshold_is_calibrated_on_the_set() -> None:
    rng = np.random.default_rng(3)
    typical = 1 - np.exp(rng.normal(np.log(0.15), 0.3, 500))  # cosine ~0.85
    threshold = calibrate_near_threshold(typical, floor=0.0, ceiling=1.0)
    assert (typical >= threshold).mean() < 0.01
    assert threshold < 1 - 1e-3  # copies (cosine ~0.999) stay above it
    assert abs(robust_z(np.array([1.0, 1.0, 1.0, 1.0, 5.0]))[-1]) > 3
