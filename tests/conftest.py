"""Shared fixtures: small folders of real images (the bundled MedMNIST demo) and broken files."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsort.demo import demo_folder, demo_labels
from medsort.results import ASSIGNMENT_COLUMNS, SortResult, skipped_table

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_set(name: str) -> Path:
    """A real labelled set from ``../shared/data``; the test is skipped where it is absent.

    The one way a test asks for real data (mark it ``slow`` too)."""
    folder = SHARED_DATA / name
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"real data set {name} not available at {folder}")
    return folder


def make_result(
    embeddings: np.ndarray | None = None,
    modality_groups: Sequence[int] | np.ndarray | None = None,
    groups: Sequence[int] | np.ndarray | None = None,
    paths: Sequence[str] | None = None,
    input_dir: Path | str | None = None,
    encoder: str = "test-encoder",
    *,
    items: Sequence[str] | None = None,
    item_columns: dict[str, Sequence[Any]] | None = None,
    distance: Sequence[float] | np.ndarray | float = 0.0,
    run: dict[str, Any] | None = None,
) -> SortResult:
    """A :class:`SortResult` as a sort would hand it on, built from what a test cares about.

    The number of rows comes from ``embeddings``, ``paths`` or ``groups`` (the first given);
    groups and modality groups default to 0, paths to ``img_000.png``..., embeddings to
    zeros. ``item_columns`` adds metadata columns to ``items``; ``run`` adds to or replaces
    keys of ``run.json`` (input folder, encoder, group counts, default read options).
    """
    given = next(v for v in (embeddings, paths, groups, [0]) if v is not None)
    n = len(given)
    groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    modality = np.zeros(n, dtype=int) if modality_groups is None else np.asarray(modality_groups)
    paths = [f"img_{i:03d}.png" for i in range(n)] if paths is None else list(paths)
    items = [""] * n if items is None else list(items)
    embeddings = np.zeros((n, 2)) if embeddings is None else np.asarray(embeddings)
    assignments = pd.DataFrame(
        {"path": paths, "item": items, "modality_group": modality, "group": groups,
         "distance": distance, "representative": False, "map_x": 0.0, "map_y": 0.0},
        columns=ASSIGNMENT_COLUMNS,
    )  # fmt: skip
    saved_run = {
        "input_dir": str(input_dir if input_dir is not None else "."),
        "encoder": encoder,
        "read_options": {},
        "n_modality_groups": int(modality.max()) + 1 if n else 0,
        "n_groups": int(groups.max()) + 1 if n else 0,
        **(run or {}),
    }
    return SortResult(
        assignments=assignments,
        items=pd.DataFrame({"path": paths, "item": items, **(item_columns or {})}),
        embeddings=embeddings.astype(np.float32),
        skipped=skipped_table([]),
        run=saved_run,
    )


@pytest.fixture(scope="session", autouse=True)
def private_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never read or write the user's embedding cache (~/.cache/medsort)."""
    folder = tmp_path_factory.mktemp("medsort-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("MEDSORT_CACHE_DIR", str(folder))
    yield folder
    patcher.undo()


@pytest.fixture
def demo_images(tmp_path: Path) -> Path:
    """A private copy of 24 demo images (real 28x28 chest X-ray and breast ultrasound)."""
    folder = tmp_path / "input"
    folder.mkdir()
    for source in sorted(demo_folder().glob("*.png"))[:24]:
        shutil.copy2(source, folder / source.name)
    return folder


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def write_two_modalities(folder: Path) -> Path:
    """24 real chest X-rays (grey) and 24 synthetic stained tiles (colour) into ``folder``."""
    folder.mkdir(parents=True)
    with open(demo_labels(), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"].startswith("chest")][:24]
    for row in rows:
        shutil.copy2(demo_folder() / row["path"], folder / row["path"])
    rng = np.random.default_rng(0)
    for i in range(24):
        tint = np.array([200, 120, 180]) if i % 2 else np.array([150, 60, 140])
        pixels = np.clip(tint + rng.normal(0, 40, (28, 28, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"stain_{i:02d}.png")
    return folder


@pytest.fixture
def two_modalities(tmp_path: Path) -> Path:
    """24 real chest X-rays (grey) and 24 synthetic stained tiles (colour)."""
    return write_two_modalities(tmp_path / "input")
