"""The embed stage: streaming, the cache (nothing embedded twice) and skipped files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medsort.demo import demo_labels
from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder, list_encoders
from medsort.embed.stream import embed_files
from medsort.io import ReadOptions, scan_folder
from medsort.preprocess import to_model_input, to_tensor_batch


class CountingEncoder:
    """Wraps the real default encoder and counts the images it embeds."""

    def __init__(self) -> None:
        self.inner = create_encoder("efficientnet_lite0")
        self.name, self.config, self.dim = self.inner.name, self.inner.config, self.inner.dim
        self.calls = 0

    def embed(self, batch):  # noqa: ANN001, ANN201
        self.calls += len(batch)
        return self.inner.embed(batch)


def test_the_default_encoder_embeds_real_images_as_it_says(demo_images: Path) -> None:
    """Listed, and its vectors have the size it declares, are the same for the same image
    and differ between a chest X-ray and a breast ultrasound."""
    assert "efficientnet_lite0" in list_encoders()
    encoder = create_encoder("efficientnet_lite0")
    labels = pd.read_csv(demo_labels()).set_index("path")["label"]
    files = sorted(demo_images.glob("*.png"))
    chest = next(f for f in files if labels[f.name].startswith("chest"))
    breast = next(f for f in files if labels[f.name].startswith("breast"))
    size = encoder.config.size
    batch = to_tensor_batch(
        [to_model_input(np.asarray(Image.open(f).convert("RGB")), encoder.config)
         for f in (chest, breast, chest)],
        encoder.config,
    )  # fmt: skip
    vectors = np.asarray(encoder.embed(batch))
    assert batch.shape[-2:] == (size, size)
    assert vectors.shape == (3, encoder.dim) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], vectors[2], rtol=1e-5, atol=1e-6)
    cosine = vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1])
    assert cosine < 0.99


def test_zoomed_encoder_sees_the_same_image_at_twice_the_scale(
    demo_images: Path, cache_dir: Path
) -> None:
    """lite0_448 runs lite0's weights on a 448 px input: a related but different
    embedding of the same size, under its own cache key."""
    plain, zoomed = create_encoder("efficientnet_lite0"), create_encoder("efficientnet_lite0_448")
    assert zoomed.config.size == 448 and zoomed.dim == plain.dim
    assert zoomed.name != plain.name  # part of every cache key
    files = scan_folder(demo_images)[:4]
    vectors = {
        e.name: embed_files(
            files, e, EmbeddingCache(cache_dir), batch_size=4, progress=False
        ).vectors
        for e in (plain, zoomed)
    }
    a, b = vectors["efficientnet_lite0"], vectors["efficientnet_lite0_448"]
    assert a.shape == b.shape and np.isfinite(b).all()
    a, b = (
        a / np.linalg.norm(a, axis=1, keepdims=True),
        b / np.linalg.norm(b, axis=1, keepdims=True),
    )
    cosine = a @ b.T
    same, other = np.diag(cosine), cosine[~np.eye(len(a), dtype=bool)]
    assert (same < 0.999).all()  # a different view of the image...
    assert same.mean() > other.mean()  # ...still closer to itself than to the others


def test_second_run_embeds_nothing_and_new_files_only(demo_images: Path, cache_dir: Path) -> None:
    encoder = CountingEncoder()
    files = scan_folder(demo_images)
    first = embed_files(files, encoder, EmbeddingCache(cache_dir), batch_size=8, progress=False)
    assert encoder.calls == len(files) == first.n_embedded_files
    assert first.vectors.shape == (len(files), 1280)

    encoder.calls = 0
    second = embed_files(files, encoder, EmbeddingCache(cache_dir), batch_size=8, progress=False)
    assert encoder.calls == 0 and second.n_embedded_files == 0
    np.testing.assert_array_equal(first.vectors, second.vectors)

    added = demo_images / "added"
    added.mkdir()
    for index, source in enumerate(files[:3]):  # new content: flipped copies
        flipped = np.asarray(Image.open(source))[::-1].copy()
        Image.fromarray(flipped).save(added / f"new_{index}.png")
    files = scan_folder(demo_images)
    third = embed_files(files, encoder, EmbeddingCache(cache_dir), batch_size=8, progress=False)
    assert encoder.calls == 3 and third.n_embedded_files == 3
    assert len(third.items) == len(files)


def test_cache_is_keyed_by_content_not_name(demo_images: Path, cache_dir: Path) -> None:
    encoder = CountingEncoder()
    files = scan_folder(demo_images)[:4]
    embed_files(files, encoder, EmbeddingCache(cache_dir), progress=False)
    renamed = demo_images / "renamed.png"
    shutil.copy2(files[0], renamed)
    encoder.calls = 0
    result = embed_files([renamed], encoder, EmbeddingCache(cache_dir), progress=False)
    assert encoder.calls == 0 and result.vectors.shape == (1, 1280)


def test_read_options_are_part_of_the_key(demo_images: Path, cache_dir: Path) -> None:
    encoder = CountingEncoder()
    files = scan_folder(demo_images)[:2]
    embed_files(files, encoder, EmbeddingCache(cache_dir), progress=False)
    encoder.calls = 0
    embed_files(
        files, encoder, EmbeddingCache(cache_dir), ReadOptions(window="lung"), progress=False
    )
    assert encoder.calls == 2


def test_broken_files_are_skipped_and_the_rest_embedded(demo_images: Path) -> None:
    (demo_images / "empty.png").write_bytes(b"")
    (demo_images / "readme.txt").write_text("not an image")
    good = sorted(demo_images.glob("demo_*.png"))[0].read_bytes()
    (demo_images / "truncated.png").write_bytes(good[: len(good) // 3])
    files = scan_folder(demo_images)
    before = {path: path.read_bytes() for path in files}
    result = embed_files(files, CountingEncoder(), EmbeddingCache(None), progress=False)
    reasons = {path.name: reason for path, reason in result.skipped}
    assert set(reasons) == {"empty.png", "readme.txt", "truncated.png"}
    assert "empty" in reasons["empty.png"]
    assert "not a supported image format" in reasons["readme.txt"]
    assert len(result.items) == len(files) - 3
    assert all(path.read_bytes() == data for path, data in before.items())


def test_same_image_same_vector_in_any_batch(demo_images: Path) -> None:
    encoder = create_encoder("efficientnet_lite0")
    files = scan_folder(demo_images)[:5]
    together = embed_files(files, encoder, EmbeddingCache(None), batch_size=5, progress=False)
    alone = embed_files(files[2:3], encoder, EmbeddingCache(None), batch_size=1, progress=False)
    np.testing.assert_allclose(together.vectors[2], alone.vectors[0], atol=1e-4)


def test_pad_resize_keeps_the_whole_image() -> None:
    config = create_encoder("efficientnet_lite0").config
    wide = np.full((50, 100, 3), 255, dtype=np.uint8)
    out = to_model_input(wide, config)
    assert out.shape == (224, 224, 3)
    rows = np.flatnonzero(out[:, 112, 0] > 0)
    assert rows.min() == 56 and rows.max() == 167  # letterboxed, nothing cropped
    assert (out[:, 0, 0] > 0).sum() > 0 and (out[:, -1, 0] > 0).sum() > 0


def test_crop_pct_resizes_the_shorter_side_then_crops_the_centre() -> None:
    from medsort.preprocess import PreprocessConfig

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 375, 3), dtype=np.uint8)
    config = PreprocessConfig(size=224, resize_mode="crop", crop_pct=0.875)
    by_hand = Image.fromarray(image).resize((320, 256), Image.Resampling.BICUBIC)
    expected = np.asarray(by_hand)[16:240, 48:272]  # DINOv2's 256 -> centre 224
    np.testing.assert_array_equal(to_model_input(image, config), expected)
    whole = PreprocessConfig(size=224, resize_mode="crop")  # crop_pct 1: shorter side 224
    assert not np.array_equal(to_model_input(image, whole), expected)


def test_squash_ignores_the_aspect_ratio() -> None:
    from medsort.preprocess import PreprocessConfig

    image = np.zeros((50, 100, 3), dtype=np.uint8)
    image[:, 50:] = 255  # right half white
    out = to_model_input(image, PreprocessConfig(size=32, resize_mode="squash"))
    assert out.shape == (32, 32, 3)
    assert out[:, :14].max() == 0 and out[:, 18:].min() == 255  # nothing padded or cut
