"""The output contract of ``medsort sort`` and the CLI, end to end on real demo images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsort.cli import main
from medsort.demo import demo_folder, demo_labels
from medsort.results import SortResult


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def sorted_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """The demo folder plus broken files, sorted once by the real CLI."""
    root = tmp_path_factory.mktemp("sort")
    input_dir = root / "input"
    (input_dir / "sub").mkdir(parents=True)
    for index, source in enumerate(sorted(demo_folder().glob("*.png"))):
        target = input_dir / ("sub" if index % 2 else "") / source.name
        target.write_bytes(source.read_bytes())
    (input_dir / "empty.png").write_bytes(b"")
    (input_dir / "notes.txt").write_text("not an image")
    (input_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    before = _fingerprint(input_dir)
    out = root / "out"
    code = main(
        [
            "sort",
            str(input_dir),
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--export",
            "copy",
            "--quiet",
        ]
    )
    assert code == 0
    return input_dir, out, before


def test_input_folder_is_untouched(sorted_demo: tuple[Path, Path, dict[str, str]]) -> None:
    input_dir, _, before = sorted_demo
    assert _fingerprint(input_dir) == before


def test_assignments_contract(sorted_demo: tuple[Path, Path, dict[str, str]]) -> None:
    input_dir, out, _ = sorted_demo
    table = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    for column in ("path", "modality_group", "group", "distance", "representative"):
        assert column in table.columns
    images = {p.relative_to(input_dir).as_posix() for p in input_dir.rglob("demo_*.png")}
    assert set(table["path"]) == images and len(table) == 160
    assert not table["path"].str.contains("\\\\", regex=False).any()
    assert any(path.startswith("sub/") for path in table["path"])
    # groups are unique across modality groups
    assert (table.groupby("group")["modality_group"].nunique() == 1).all()
    assert (table["distance"] >= 0).all()
    reps = table[table["representative"]]
    assert set(reps["group"]) == set(table["group"])
    # a representative is at least as close to its centre as any non-representative
    for group, members in table.groupby("group"):
        chosen = members[members["representative"]]["distance"].max()
        rest = members[~members["representative"]]["distance"]
        assert rest.empty or chosen <= rest.min(), group
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (160, 1280)


def test_skipped_lists_every_broken_file(sorted_demo: tuple[Path, Path, dict[str, str]]) -> None:
    _, out, _ = sorted_demo
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert set(reasons) == {"empty.png", "notes.txt", "broken.jpg"}
    assert all(isinstance(reason, str) and reason for reason in reasons.values())


def test_report_is_self_contained(sorted_demo: tuple[Path, Path, dict[str, str]]) -> None:
    import json
    import re

    _, out, _ = sorted_demo
    report = (out / "report.html").read_text()
    table = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    block = re.search(r'<script type="application/json" id="medsort-data">(.*?)</script>', report)
    data = json.loads(block.group(1))
    assert data["items"]["path"] == table["path"].tolist()
    # every image has its own thumbnail file beside the report (relative, works from file://)
    thumbs = data["items"]["thumb"]
    assert all(t.startswith("thumbs/") and (out / t).is_file() for t in thumbs)
    assert len(set(thumbs)) == len(table)
    assert 'src="http' not in report and 'href="http' not in report and "<link" not in report
    for group in table["group"].unique():
        assert f"Group {group}" in report
    assert "broken.jpg" in report


def test_export_copies_each_image_into_its_group(
    sorted_demo: tuple[Path, Path, dict[str, str]],
) -> None:
    input_dir, out, _ = sorted_demo
    table = pd.read_csv(out / "assignments.csv")
    for path, group in zip(table["path"], table["group"], strict=True):
        exported = out / "groups" / str(group) / path
        assert exported.read_bytes() == (input_dir / path).read_bytes()


def test_demo_modalities_separate_and_eval_scores(
    sorted_demo: tuple[Path, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    input_dir, out, _ = sorted_demo
    table = pd.read_csv(out / "assignments.csv")
    truth = pd.read_csv(demo_labels())
    modality = truth.set_index("path")["label"].str.split("/").str[0]
    table["modality"] = [modality[Path(path).name] for path in table["path"]]
    # chest X-ray and breast ultrasound end up in different modality groups
    purity = table.groupby("modality_group")["modality"].agg(lambda s: s.value_counts().iloc[0])
    assert purity.sum() / len(table) >= 0.95

    truth_csv = out.parent / "truth.csv"
    truth_csv.write_text(
        "path,label\n" + "\n".join(f"{path},{modality[Path(path).name]}" for path in table["path"])
    )
    assert main(["eval", str(out), "--truth", str(truth_csv)]) == 0
    printed = capsys.readouterr().out
    assert '"acc"' in printed and '"nmi"' in printed and '"ari"' in printed


def test_second_run_embeds_nothing(sorted_demo: tuple[Path, Path, dict[str, str]]) -> None:
    input_dir, out, _ = sorted_demo
    cache = out.parent / "cache"
    again = out.parent / "again"
    assert (
        main(["sort", str(input_dir), "--out", str(again), "--cache-dir", str(cache), "--quiet"])
        == 0
    )
    result = SortResult.load(again)
    assert result.run["n_embedded_files"] == 0
    first = pd.read_csv(out / "assignments.csv")
    second = pd.read_csv(again / "assignments.csv")
    assert (first["group"] == second["group"]).all()  # deterministic


def test_k_gives_exactly_k_flat_groups(
    sorted_demo: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, out, _ = sorted_demo
    code = main(
        [
            "sort",
            str(input_dir),
            "--out",
            str(tmp_path / "k3"),
            "--k",
            "3",
            "--cache-dir",
            str(out.parent / "cache"),
            "--quiet",
        ]
    )
    assert code == 0
    table = pd.read_csv(tmp_path / "k3" / "assignments.csv")
    assert table["group"].nunique() == 3


def test_clear_errors_for_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sort", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "Input folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert main(["sort", str(empty), "--out", str(tmp_path / "o"), "--no-cache", "--quiet"]) == 1
    assert "No readable image" in capsys.readouterr().err


def test_sort_with_names_duplicates_and_truth(
    sorted_demo: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, out, _ = sorted_demo
    truth = pd.read_csv(demo_labels())
    small = tmp_path / "small"
    small.mkdir()
    for name in truth["path"][:40]:
        (small / name).write_bytes((demo_folder() / name).read_bytes())
    (small / "zz_copy.png").write_bytes((small / truth["path"][0]).read_bytes())
    refs = tmp_path / "refs"
    for name, label in zip(truth["path"][40:80], truth["label"][40:80], strict=True):
        (refs / label).mkdir(parents=True, exist_ok=True)
        (refs / label / name).write_bytes((demo_folder() / name).read_bytes())
    truth_csv = tmp_path / "truth.csv"
    truth[["path", "label"]].to_csv(truth_csv, index=False)
    target = tmp_path / "named"
    code = main(
        [
            "sort",
            str(small),
            "--out",
            str(target),
            "--cache-dir",
            str(out.parent / "cache"),
            "--reference",
            str(refs / "chest_xray"),
            "--drop-duplicates",
            "--truth",
            str(truth_csv),
            "--quiet",
        ]
    )
    assert code == 0
    table = pd.read_csv(target / "assignments.csv", keep_default_na=False)
    assert {"group_name", "modality_name", "name_confidence", "top3"} <= set(table.columns)
    assert len(table) == 40  # the copy was left out of the grouping...
    skipped = pd.read_csv(target / "skipped.csv")
    assert skipped["path"].tolist() == ["zz_copy.png"]  # ...and is listed, not lost
    assert "duplicate of" in skipped["reason"].iloc[0]
    assert (target / "audit.json").is_file()


def test_audit_raises_no_false_alarm_across_modalities(
    sorted_demo: tuple[Path, Path, dict[str, str]],
) -> None:
    # X-rays and ultrasound differ in file size by nature; that is not a shortcut.
    import json

    _, out, _ = sorted_demo
    audit = json.loads((out / "audit.json").read_text())
    assert [f for f in audit["findings"] if f["level"] == "warning"] == []
    report = (out / "report.html").read_text()
    assert report.index("Map of all images") < report.index("Modality group 0")


def test_sorter_predicts_new_images_without_refitting(
    sorted_demo: tuple[Path, Path, dict[str, str]],
) -> None:
    from medsort import Sorter

    input_dir, out, _ = sorted_demo
    sorter = Sorter(cache=out.parent / "cache", progress=False).fit(input_dir)
    table = sorter.result_.assignments
    files = [input_dir / path for path in table["path"][:20]]
    predicted = sorter.predict(files)["group"].to_numpy()
    # the fitted images themselves land in their own groups
    assert (predicted == table["group"].to_numpy()[:20]).mean() >= 0.9
    flipped = input_dir.parent / "flipped.png"
    from PIL import Image

    Image.open(files[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    [group] = sorter.predict([flipped])["group"]
    modality = dict(zip(table["group"], table["modality_group"], strict=False))
    assert modality[group] == modality[table["group"].iloc[0]]
