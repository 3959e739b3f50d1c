"""medsort adapt --modality-group KEY --from SORT_OUT, then sort --encoder-for KEY=adapted:DIR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from medsort.cli import main
from medsort.group import TwoLevelGrouper
from medsort.modality_adapt import modality_group_files
from medsort.results import INCOMPLETE
from tests.conftest import write_two_modalities

QUICK = ["--epochs", "1", "--views", "2", "--device", "cpu", "--quiet"]
"""One epoch of one step: seconds, enough to save an encoder."""


def _sort(input_dir: Path, out: Path, *extra: str) -> pd.DataFrame:
    code = main(["sort", str(input_dir), "--out", str(out), "--no-cache", "--no-audit",
                 "--quiet", *extra])  # fmt: skip
    assert code == 0
    return pd.read_csv(out / "assignments.csv", keep_default_na=False)


def _adapt(input_dir: Path, model: Path, group: int, sort_out: Path) -> tuple[Path, dict]:
    """``medsort adapt --modality-group GROUP --from SORT_OUT``; its ``trained_on``."""
    argv = ["adapt", str(input_dir), "--out", str(model), "--modality-group", str(group),
            "--from", str(sort_out), *QUICK]  # fmt: skip
    assert main(argv) == 0
    return model, json.loads((model / "adapted.json").read_text())["trained_on"]


@pytest.fixture(scope="module")
def sorted_mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int, int]:
    """The mixed folder, its default sort, and the modality groups of stains and X-rays."""
    work = tmp_path_factory.mktemp("mixed")
    two_modalities = write_two_modalities(work / "input")
    out = work / "sorted"
    table = _sort(two_modalities, out)
    stain = table["path"].str.startswith("stain")
    (stain_group,) = set(table["modality_group"][stain])
    (xray_group,) = set(table["modality_group"][~stain])
    return two_modalities, out, int(stain_group), int(xray_group)


def test_a_modality_groups_files_are_exactly_its_rows(sorted_mixed: tuple) -> None:
    input_dir, out, stain_group, xray_group = sorted_mixed
    group = modality_group_files(input_dir, out, str(stain_group))
    assert group.index == stain_group and group.name is None
    assert sorted(p.name for p in group.files) == [f"stain_{i:02d}.png" for i in range(24)]
    assert all(p.parent == input_dir for p in group.files)
    other = modality_group_files(input_dir, out, str(xray_group))
    assert len(other.files) == 24 and not {p.name for p in other.files} & {
        p.name for p in group.files
    }


def test_bad_key_incomplete_or_foreign_sort_is_refused(
    sorted_mixed: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    input_dir, out, _, _ = sorted_mixed

    def adapt(key: str, sort_out: Path, folder: Path = input_dir) -> str:
        argv = ["adapt", str(folder), "--out", str(tmp_path / "m"), "--modality-group", key,
                "--from", str(sort_out), *QUICK]  # fmt: skip
        assert main(argv) == 1
        return capsys.readouterr().err

    assert "no modality group 7 (found 0 (unnamed), 1 (unnamed))" in adapt("7", out)
    assert "no modality group xray" in adapt("xray", out)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / INCOMPLETE).write_text("{}")
    assert "incomplete sort" in adapt("0", broken)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(next(input_dir.glob("stain_*.png")), other)
    assert f"is the sort of {input_dir}" in adapt("0", out, other)
    argv = ["adapt", str(input_dir), "--out", str(tmp_path / "m"), "--modality-group", "0"]
    assert main(argv) == 1 and "go together" in capsys.readouterr().err
    assert not (tmp_path / "m" / "adapted.json").exists()


def test_colour_group_adapted_and_regrouped_with_k_from_imagenet(
    sorted_mixed: tuple, tmp_path: Path
) -> None:
    input_dir, out, stain_group, xray_group = sorted_mixed
    model, trained_on = _adapt(input_dir, tmp_path / "model", stain_group, out)
    assert trained_on["n_files"] == 24 and trained_on["n_grey"] == 0
    assert trained_on["modality_group"] == {
        "key": str(stain_group), "index": stain_group, "name": None, "n_files": 24,
        "sort": str(out.resolve()),
    }  # fmt: skip
    default = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    table = _sort(input_dir, tmp_path / "per", "--encoder-for", f"{stain_group}=adapted:{model}")
    run = json.loads((tmp_path / "per" / "run.json").read_text())
    info = run["encoder_for"][str(stain_group)]
    assert info["encoder"].startswith("adapted") and info["k_from"] == "efficientnet_lite0"
    assert "grouped_on" not in info
    xray = table["modality_group"] == xray_group
    assert adjusted_rand_score(default["group"][xray], table["group"][xray]) == 1.0
    # k of the stained group: what the ImageNet vectors of its rows give on their own
    vectors = np.load(out / "embeddings.npy")[~xray.to_numpy()]
    expected = TwoLevelGrouper(modality_tol=0.0, modality_gap_tol=0.0).fit(vectors).n_groups_
    assert table["group"][~xray].nunique() == expected


def test_grey_group_adapted_keeps_the_imagenet_groups(sorted_mixed: tuple, tmp_path: Path) -> None:
    input_dir, out, _, xray_group = sorted_mixed
    model, trained_on = _adapt(input_dir, tmp_path / "model", xray_group, out)
    assert trained_on["n_grey"] == trained_on["n_images"] == 24
    default = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    table = _sort(input_dir, tmp_path / "per", "--encoder-for", f"{xray_group}=adapted:{model}")
    run = json.loads((tmp_path / "per" / "run.json").read_text())
    assert run["encoder_for"][str(xray_group)]["grouped_on"] == "efficientnet_lite0"
    assert run["views_per_modality_group"][xray_group]["encoder"] == "efficientnet_lite0"
    assert adjusted_rand_score(default["group"], table["group"]) == 1.0


@pytest.mark.slow  # 15 epochs: sort --adapt takes no --epochs
def test_sort_adapt_adapts_each_colour_modality_group_on_its_files(
    sorted_mixed: tuple, tmp_path: Path
) -> None:
    input_dir, out, stain_group, xray_group = sorted_mixed
    default = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    per = tmp_path / "per"
    table = _sort(input_dir, per, "--adapt")
    config = json.loads((per / "adapted" / str(stain_group) / "adapted.json").read_text())
    assert config["trained_on"]["modality_group"]["index"] == stain_group
    assert config["trained_on"]["n_files"] == 24 and config["trained_on"]["n_grey"] == 0
    assert not (per / "adapted" / str(xray_group)).exists()  # grey: would keep its groups
    assert not (per / "adapted" / "adapted.json").exists()
    run = json.loads((per / "run.json").read_text())
    assert run["encoder"] == "efficientnet_lite0"
    assert list(run["encoder_for"]) == [str(stain_group)]
    assert (
        run["encoder_for"][str(stain_group)]["spec"]
        == f"adapted:{per / 'adapted' / str(stain_group)}"
    )
    xray = table["modality_group"] == xray_group
    assert adjusted_rand_score(default["group"][xray], table["group"][xray]) == 1.0
