"""Shared fixtures: small folders of real images (the bundled MedMNIST demo) and broken files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsort.demo import demo_folder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_set(name: str) -> Path:
    """A real labelled set from ``../shared/data``; the test is skipped where it is absent."""
    folder = SHARED_DATA / name
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"real data set {name} not available at {folder}")
    return folder


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
