"""The Sorter as a scikit-learn estimator: parameters, clone, the CLI's options, predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sklearn.base import clone

from medsort.cli import build_parser, sorter_from_args
from medsort.embed.backends import LocalBackend, RayBackend
from medsort.embed.cache import EmbeddingCache, open_cache
from medsort.group import TwoLevelGrouper
from medsort.sorter import Sorter


def test_parameters_of_the_grouper_and_backend_are_reachable() -> None:
    sorter = Sorter(grouper=TwoLevelGrouper(n_clusters=3), backend=RayBackend(num_workers=2))
    params = sorter.get_params()
    assert params["grouper__n_clusters"] == 3 and params["backend__num_workers"] == 2
    sorter.set_params(grouper__n_clusters=5, cache=False)
    twin = clone(sorter)
    assert twin.grouper is not sorter.grouper
    assert twin.get_params()["grouper__n_clusters"] == 5 and twin.cache is False


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["--k", "4", "--seed", "7"], {"grouper__n_clusters": 4, "grouper__random_state": 7}),
        (["--n-clusters", "4", "--random-state", "7"], {"grouper__n_clusters": 4}),
        (["--no-cache", "--batch-size", "8", "--no-views"], {"cache": False, "views": False}),
        (["--cache-dir", "c", "--quiet", "--device", "cpu"], {"cache": Path("c"), "device": "cpu"}),
        (["--backend", "ray", "--address", "auto", "--workers", "3"], {"backend__num_workers": 3}),
        (["--backend", "ray", "--ray-address", "auto"], {"backend__address": "auto"}),
    ],
)
def test_sort_options_become_the_sorter_parameters(words: list[str], expected: dict) -> None:
    args = build_parser().parse_args(["sort", "in", "--out", "out", *words])
    params = sorter_from_args(args).get_params()
    assert {name: params[name] for name in expected} == expected
    assert params["progress"] is ("--quiet" not in words)


def test_default_options_make_the_default_sorter() -> None:
    args = build_parser().parse_args(["sort", "in", "--out", "out"])
    sorter = sorter_from_args(args)
    assert isinstance(sorter.backend, LocalBackend) and sorter.cache is None
    assert sorter.grouper.get_params() == TwoLevelGrouper().get_params()
    defaults = Sorter().get_params(deep=False)
    for name in ("encoder", "batch_size", "drop_duplicates", "device", "views", "progress"):
        assert getattr(sorter, name) == defaults[name], name


def test_cache_parameter_names_a_place(tmp_path: Path) -> None:
    cache, opened = open_cache(tmp_path / "c")
    assert opened and cache.path == tmp_path / "c" / cache.path.name
    cache.close()
    none, _ = open_cache(False)
    assert none.path is None
    mine = EmbeddingCache(None)
    assert open_cache(mine) == (mine, False)
    with pytest.raises(ValueError, match="cache=True"):
        open_cache(True)


def test_predict_gives_one_row_per_input_and_marks_unreadable(
    demo_images: Path, tmp_path: Path
) -> None:
    sorter = Sorter(cache=tmp_path / "cache", progress=False).fit(demo_images)
    images = sorted(demo_images.glob("*.png"))[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    copy = tmp_path / "copy.png"
    shutil.copy2(images[0], copy)
    table = sorter.predict([images[1], broken, copy, images[2]])
    assert table["path"].tolist() == [str(p) for p in (images[1], broken, copy, images[2])]
    assert table["group"].iloc[1] == -1 and table["reason"].iloc[1] != ""
    assert (table.drop(index=1)["group"] >= 0).all() and (table.drop(index=1)["reason"] == "").all()
    fitted = dict(zip(sorter.result_.assignments["path"], sorter.labels_, strict=True))
    assert table["group"].iloc[2] == fitted[images[0].name]  # a copy goes where its original went


def test_a_backend_that_is_not_one_is_refused(demo_images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LocalBackend"):
        Sorter(backend="ray", cache=False, progress=False).fit(demo_images)
