"""Remembered results (:mod:`medsort.memo`): a re-run of the same sort takes the grouping
and the audit's tests from the memo, writes exactly the same outputs, and any change of
input misses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_set
from PIL import Image

from medsort.cli import main
from medsort.demo import demo_folder
from medsort.group import TwoLevelGrouper
from medsort.group.memoised import fit_memoised
from medsort.memo import MEMO_DIR, Memo, digest

# ---- the store ----------------------------------------------------------------------------


def test_entries_round_trip_and_bad_files_are_ignored(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    arrays = {"labels": np.arange(5), "map": np.random.default_rng(0).normal(size=(5, 2))}
    fields = {"views": ["cnn"], "weights": {"cnn": 1.0}, "p": float("nan")}
    memo.save("group", "k1", arrays, fields)
    loaded, got = memo.load("group", "k1")
    assert set(loaded) == {"labels", "map"}
    assert np.array_equal(loaded["map"], arrays["map"]) and loaded["map"].dtype == np.float64
    assert got["views"] == ["cnn"] and np.isnan(got["p"])
    assert memo.load("group", "other") is None
    entry = tmp_path / MEMO_DIR / "group-k1.npz"
    shutil.copy(entry, tmp_path / MEMO_DIR / "group-k2.npz")
    assert memo.load("group", "k2") is None  # an entry kept under another key
    entry.write_bytes(entry.read_bytes()[:100])  # truncated (a killed copy)
    assert memo.load("group", "k1") is None
    entry.write_bytes(b"not a zip at all")
    assert memo.load("group", "k1") is None
    assert not list((tmp_path / MEMO_DIR).glob("*.tmp"))


def test_a_write_that_fails_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a run killed while writing: no entry, no temporary file, and the run goes on."""
    memo = Memo(tmp_path)
    memo.save("group", "old", {"a": np.zeros(3)}, {})

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    memo.save("group", "new", {"a": np.ones(3)}, {})
    monkeypatch.undo()
    assert memo.load("group", "new") is None
    assert sorted(p.name for p in (tmp_path / MEMO_DIR).iterdir()) == ["group-old.npz"]
    (tmp_path / "file").write_text("not a folder")
    Memo(tmp_path / "file").save("group", "k", {"a": np.zeros(1)}, {})  # cannot write: no error


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    (tmp_path / MEMO_DIR).mkdir()
    np.savez(tmp_path / MEMO_DIR / "group-k.npz", evil=np.array([object()], dtype=object))
    assert memo.load("group", "k") is None


def test_no_folder_remembers_nothing(tmp_path: Path) -> None:
    memo = Memo(None)
    memo.save("group", "k", {"a": np.zeros(2)}, {})
    assert memo.load("group", "k") is None and not memo.enabled


def test_digest_follows_every_input() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    base = digest("group", x, {"colour": x[:, :2]}, {"n_clusters": None})
    changed = x.copy()
    changed[3, 2] += 1e-6
    others = [
        digest("group", changed, {"colour": x[:, :2]}, {"n_clusters": None}),
        digest("group", x.astype(np.float64), {"colour": x[:, :2]}, {"n_clusters": None}),
        digest("group", x[:3], {"colour": x[:3, :2]}, {"n_clusters": None}),
        digest("group", x, {}, {"n_clusters": None}),
        digest("group", x, {"texture": x[:, :2]}, {"n_clusters": None}),
        digest("group", x, {"colour": x[:, :2]}, {"n_clusters": 3}),
        digest("audit", x, {"colour": x[:, :2]}, {"n_clusters": None}),
    ]
    assert base == digest("group", x.copy(), {"colour": x[:, :2].copy()}, {"n_clusters": None})
    assert len({base, *others}) == len(others) + 1
    big = np.zeros(5000)
    bigger = big.copy()
    bigger[2500] = 1.0  # both reprs are "array([0., 0., ..., 0.])"
    assert digest("x", [big, 1]) != digest("x", [bigger, 1])
    with pytest.raises(TypeError):
        digest("x", {"nested": [big]})


# ---- the grouping -------------------------------------------------------------------------


def _blobs(n: int = 150, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, 24))
    X = (centres[np.arange(n) % 3] + rng.normal(size=(n, 24))).astype(np.float32)
    views = {"colour": rng.normal(size=(n, 6)).astype(np.float32)}
    return X, views


def _entries(folder: Path, kind: str) -> int:
    return len(list((folder / MEMO_DIR).glob(f"{kind}-*.npz")))


GROUPER_OUTPUTS = ("labels_", "modality_labels_", "distances_", "map_2d_", "group_modality_")


def test_memoised_grouping_equals_a_fit_and_still_predicts(tmp_path: Path) -> None:
    X, views = _blobs()
    memo = Memo(tmp_path)
    fitted = fit_memoised(TwoLevelGrouper(), X, views, memo)
    assert _entries(tmp_path, "group") == 1
    again = fit_memoised(TwoLevelGrouper(), X, views, memo)
    assert not hasattr(again, "modality_models_")  # taken from the memo, not fitted
    for name in GROUPER_OUTPUTS:
        assert np.array_equal(getattr(again, name), getattr(fitted, name)), name
    assert json.dumps(again.views_used_) == json.dumps(fitted.views_used_)
    assert (again.n_groups_, again.n_modalities_) == (fitted.n_groups_, fitted.n_modalities_)
    new_rows = X[:7] + 0.01
    new_views = {name: array[:7] for name, array in views.items()}
    assert np.array_equal(
        again.predict(new_rows, views=new_views), fitted.predict(new_rows, views=new_views)
    )
    assert np.array_equal(again.labels_, fitted.labels_)


@pytest.mark.parametrize(
    "change",
    ["one row more", "n_clusters", "random_state", "other vectors", "no views", "view_weight"],
)
def test_any_change_of_input_misses(tmp_path: Path, change: str) -> None:
    X, views = _blobs()
    memo = Memo(tmp_path)
    fit_memoised(TwoLevelGrouper(), X, views, memo)
    grouper = TwoLevelGrouper()
    if change == "one row more":
        X, views = _blobs(151)
    elif change == "n_clusters":
        grouper.set_params(n_clusters=4)
    elif change == "random_state":
        grouper.set_params(random_state=1)
    elif change == "other vectors":  # another encoder
        X = X[:, ::-1].copy()
    elif change == "no views":
        views = {}
    else:
        grouper.set_params(view_weight=0.3)
    fresh = fit_memoised(grouper, X, views, memo)
    assert hasattr(fresh, "modality_models_")  # fitted, not remembered
    assert _entries(tmp_path, "group") == 2


def test_reference_features_are_part_of_the_key(tmp_path: Path) -> None:
    """``sort --adapt`` counts the groups on the ImageNet features: another reference
    must miss, the same one hit, and a hit still predicts like a fresh fit."""
    X, views = _blobs()
    reference = X[:, ::-1].copy()
    memo = Memo(tmp_path)
    fitted = fit_memoised(TwoLevelGrouper(), X, views, memo, reference=reference)
    again = fit_memoised(TwoLevelGrouper(), X, views, memo, reference=reference)
    assert not hasattr(again, "modality_models_")
    assert np.array_equal(again.predict(X, views=views), fitted.predict(X, views=views))
    fit_memoised(TwoLevelGrouper(), X, views, memo, reference=reference + 1.0)
    fit_memoised(TwoLevelGrouper(), X, views, memo)
    assert _entries(tmp_path, "group") == 3


def test_a_subclass_is_never_memoised(tmp_path: Path) -> None:
    class Mine(TwoLevelGrouper):
        pass

    X, views = _blobs()
    fit_memoised(Mine(), X, views, Memo(tmp_path))
    assert _entries(tmp_path, "group") == 0


# ---- whole sorts --------------------------------------------------------------------------

TIMED = ("timings_s", "peak_rss_mib")


def _outputs(out: Path) -> dict[str, object]:
    """What a sort wrote, timings aside: the tables and the report byte for byte, the JSON
    files as data."""
    found: dict[str, object] = {}
    for name in ("assignments.csv", "items.csv", "skipped.csv", "duplicates.csv",
                 "near_duplicates.csv", "outliers.csv", "quality.csv"):  # fmt: skip
        path = out / name
        found[name] = path.read_bytes() if path.is_file() else None
    for name in ("run.json", "audit.json"):
        path = out / name
        data = json.loads(path.read_text()) if path.is_file() else None
        for key in TIMED:
            if data is not None:
                data.pop(key, None)
        found[name] = data
    found["report.html"] = (out / "report.html").read_bytes()  # its data, thumbnails
    return found


def _sort(folder: Path, out: Path, cache: Path, *extra: str) -> None:
    args = ["sort", str(folder), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(args + list(extra)) == 0


def _nothing_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every memoised step fail if it runs."""

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("recomputed although remembered")

    monkeypatch.setattr(TwoLevelGrouper, "_fit", fail)
    for step in (
        "medsort.audit.memoised.collect",
        "medsort.audit.scoring.audit_attributes",
        "medsort.audit.stability.group_stability",
        "medsort.audit.hygiene.nearest_neighbours",
        "medsort.audit.hygiene.dihedral_neighbours",
        "medsort.audit.hygiene.pair_correlation",
        "medsort.report.data.nearest_neighbours",
    ):
        monkeypatch.setattr(step, fail)


def _synthetic_folder(folder: Path, n: int = 36) -> Path:
    """Stripes, checks and smooth gradients: three kinds of tiny images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(n):
        kind = i % 3
        if kind == 0:
            image = 127 + 120 * np.sin(xx / (2 + i % 4))
        elif kind == 1:
            image = 255.0 * (((xx // (4 + i % 3)) + (yy // (4 + i % 3))) % 2)
        else:
            image = (xx + yy) * (255 / 94) * (0.6 + 0.1 * (i % 4))
        image = np.clip(image + rng.normal(scale=6, size=image.shape), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def test_second_sort_takes_everything_from_the_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _memoised_sort_equals_computed(_synthetic_folder(tmp_path / "input"), tmp_path, monkeypatch)


def test_memo_misses_on_changed_folder_or_settings(tmp_path: Path) -> None:
    folder = _synthetic_folder(tmp_path / "input")
    cache = tmp_path / "cache"
    _sort(folder, tmp_path / "first", cache)
    counts = [_entries(cache, "group")]
    runs = [("k3", ("--k", "3")), ("seed", ("--random-state", "1")), ("noviews", ("--no-views",))]
    for name, extra in runs:
        _sort(folder, tmp_path / name, cache, *extra)
        counts.append(_entries(cache, "group"))
    shutil.copy(demo_folder() / sorted(p.name for p in demo_folder().glob("*.png"))[0], folder)
    _sort(folder, tmp_path / "added", cache)
    counts.append(_entries(cache, "group"))
    assert counts == [1, 2, 3, 4, 5]
    added = (tmp_path / "added" / "assignments.csv").read_text().count("\n")
    assert added == (tmp_path / "first" / "assignments.csv").read_text().count("\n") + 1


def test_no_cache_keeps_no_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _synthetic_folder(tmp_path / "input", n=24)
    monkeypatch.setenv("MEDSORT_CACHE_DIR", str(tmp_path / "default"))
    assert main(["sort", str(folder), "--out", str(tmp_path / "out"), "--no-cache", "--quiet"]) == 0
    assert not (tmp_path / "default" / MEMO_DIR).exists()


def _memoised_sort_equals_computed(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached re-run computed in full, then one from the memo: the same outputs."""
    cache = tmp_path / "cache"
    _sort(folder, tmp_path / "cold", cache)
    shutil.rmtree(cache / MEMO_DIR)
    _sort(folder, tmp_path / "computed", cache)
    with monkeypatch.context() as patched:
        _nothing_recomputed(patched)
        _sort(folder, tmp_path / "remembered", cache)
    assert _outputs(tmp_path / "remembered") == _outputs(tmp_path / "computed")


@pytest.mark.slow
def test_memoised_demo_sort_equals_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _memoised_sort_equals_computed(demo_folder(), tmp_path, monkeypatch)


@pytest.mark.slow
def test_memoised_lung_histology_sort_equals_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = shared_set("lung-histology") / "images"
    folder = tmp_path / "input"
    folder.mkdir()
    for path in sorted(source.iterdir())[:150]:
        shutil.copy(path, folder / path.name)
    _memoised_sort_equals_computed(folder, tmp_path, monkeypatch)


def test_attributes_found_are_remembered_per_table(tmp_path: Path) -> None:
    import pandas as pd

    from medsort.audit import memoised
    from medsort.audit.attributes import collect_attributes

    rng = np.random.default_rng(0)
    items = pd.DataFrame(
        {
            "path": [f"{'ab'[i % 2]}/img_{i}.png" for i in range(60)],
            "item": "",
            "format": ["PNG", "JPEG", "nan"] * 20,
            "brightness": rng.normal(size=60),
        }
    )
    memo = Memo(tmp_path)
    first = memoised.collect_attributes(items, None, (), memo)
    again = memoised.collect_attributes(items, None, (), memo)
    direct = collect_attributes(items, None)
    for found in (first, again):
        assert [(a.name, a.kind, a.levels) for a in found[0]] == [
            (a.name, a.kind, a.levels) for a in direct[0]
        ]
        assert all(
            np.array_equal(a.codes, b.codes) for a, b in zip(found[0], direct[0], strict=True)
        )
        assert found[1] == direct[1]
    assert _entries(tmp_path, "audit-collect") == 1
    missing = items.copy()
    missing.loc[2, "format"] = np.nan  # missing, not the text "nan"
    memoised.collect_attributes(missing, None, (), memo)
    memoised.collect_attributes(items, None, ("format",), memo)
    assert _entries(tmp_path, "audit-collect") == 3
