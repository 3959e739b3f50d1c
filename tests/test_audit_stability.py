"""The stability reruns record how many groups each found, and the audit notes when the
automatic number of groups changes between reruns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsort.audit.findings import stability_findings
from medsort.audit.report import _groups_table
from medsort.audit.stability import group_stability


def _blobs(n_per_blob: int = 60, spread: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, spread, (3, 16))
    truth = np.repeat(np.arange(3), n_per_blob)
    points = centres[truth] + rng.normal(0, 1, (len(truth), 16))
    return points.astype(np.float32), truth


def test_each_rerun_records_its_number_of_groups() -> None:
    X, groups = _blobs()
    stable = group_stability(X, groups, n_runs=3)
    assert stable["n_groups"] == 3
    assert stable["rerun_groups"] == [3, 3, 3]
    assert stability_findings(stable) == []


def test_a_given_k_is_kept_by_every_rerun() -> None:
    X, _ = _blobs()
    two = (np.arange(len(X)) >= 60).astype(int)  # a grouping into 2, as `--k 2` would give
    stable = group_stability(X, two, n_clusters=2, n_runs=2)
    assert stable["n_groups"] == 2 and stable["rerun_groups"] == [2, 2]


def _stability(counts: list[int], n_groups: int) -> dict[str, object]:
    return {
        "per_group": {g: 0.9 for g in range(n_groups)},
        "unstable": [],
        "overall": 0.9,
        "n_runs": len(counts),
        "fraction": 0.8,
        "threshold": 0.6,
        "n_groups": n_groups,
        "rerun_groups": counts,
    }


def test_reruns_that_disagree_on_the_count_give_a_note_naming_them() -> None:
    notes = stability_findings(_stability([2, 3, 2, 2, 3], 2))
    assert len(notes) == 1 and (notes[0].level, notes[0].kind) == ("note", "group_count")
    assert "found 2, 3, 2, 2, 3 groups" in notes[0].message
    assert "this sort found 2" in notes[0].message and "--k" in notes[0].message
    assert "80 %" in notes[0].message


def test_no_count_note_when_the_reruns_agree_or_k_was_given() -> None:
    assert stability_findings(_stability([4, 4, 4], 4)) == []
    assert stability_findings(_stability([2, 3, 2], 2), automatic_k=False) == []
    legacy = _stability([], 2)
    del legacy["rerun_groups"]  # an audit.json written before the counts were kept
    assert stability_findings(legacy) == []


def test_the_report_says_how_many_groups_the_reruns_found() -> None:
    audit = {
        "group_explanations": {"0": ["brighter"], "1": ["darker"]},
        "stability": _stability([2, 3, 2], 2),
    }
    table = _groups_table(audit)
    assert "over 3 reruns, which found 2, 3, 2 groups." in table
    del audit["stability"]["rerun_groups"]
    assert "over 3 reruns." in _groups_table(audit)


def test_the_sort_summary_prints_the_count_note_and_no_other_note(tmp_path: Path) -> None:
    from conftest import make_result

    from medsort.pipeline import summary

    run = {"n_items": 4, "n_skipped": 0, "n_embedded_files": 4}
    result = make_result(groups=[0, 1, 2, 0], run=run)
    notes = [f.to_dict() for f in stability_findings(_stability([2, 3, 2], 2))]
    other = {"level": "note", "kind": "outliers", "message": "3 images are outliers"}
    text = summary(result, tmp_path, [*notes, other])
    assert "Note: The number of groups is not settled" in text
    assert "outliers" not in text
