"""Plain messages for bad arguments and label files, safe CSV cells, a shareable cache."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsort.cli import main
from medsort.embed.cache import CACHE_NAME, CachedFile, EmbeddingCache, pack, unpack
from medsort.io.outputs import escape_text, read_csv, unescape_text, write_csv
from medsort.refine.classifier import OTHER
from medsort.refine.label import read_labels
from medsort.refine.propagate import GraphLabelSpreading


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "0"], "argument --k: must be at least 1, got 0"),
        (["--k", "-1"], "argument --k: must be at least 1, got -1"),
        (["--k", "two"], "argument --k: expected a whole number"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["--tile-size", "4"], "argument --tile-size: must be at least 8"),
        (["--slide-mpp", "-2"], "argument --slide-mpp: must be more than 0"),
        (["--slide-mpp", "nan"], "argument --slide-mpp: must be more than 0"),
        (["--volume", "axial:0"], "argument --volume: use middle, mip or axial:N"),
        (["--workers", "0"], "argument --workers: must be at least 1"),
        (["--truth", "missing.csv"], "argument --truth: file not found: missing.csv"),
        (["--metadata", "."], "argument --metadata: . is a folder, expected a file"),
    ],
)
def test_sort_options_are_checked_before_anything_runs(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["sort", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_stage_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, message in [
        (["suggest", str(tmp_path), "--n", "0"], "argument --n: must be at least 1"),
        (["name", str(tmp_path), "--min-confidence", "2"], "at most 1"),
        (["audit", str(tmp_path), "--truth", str(tmp_path)], "is a folder, expected a file"),
        (["eval", str(tmp_path), "--truth", "nope.csv"], "file not found: nope.csv"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_input_that_is_a_file_or_broken_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a_file = tmp_path / "image.png"
    a_file.write_bytes(b"\x89PNG broken")
    assert main(["sort", str(a_file), "--out", str(tmp_path / "out")]) == 1
    assert "must be a folder of images, not a file" in capsys.readouterr().err

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG broken")
    (folder / "b.dcm").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["sort", str(folder), "--out", str(out), "--quiet"]) == 1
    assert "No readable image" in capsys.readouterr().err
    skipped = read_csv(out / "skipped.csv")
    assert dict(zip(skipped["path"], skipped["reason"], strict=True)) == {
        "a.png": skipped["reason"][0],
        "b.dcm": "empty file (0 bytes)",
    }
    assert main(["audit", str(out)]) == 1  # a failed sort is never taken for a result


def _labels(tmp_path: Path, content: bytes, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"path,label\nna\xefve.png,a\n", "is not UTF-8 text (byte 0xef"),
        (b"path,label\na.png,\nb.png,  \n", "has no labels: every label cell is empty"),
        (b"path,label\na.png,cat\na.png,dog\n", "different labels to the same image: a.png"),
        (b"file,class\na.png,cat\n", "needs columns path,label"),
    ],
)
def test_bad_label_files(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match="Labels file") as error:
        read_labels(_labels(tmp_path, content))
    assert message in str(error.value)


def test_label_file_that_is_a_folder_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder"):
        read_labels(tmp_path)
    with pytest.raises(FileNotFoundError, match="Labels file not found"):
        read_labels(tmp_path / "missing.csv")


def test_label_file_repeats_and_blanks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _labels(tmp_path, b"path,label\na.png,cat\na.png,cat\nb.png,\nc.png, dog \n")
    table = read_labels(path)
    assert table[["path", "label"]].values.tolist() == [["a.png", "cat"], ["c.png", "dog"]]
    assert "1 row(s) without a label ignored" in capsys.readouterr().err


def test_one_labelled_image_leaves_other_groups_other() -> None:
    """Three well separated groups, one labelled image: the README promises ``other`` for
    the groups without a label (it used to tie at 0.5 and pick the class)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    X = np.concatenate([c + rng.normal(size=(30, 16)) for c in centres])
    groups = np.repeat([0, 1, 2], 30)
    y = np.full(len(X), None, dtype=object)
    y[0] = "pneumonia"
    model = GraphLabelSpreading().fit(X, y, groups=groups)
    assert set(model.transduction_[groups != 0]) == {OTHER}
    assert model.transduction_[0] == "pneumonia"


def test_csv_cells_are_neutralised_and_read_back(tmp_path: Path) -> None:
    names = ["=cmd|calc!A1.png", "+1.png", "-x.png", "@sum.png", "\tt.png", "'q.png", "ok.png"]
    table = pd.DataFrame({"path": names, "distance": [-0.5, 1, 2, 3, 4, 5, 6]})
    write_csv(table, tmp_path / "t.csv")
    raw = pd.read_csv(tmp_path / "t.csv", dtype={"path": str}, keep_default_na=False)
    assert not raw["path"].str.match(r"^[=+\-@\t\r]").any()
    assert raw["distance"].tolist()[0] == -0.5  # numbers are not touched
    back = read_csv(tmp_path / "t.csv", dtype={"path": str})
    assert back["path"].tolist() == names


def test_undecodable_names_are_escaped_text() -> None:
    name = "bad_utf8_\udcff\udcfe.png"
    escaped = escape_text(name)
    assert escaped == "bad_utf8_\\xff\\xfe.png" and escaped.encode("utf-8")
    assert unescape_text(escaped) == name
    assert escape_text("café.png") == "café.png"


def _put_many(folder: str, rank: int, barrier: mp.Barrier) -> None:
    cache = EmbeddingCache(Path(folder), commit_files=16)
    barrier.wait()
    for index in range(200):
        key = f"shared-{index}" if index % 2 else f"own-{rank}-{index}"
        if cache.get(key) is None:
            vectors = np.full((2, 8), index, np.float32)
            cache.put(key, CachedFile([{"item": "a"}, {"item": "b"}], vectors))
    cache.close()


def test_cache_shared_by_processes(tmp_path: Path) -> None:
    context = mp.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [
        context.Process(target=_put_many, args=(str(tmp_path), rank, barrier)) for rank in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    cache = EmbeddingCache(tmp_path)
    assert len(cache) == 3 * 100 + 100
    entry = cache.get("shared-7")
    assert entry is not None and entry.items == [{"item": "a"}, {"item": "b"}]
    np.testing.assert_array_equal(entry.vectors, np.full((2, 8), 7, np.float32))


def test_cache_commits_while_running(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, commit_seconds=3600, commit_files=5)
    for index in range(12):
        cache.put(f"k{index}", CachedFile([{"item": ""}], np.zeros((1, 4), np.float32)))
    with sqlite3.connect(tmp_path / CACHE_NAME) as other:  # another process's view
        assert other.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 10
    cache.close()
    assert len(EmbeddingCache(tmp_path)) == 12


@dataclass
class _WithViews(CachedFile):
    """A further dict of named float32 arrays per file, beside ``views``."""

    extra: dict[str, np.ndarray] = field(default_factory=dict)


def test_cache_entries_keep_every_array_field() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    views = {"flip": vectors + 1, "crop": vectors[:, :2] * 2}
    items = [{"item": "a", "meta": {"w": 3}}, {"item": "b", "meta": {}}]
    entry = _WithViews(items, vectors, views, extra={"x": vectors * 3})
    back = unpack(*pack(entry), cls=_WithViews)
    assert back.items == entry.items
    np.testing.assert_array_equal(back.vectors, vectors)
    assert set(back.views) == {"flip", "crop"}
    np.testing.assert_array_equal(back.views["crop"], views["crop"])
    np.testing.assert_array_equal(back.extra["x"], vectors * 3)
    plain = unpack(*pack(entry))  # a CachedFile without the extra field drops it
    assert not hasattr(plain, "extra") and set(plain.views) == {"flip", "crop"}
    empty = unpack(*pack(_WithViews([], np.zeros((0, 3), np.float32))), cls=_WithViews)
    assert empty.views == {} and empty.extra == {} and empty.vectors.shape == (0, 3)
