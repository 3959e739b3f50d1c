"""Hand-crafted views: computed per image, cached, carried to the grouper and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsort.embed.cache import CachedFile, EmbeddingCache
from medsort.embed.views import compute_views, view_names
from medsort.group import TwoLevelGrouper, cluster_accuracy
from medsort.group.multiview import ViewBlocks


def test_views_are_small_finite_and_see_colour_and_sharpness(demo_images: Path) -> None:
    image = np.asarray(Image.open(sorted(demo_images.glob("*.png"))[0]).convert("RGB"))
    views = compute_views(image)
    assert list(views) == view_names() == ["colour", "texture"]
    assert all(
        v.dtype == np.float32 and v.ndim == 1 and np.isfinite(v).all() for v in views.values()
    )
    assert sum(v.size for v in views.values()) < 200

    reddish = image.copy()
    reddish[..., 1:] //= 2
    assert not np.allclose(compute_views(reddish)["colour"], views["colour"])
    blurred = np.asarray(Image.fromarray(image).resize((8, 8)).resize(image.shape[:2][::-1]))
    assert compute_views(blurred)["texture"][-2] < views["texture"][-2]  # Laplacian energy


def test_cache_keeps_views_per_item(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    views = {"colour": np.arange(6, dtype=np.float32).reshape(2, 3), "texture": np.ones((2, 2))}
    cache.put("k", CachedFile([{"item": "a"}, {"item": "b"}], np.zeros((2, 4)), views))
    cache.close()
    back = EmbeddingCache(tmp_path).get("k")
    assert back is not None and list(back.views) == ["colour", "texture"]
    np.testing.assert_array_equal(back.views["colour"], views["colour"])
    assert back.views["texture"].shape == (2, 2)


def test_cache_token_names_the_views() -> None:
    from medsort.embed.stream import cache_token
    from medsort.embed.views import views_token
    from medsort.io.readers import ReadOptions

    assert cache_token(ReadOptions()).endswith(views_token())
    assert views_token() not in cache_token(ReadOptions(), views=False)


def _two_groups(
    n: int = 300, seed: int = 0
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """CNN-like features that split the two groups with errors, a colour view that is clean."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], n // 2)
    X = np.abs(rng.normal(size=(n, 64))) + 0.6 * truth[:, None] * (np.arange(64) < 8)
    X[rng.random(n) < 0.15, :8] += 1.0  # CNN noise: some rows look like group 1
    colour = rng.normal(size=(n, 12)) + 3.0 * truth[:, None]
    texture = rng.normal(size=(n, 6))
    return X.astype(np.float32), {"colour": colour, "texture": texture}, truth


def test_views_join_the_grouping_and_are_recorded() -> None:
    X, views, truth = _two_groups()
    before = TwoLevelGrouper(n_clusters=2, view_weight=0.0, random_state=0).fit(X, views=views)
    after = TwoLevelGrouper(n_clusters=2, view_weight=0.5, random_state=0).fit(X, views=views)

    assert cluster_accuracy(truth, after.labels_) > cluster_accuracy(truth, before.labels_)
    used = after.views_used_[0]
    assert used["views"] == ["cnn", "colour", "texture"] and used["k_from"] == "cnn"
    assert used["agreement"]["colour"] > used["agreement"]["texture"]
    assert before.views_used_[0] == {"views": ["cnn"], "weights": {"cnn": 1.0}, "k_from": "cnn"}
    json.dumps(after.views_used_)  # goes into run.json

    np.testing.assert_array_equal(after.predict(X, views=views), after.labels_)
    with pytest.raises(ValueError, match="views missing"):
        after.predict(X)


def test_views_must_match_the_rows() -> None:
    X, views, _ = _two_groups()
    with pytest.raises(ValueError, match="rows"):
        TwoLevelGrouper(random_state=0).fit(X, views={"colour": views["colour"][:10]})


def test_view_blocks_weigh_each_view_equally() -> None:
    rng = np.random.default_rng(1)
    views = {"a": rng.normal(size=(200, 40)) * 100, "b": rng.normal(size=(200, 5))}
    blocks = ViewBlocks(n_components=4, weight=0.5).fit(views)
    parts = blocks.blocks(blocks.transform(views))
    for block in parts.values():
        assert np.sqrt((block**2).sum(axis=1).mean()) == pytest.approx(0.5, rel=1e-4)


def test_sort_records_views_in_run_json(demo_images: Path, tmp_path: Path) -> None:
    from medsort.pipeline import sort_folder
    from medsort.sorter import Sorter

    out = sort_folder(
        demo_images, tmp_path / "out", Sorter(cache=tmp_path / "c", progress=False), audit=False
    )
    run = json.loads((out / "run.json").read_text())
    assert len(run["views_per_modality_group"]) == run["n_modality_groups"]
    assert all(used["views"][0] == "cnn" for used in run["views_per_modality_group"])


def test_view_that_only_adds_noise_loses_the_vote() -> None:
    """A colour view whose strong two-way split has nothing to do with the groups (a scanner
    or stain batch) must not decide the grouping; the vote falls back on the CNN."""
    rng = np.random.default_rng(3)
    n = 300
    truth = np.repeat([0, 1], n // 2)
    X = np.abs(rng.normal(size=(n, 64))) + 1.5 * truth[:, None] * (np.arange(64) < 8)
    batch = rng.permutation(truth)  # unrelated to the groups
    colour = rng.normal(size=(n, 12)) + 4.0 * batch[:, None]
    texture = rng.normal(size=(n, 6))
    views = {"colour": colour, "texture": texture}

    grouper = TwoLevelGrouper(n_clusters=2, random_state=0).fit(X.astype(np.float32), views=views)

    used = grouper.views_used_[0]
    assert used["weights"].get("colour", 0.0) < 0.5
    assert cluster_accuracy(truth, grouper.labels_) > 0.95
    assert len(used["candidates"]) == 6 and used["candidates"][0]["weights"] == {"cnn": 1.0}
    assert (grouper.predict(X, views=views) == grouper.labels_).mean() > 0.95


def test_most_agreed_picks_the_median_partition() -> None:
    from medsort.group.multiview import candidate_weightings, most_agreed

    a = np.repeat([0, 1], 50)
    near = a.copy()
    near[:3] = 1
    other = np.tile([0, 1], 50)
    best, means = most_agreed([other, near, a, a.copy()])
    assert best == 2 and means[2] > means[1] > means[0]  # ties go to the earlier one (2, not 3)
    assert candidate_weightings(["c", "t"], 0.2, ()) == [{"c": 0.2, "t": 0.2}]
    assert len(candidate_weightings(["c", "t"], 0.2, (0.5, 1.0))) == 6


def _two_groups_one_split_in_two(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Truth of two groups; a reference space that shows just those two; an 'adapted' space
    that also splits group 1 in two far-apart halves (what SimCLR can do to a small set)."""
    truth = np.repeat([0, 1], n // 2)
    half = rng.integers(0, 2, n) * truth
    base = np.abs(rng.normal(size=(n, 64)))
    reference = base + 3.0 * truth[:, None] * (np.arange(64) < 8)
    adapted = base + 3.0 * truth[:, None] * (np.arange(64) < 8)
    adapted += 6.0 * half[:, None] * ((np.arange(64) >= 8) & (np.arange(64) < 16))
    return truth, reference.astype(np.float32), adapted.astype(np.float32)


def test_reference_features_decide_the_number_of_groups() -> None:
    """Next to an adapted encoder, the number of groups is counted on the ImageNet
    (reference) features: a split only the adapted space makes must not add a group,
    and without the reference it does (so the test can tell the two apart)."""
    truth, reference, adapted = _two_groups_one_split_in_two(np.random.default_rng(5), 300)

    alone = TwoLevelGrouper(random_state=0).fit(adapted)
    with_reference = TwoLevelGrouper(random_state=0).fit(adapted, reference=reference)

    assert alone.n_groups_ == 3
    assert with_reference.n_groups_ == 2
    assert cluster_accuracy(truth, with_reference.labels_) > 0.95
    assert with_reference.views_used_[0]["k_from"] == "reference"
    assert (with_reference.predict(adapted) == with_reference.labels_).mean() > 0.95


def test_groups_are_formed_in_the_main_features_not_the_reference() -> None:
    """The reference only counts: when it sees the groups barely (noise) but gives the same
    count, the groups still come from the main features."""
    rng = np.random.default_rng(6)
    truth, _, _ = _two_groups_one_split_in_two(rng, 300)
    main = np.abs(rng.normal(size=(300, 64))) + 3.0 * truth[:, None] * (np.arange(64) < 8)
    noisy = np.abs(rng.normal(size=(300, 64))) + 3.0 * rng.permutation(truth)[:, None] * (
        np.arange(64) < 8
    )

    grouper = TwoLevelGrouper(random_state=0).fit(
        main.astype(np.float32), reference=noisy.astype(np.float32)
    )

    assert grouper.n_groups_ == 2
    assert cluster_accuracy(truth, grouper.labels_) > 0.95


def test_reference_must_match_the_rows() -> None:
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="reference has 39 rows for 40"):
        TwoLevelGrouper().fit(X, reference=X[:39])
