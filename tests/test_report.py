"""The report's data, thumbnails and titles, the Python/CLI parity and CLI consistency."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsort.cli import build_parser, main
from medsort.demo import demo_folder
from medsort.evaluate import evaluate, match_truth_paths
from medsort.io.readers import ReadOptions
from medsort.report import html as report_html
from medsort.report import save_folder, thumbnails, write_report
from medsort.report.data import KEEP_ENDS, flags_by_row, nearest_neighbours, page_rows
from medsort.report.thumbnails import ThumbnailStore
from medsort.results import SortResult


def page_data(out: Path) -> dict:
    text = (out / "report.html").read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="medsort-data">(.*?)</script>', text)
    return json.loads(block.group(1))


@pytest.fixture(scope="module")
def small_sort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """40 demo images (both modalities) sorted by the CLI; returns input, out, cache."""
    root = tmp_path_factory.mktemp("report")
    images = root / "images"
    images.mkdir()
    for source in sorted(demo_folder().glob("*.png"))[:40]:
        shutil.copy2(source, images / source.name)
    out, cache = root / "out", root / "cache"
    args = ["sort", str(images), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(args) == 0
    return images, out, cache


def test_every_image_is_in_the_page_with_its_thumbnail(small_sort) -> None:  # noqa: ANN001
    _, out, _ = small_sort
    table = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    data = page_data(out)
    assert data["items"]["path"] == table["path"].tolist()
    assert data["items"]["group"] == table["group"].tolist()
    assert sum(g["size"] for g in data["groups"]) == len(table)
    for thumb in data["items"]["thumb"]:
        with Image.open(out / thumb) as image:
            assert image.format == "JPEG" and max(image.size) <= 256
    # neighbours stay in the modality group and never list the image itself
    for row, near in enumerate(data["neighbours"]):
        assert near and row not in near
        assert {table["modality_group"][n] for n in near} == {table["modality_group"][row]}
    # each modality group says which views carried its grouping, as run.json records them
    run = json.loads((out / "run.json").read_text())
    notes = data["modality_views"]
    assert len(notes) == run["n_modality_groups"] == len(run["views_per_modality_group"])
    for note, used in zip(notes, run["views_per_modality_group"], strict=True):
        assert note.startswith("Grouped on: CNN 1")
        assert all(name in note for name in used["weights"] if name != "cnn")


def test_rebuilding_reuses_the_thumbnails(small_sort, monkeypatch) -> None:  # noqa: ANN001
    _, out, _ = small_sort
    before = sorted(p.name for p in (out / "thumbs").iterdir())

    def no_reading(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a source file was read again")

    monkeypatch.setattr(thumbnails, "iter_images", no_reading)
    write_report(out)
    assert sorted(p.name for p in (out / "thumbs").iterdir()) == before
    assert all(page_data(out)["items"]["thumb"])


def test_thumbnails_outlive_a_moved_input_folder(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((32, 32), 120, np.uint8)).save(images / "a.png")
    rows = pd.DataFrame({"path": ["a.png"], "item": [""]})
    first = ThumbnailStore(tmp_path / "out", ReadOptions()).build(rows, lambda p: images / p)
    images.rename(tmp_path / "moved")
    again = ThumbnailStore(tmp_path / "out", ReadOptions()).build(rows, lambda p: images / p)
    assert again == first and (tmp_path / "out" / first[0]).is_file()


def test_thumbnails_read_16_bit_through_the_readers(tmp_path: Path) -> None:
    # A 16-bit image using only 0..1200 of 65535: a naive 8-bit conversion is black/flat.
    ramp = (np.add.outer(np.arange(64), np.arange(64)) * 1200 // 126).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ct.png")
    store = ThumbnailStore(tmp_path / "out", ReadOptions())
    rows = pd.DataFrame({"path": ["ct.png", "gone.png"], "item": ["", ""]})
    sources = store.build(rows, lambda p: tmp_path / p)
    assert sources[0].startswith("thumbs/") and sources[1] == ""
    assert store.n_read_ == 1 and store.n_failed_ == 1
    with Image.open(tmp_path / "out" / sources[0]) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.max() - pixels.min() > 200  # the full grey range, as the encoder saw it


def test_group_titles_use_names_then_audit_traits(small_sort, tmp_path: Path) -> None:  # noqa: ANN001
    _, source, _ = small_sort
    out = tmp_path / "out"
    shutil.copytree(source, out)
    result = SortResult.load(out)
    groups = sorted(result.assignments["group"].unique())
    audit = json.loads((out / "audit.json").read_text())
    audit.pop("group_explanations", None)
    (out / "audit.json").write_text(json.dumps(audit))
    assert report_html.group_titles(result, out)[groups[0]] == f"Group {groups[0]}"
    audit["group_explanations"] = {str(groups[0]): ["darker border in 81% vs 12%", "PNG", "x"]}
    (out / "audit.json").write_text(json.dumps(audit))
    titles = report_html.group_titles(result, out)
    assert titles[groups[0]] == f"Group {groups[0]} · darker border in 81% vs 12%; PNG"
    result.assignments["group_name"] = "unnamed"
    result.assignments.loc[result.assignments["group"] == groups[0], "group_name"] = "pneumonia"
    assert report_html.group_titles(result, out)[groups[0]] == f"Group {groups[0]} · pneumonia"
    (out / "audit.json").write_text('{"group_explanations": "not a mapping"}')
    assert report_html.group_titles(result, out)[groups[0]] == f"Group {groups[0]} · pneumonia"


def test_flags_come_from_the_audit_tables(tmp_path: Path) -> None:
    assignments = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "item": ["", "", ""]})
    pd.DataFrame(
        {"path": ["a.png"], "item": [""], "flags": ["blank;odd_size"], "mean": [0]}
    ).to_csv(tmp_path / "quality.csv", index=False)
    pd.DataFrame({"path_a": ["b.png"], "item_a": [""], "path_b": ["c.png"], "item_b": [""]}).to_csv(
        tmp_path / "near_duplicates.csv", index=False
    )
    (tmp_path / "outliers.csv").write_text("path,item,group,knn_distance,robust_z\n")
    flags = flags_by_row(assignments, tmp_path)
    assert flags == {
        "0": ["quality: blank", "quality: odd size"],
        "1": ["near duplicate of c.png"],
        "2": ["near duplicate of b.png"],
    }


def test_nearest_neighbours_are_the_most_similar() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    X[1] = X[0] + 1e-3
    near = nearest_neighbours(X, np.zeros(30, dtype=int), k=3)
    assert near[0][0] == 1 and near[1][0] == 0 and all(len(n) == 3 for n in near)


def test_page_data_cannot_close_its_script() -> None:
    text = report_html._json_for_script({"path": ["</script><!--x.png"]})
    assert "<" not in text and json.loads(text) == {"path": ["</script><!--x.png"]}


def test_save_folder_writes_the_same_folder_as_the_cli(small_sort, tmp_path: Path) -> None:  # noqa: ANN001
    from medsort import Sorter

    images, cli_out, cache = small_sort
    result = Sorter(cache=cache, progress=False).fit(images).result_
    report = save_folder(result, tmp_path / "api")
    assert report == tmp_path / "api" / "report.html" and report.is_file()
    files = {p.relative_to(cli_out).parent.as_posix() + "/" + p.suffix for p in cli_out.rglob("*")}
    api = {
        p.relative_to(tmp_path / "api").parent.as_posix() + "/" + p.suffix
        for p in report.parent.rglob("*")
    }
    assert files == api
    assert {p.name for p in cli_out.iterdir()} == {p.name for p in report.parent.iterdir()}
    assert page_data(cli_out)["items"] == page_data(report.parent)["items"]


def test_eval_accepts_parent_relative_and_file_name_paths(small_sort, tmp_path: Path) -> None:  # noqa: ANN001
    images, out, _ = small_sort
    truth = pd.read_csv(demo_folder().parent / "labels.csv", dtype=str, keep_default_na=False)
    truth = truth[truth["path"].isin([p.name for p in images.iterdir()])]
    exact = evaluate(out, _write(truth, tmp_path / "exact.csv"))
    parent = truth.assign(path="images/" + truth["path"])
    assert evaluate(out, _write(parent, tmp_path / "parent.csv")) == exact
    names = truth.assign(path="elsewhere/" + truth["path"])
    assert evaluate(out, _write(names, tmp_path / "names.csv")) == exact


def test_match_truth_paths_leaves_ambiguous_names() -> None:
    sorted_paths = ["a/x.png", "b/x.png", "a/y.png"]
    matched, note = match_truth_paths(["in/a/x.png", "x.png", "y.png"], sorted_paths, "in")
    assert matched == ["a/x.png", "x.png", "a/y.png"]
    assert "1 path(s) relative" in note and "1 path(s) matched by their unique" in note


def _write(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False)
    return path


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, f"{prefix} {name}".strip()))
    if not found and prefix:
        found[prefix] = parser
    return found


def test_every_command_takes_quiet_and_every_option_has_help() -> None:
    commands = _commands(build_parser())
    assert {"sort", "demo", "eval", "name", "suggest", "label", "audit", "models list"} <= set(
        commands
    )
    for name, command in commands.items():
        options = {o for a in command._actions for o in a.option_strings}
        assert "--quiet" in options, name
        for action in command._actions:
            assert action.help, f"{name} {action.dest} has no --help text"


def test_label_refreshes_the_suggestions(small_sort, tmp_path: Path) -> None:  # noqa: ANN001
    _, source, _ = small_sort
    out = tmp_path / "out"
    shutil.copytree(source, out)
    assert main(["suggest", str(out), "--n", "4", "--quiet"]) == 0
    first = pd.read_csv(out / "to_label.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(demo_folder().parent / "labels.csv", dtype=str, keep_default_na=False)
    first["label"] = first["path"].map(dict(zip(truth["path"], truth["label"], strict=True)))
    labels = _write(first[["path", "label"]], tmp_path / "few.csv")
    assert main(["label", str(out), "--labels", str(labels), "--quiet"]) == 0
    second = pd.read_csv(out / "to_label.csv", dtype=str, keep_default_na=False)
    assert len(second) == 4 and not set(second["path"]) & set(first["path"])
    assert second["reason"].str.contains("uncertain|no label").all()


def test_sort_open_opens_the_report(small_sort, monkeypatch) -> None:  # noqa: ANN001
    import webbrowser

    _, out, _ = small_sort
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    from medsort.cli import open_report

    open_report(out)
    assert opened == [(out / "report.html").resolve().as_uri()]


def test_a_huge_sort_shows_each_groups_ends_and_a_spread() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], [3000, 600, 150])
    table = pd.DataFrame({"group": groups, "distance": rng.random(len(groups))})
    assert page_rows(table, limit=len(table)) is None
    rows = page_rows(table, limit=1000)
    assert 900 <= len(rows) <= 1000 + 2 * KEEP_ENDS and len(set(rows)) == len(rows)
    for _, members in table.groupby("group"):
        ordered = members.sort_values("distance").index.to_numpy()
        kept = set(rows)
        assert set(ordered[:KEEP_ENDS]) <= kept and set(ordered[-KEEP_ENDS:]) <= kept
    assert (table.loc[rows, "group"] == 2).sum() == 150  # small groups stay whole
