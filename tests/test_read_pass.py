"""The read pass made cheaper (issue 13): the same values as before, and the embed stage's
decoding threads running the model themselves give the same rows as one batched model.

``tests/data/appearance_e00dc28.json``: :func:`~medsort.io.appearance.appearance` of 20
images of each dev set as commit e00dc28 (before these changes) computed them.
"""

from __future__ import annotations

import csv
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, shared_set
from scipy import ndimage

from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import embed_files, worker_batch
from medsort.io import appearance, scan_folder
from medsort.io.appearance import (
    GreyLevels,
    _field_of_view,
    _laplacian_difference,
    _magnitude_percentile,
    _object_area,
    downsample_uint8,
    grey,
)
from medsort.io.readers import ReadOptions, read_file
from medsort.preprocess import PreprocessConfig, to_model_input, to_tensor_batch

REFERENCE = Path(__file__).parent / "data" / "appearance_e00dc28.json"
SETS = sorted({key.split("/")[0] for key in json.loads(REFERENCE.read_text())})
"""The dev sets the reference covers (all six)."""


def _photos(seed: int) -> list[np.ndarray]:
    """uint8 images like the readers give: colour and grey, a black surround, a flat one."""
    rng = np.random.default_rng(seed)
    images = []
    for shape in [(160, 160, 3), (97, 131, 3), (64, 64), (160, 120), (5, 7, 3)]:
        image = rng.normal(120, 40, shape).clip(0, 255).astype(np.uint8)
        image[: shape[0] // 5] = 0  # a black band (field of view smaller than the image)
        images.append(image)
    images.append(np.full((40, 50, 3), 7, np.uint8))
    return images


def test_grey_levels_give_numpys_percentiles_and_grey() -> None:
    for image in _photos(0):
        levels = GreyLevels.of(image)
        gray = levels.grey()
        assert np.array_equal(
            gray, grey(image.astype(np.float32)) if image.ndim == 3 else image.astype(np.float32)
        )
        # One q as a number (float32 result), several as a list (float64), as numpy does.
        assert levels.percentiles(levels.counts(), [99])[0] == np.percentile(gray, 99)
        field = _field_of_view(gray)
        assert np.array_equal(levels.field_of_view(gray), field)
        if field.any():
            assert levels.percentiles(levels.counts(field), [95, 5]) == list(
                np.percentile(gray[field], [95, 5])
            )
            inside = gray[field]
            same = _object_area(inside, levels, field), _object_area(inside)
            assert same[0] == same[1] or all(math.isnan(v) for v in same)


def test_gradient_percentile_and_noise_response_equal_numpy_and_scipy() -> None:
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    for image in _photos(1):
        gray = GreyLevels.of(image).grey()
        if min(gray.shape) < 3:
            continue
        gy, gx = np.gradient(gray)
        assert _magnitude_percentile(gx, gy, 95) == np.percentile(np.hypot(gx, gy), 95)
        assert np.array_equal(
            _laplacian_difference(gray)[1:-1, 1:-1],
            ndimage.convolve(gray, kernel, mode="nearest")[1:-1, 1:-1],
        )


@pytest.mark.slow
def test_appearance_equals_the_values_before_on_real_images() -> None:
    """120 real images of the six dev sets: every attribute the same as at e00dc28."""
    reference = json.loads(REFERENCE.read_text())
    if not all((SHARED_DATA / key).is_file() for key in reference):
        pytest.skip("the dev sets are not available")
    assert len(SETS) == 6 and len(reference) == 120
    for key, before in reference.items():
        image = read_file(SHARED_DATA / key, ReadOptions(draft_size=448))[0]
        now = appearance.appearance(image)
        assert {k: None if math.isnan(v) else v for k, v in now.items()} == before, key


@pytest.mark.slow
def test_grey_levels_equal_numpy_on_real_images() -> None:
    """The intermediate values themselves (before rounding), on 40 images of each set."""
    for name in SETS:
        folder = shared_set(name)
        with open(folder / "labels.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        rows = rows[:: max(1, len(rows) // 40)][:40]
        for row in rows:
            small = downsample_uint8(read_file(folder / row["path"])[0].pixels)
            levels = GreyLevels.of(small)
            gray = levels.grey()
            field = _field_of_view(gray)
            assert np.array_equal(levels.field_of_view(gray), field)
            gy, gx = np.gradient(gray)
            assert _magnitude_percentile(gx[field], gy[field], 95) == np.percentile(
                np.hypot(gx, gy)[field], 95
            )


# --------------------------------------------------------------- embedding in the workers


class _MeanEncoder:
    """A stand-in model: each image's channel means; ``in_workers`` offers the one-core path."""

    name = "mean-encoder"
    config = PreprocessConfig(size=32)
    dim = 3

    def __init__(self, in_workers: bool, fail: bool = False) -> None:
        self.worker_batch = 2 if in_workers else None
        self.fail = fail
        self.calls = 0

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.mean(axis=(2, 3)).astype(np.float32)

    def embed_one_core(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the model broke")
        return self.embed(batch)


def test_workers_embedding_gives_the_same_rows_as_one_model(demo_images: Path) -> None:
    """Rows follow the files, a broken file is skipped, the vectors belong to their image."""
    (demo_images / "broken.png").write_bytes(b"not an image")
    files = scan_folder(demo_images)
    results = {}
    for in_workers in (False, True):
        encoder = _MeanEncoder(in_workers)
        results[in_workers] = embed_files(
            files, encoder, EmbeddingCache(None), progress=False, batch_size=32
        )
        assert (encoder.calls > 0) == in_workers
    before, now = results[False], results[True]
    assert [p.name for p, _ in now.skipped] == ["broken.png"]
    assert now.files == before.files and len(now.files) == len(files) - 1
    assert np.array_equal(now.vectors, before.vectors)
    for name in now.views:
        assert np.array_equal(now.views[name], before.views[name])
    assert [item.meta for item in now.items] == [item.meta for item in before.items]


def test_a_model_failing_in_a_worker_is_raised_not_hung(demo_images: Path) -> None:
    with pytest.raises(RuntimeError, match="the model broke"):
        embed_files(
            scan_folder(demo_images),
            _MeanEncoder(in_workers=True, fail=True),
            EmbeddingCache(None),
            progress=False,
        )


def test_onnx_workers_path_gives_the_batched_features(demo_images: Path) -> None:
    """The default encoder on a CPU embeds in the workers, bit for bit as a batch of 32."""
    files = scan_folder(demo_images)
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    assert worker_batch(encoder) == 2
    now = embed_files(files, encoder, EmbeddingCache(None), progress=False)
    inputs = [read_file(f, ReadOptions(draft_size=448))[0].rgb() for f in files]
    batch = to_tensor_batch([to_model_input(x, encoder.config) for x in inputs], encoder.config)
    assert np.array_equal(now.vectors, encoder.embed(batch))


def test_a_rerun_with_only_unreadable_files_pending_loads_no_model(
    demo_images: Path, tmp_path: Path
) -> None:
    """A cached re-run still meets the files that were skipped (a labels.csv): reading
    them must not load the model graph (half a second of a 2-3 s re-run)."""
    files = scan_folder(demo_images)[:3]
    notes = tmp_path / "labels.csv"
    notes.write_text("path,label\na.png,x\n")
    cache = EmbeddingCache(tmp_path / "cache")
    first = create_encoder("efficientnet_lite0", device="cpu")
    embed_files([*files, notes], first, cache, progress=False)
    assert first._one_core is not None  # images were embedded in the workers

    again = create_encoder("efficientnet_lite0", device="cpu")
    loading = threading.Event()
    again.prepare_one_core = loading.set  # what the embed stage would start in a thread
    rerun = embed_files([*files, notes], again, cache, progress=False)
    assert not loading.wait(1.0)
    assert [path.name for path, _ in rerun.skipped] == ["labels.csv"]
    assert "not a supported image format" in rerun.skipped[0][1]
    assert rerun.n_embedded_files == 0 and len(rerun.files) == 3


def test_one_decoding_thread_measures_at_a_time(
    demo_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measuring (many small GIL-trading NumPy calls) is serialised between the decoding
    threads, while the rows stay those of measuring freely."""
    files = scan_folder(demo_images)
    free = embed_files(files, _MeanEncoder(True), EmbeddingCache(None), progress=False)
    measure = appearance.appearance
    inside, most = [0], [0]
    guard = threading.Lock()

    def counted(image):  # noqa: ANN001, ANN202
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            threading.Event().wait(0.005)  # lets another thread in, were it allowed
            return measure(image)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(appearance, "appearance", counted)
    serial = embed_files(
        files, _MeanEncoder(True), EmbeddingCache(None), progress=False, n_readers=2
    )
    assert most[0] == 1
    assert np.array_equal(serial.vectors, free.vectors)
    assert [item.meta for item in serial.items] == [item.meta for item in free.items]
