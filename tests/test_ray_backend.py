"""The Ray embedding backend: same vectors and groups as the local one, a shared cache, skips.

One local 2-CPU Ray instance serves the whole module and is shut down at the end; Ray
embeds the folder once, every other run is a cache hit or a local run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medsort.demo import demo_folder
from medsort.embed.backends import LocalBackend, RayBackend
from medsort.results import FILE_HASH
from medsort.sorter import Sorter

ray = pytest.importorskip("ray")

N_IMAGES = 40
BROKEN = {"empty.png", "readme.txt", "truncated.png"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_worker_niceness", "0")  # as medsort's own ray.init does
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real demo images (chest X-ray and breast ultrasound) and three broken files."""
    folder = tmp_path_factory.mktemp("ray") / "input"
    folder.mkdir()
    sources = sorted(demo_folder().glob("*.png"))[:N_IMAGES]
    for source in sources:
        shutil.copy2(source, folder / source.name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image")
    good = sources[0].read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    return folder


def _sorter(backend: str, cache: Path | None) -> Sorter:
    chosen = RayBackend(num_workers=2) if backend == "ray" else LocalBackend()
    return Sorter(cache=cache, batch_size=8, progress=False, backend=chosen)


def test_ray_matches_local_shares_the_cache_and_skips(
    ray_cluster: None, folder: Path, tmp_path: Path
) -> None:
    ray_cache, local_cache = tmp_path / "ray-cache", tmp_path / "local-cache"

    on_ray = _sorter("ray", ray_cache).fit(folder)
    local = _sorter("local", local_cache).fit(folder)

    assert on_ray.n_embedded_files_ == local.n_embedded_files_ == N_IMAGES
    ray_result, local_result = on_ray.result_, local.result_
    assert list(ray_result.assignments["path"]) == list(local_result.assignments["path"])
    np.testing.assert_allclose(ray_result.embeddings, local_result.embeddings, atol=1e-5)
    # The pixel signatures and file hashes come back too: the audit need not read a file again.
    expected = {"stats", "descriptors", "hashes", FILE_HASH}
    assert set(ray_result.signatures) == set(local_result.signatures) == expected
    for name, array in local_result.signatures.items():
        np.testing.assert_array_equal(ray_result.signatures[name], array)
    np.testing.assert_array_equal(on_ray.labels_, local.labels_)
    np.testing.assert_array_equal(on_ray.modality_labels_, local.modality_labels_)
    assert set(ray_result.skipped["path"]) == set(local_result.skipped["path"]) == BROKEN
    assert list(ray_result.skipped["reason"]) == list(local_result.skipped["reason"])
    assert list((ray_cache / "ray-shards").glob("run-*/part-*.parquet"))

    # The cache is shared both ways: nothing is embedded again on either backend.
    assert _sorter("local", ray_cache).fit(folder).n_embedded_files_ == 0
    again = _sorter("ray", local_cache).fit(folder)
    assert again.n_embedded_files_ == 0
    np.testing.assert_array_equal(again.result_.embeddings, local_result.embeddings)
