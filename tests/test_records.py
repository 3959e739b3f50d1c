"""Typed records between stages: RunInfo (run.json) and EmbeddedItem."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from conftest import make_result

from medsort.embed.stream import EmbeddedItem
from medsort.io.admission import Budget
from medsort.io.readers import ReadOptions
from medsort.results import RunInfo, SortResult


def test_run_json_keeps_its_keys_order_and_the_keys_of_later_stages() -> None:
    saved = {
        "medsort_version": "0.1.0",
        "input_dir": "/data/in",
        "encoder": "efficientnet_lite0",
        "n_clusters": None,
        "read_options": {"window": "lung", "keep_tags": ["Modality"]},
        "n_items": 3,
        "naming": {"groups": []},  # added by the name stage
        "from_a_newer_version": 1,
    }
    run = RunInfo.from_dict(json.loads(json.dumps(saved)))
    assert run.encoder == "efficientnet_lite0" and run.n_items == 3
    assert run.extra == {"naming": {"groups": []}, "from_a_newer_version": 1}
    again = run.to_dict()
    assert {k: again[k] for k in saved} == saved
    assert list(again)[-2:] == ["naming", "from_a_newer_version"]
    assert run["n_items"] == run.get("n_items") == 3 and run.get("missing", "x") == "x"
    assert run.with_extra(naming={"groups": [1]}).extra["naming"] == {"groups": [1]}
    assert run.extra["naming"] == {"groups": []}  # with_extra copies


def test_read_options_come_back_as_the_sort_used_them() -> None:
    used = ReadOptions(window="40,400", keep_tags=("Modality", "BodyPartExamined"),
                       budget=Budget(max_pixels=1234))  # fmt: skip
    run = RunInfo(reading=json.loads(json.dumps(asdict(used))))  # as run.json holds them
    rebuilt = run.read_options()
    assert rebuilt == used
    assert isinstance(rebuilt.budget, Budget) and rebuilt.budget.max_pixels == 1234
    assert RunInfo().read_options() == ReadOptions()


def test_a_saved_sort_reads_back_typed(tmp_path: Path) -> None:
    result = make_result(np.zeros((6, 3)), input_dir=tmp_path, run={"naming": {"k": 1}})
    result.save(tmp_path / "out")
    loaded = SortResult.load(tmp_path / "out")
    assert isinstance(loaded.run, RunInfo) and loaded.run.input_dir == str(tmp_path)
    assert loaded.run.extra == {"naming": {"k": 1}} and loaded.run.n_groups == 1
    assert loaded.run.read_options() == ReadOptions()


def test_embedded_item_from_the_cached_record() -> None:
    item = EmbeddedItem.from_record({"item": "slice:axial:3", "meta": {"format": "NIfTI"}})
    assert (item.item, item.meta) == ("slice:axial:3", {"format": "NIfTI"})
    assert EmbeddedItem.from_record({"item": ""}).meta == {}
