"""From scores to findings: which attributes are flagged, at which level, and the grouping's
overall verdict; stability and hygiene summaries become findings too."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medsort.audit import messages
from medsort.audit.attributes import Attribute
from medsort.audit.records import Finding, GroupingVerdict, sort_findings
from medsort.audit.settings import CONTENT_DEPENDENT, AuditSettings
from medsort.audit.shortcuts import codes_of, utility
from medsort.io import appearance
from medsort.results import SortResult


def attribute_findings(
    rows: list[dict[str, Any]],
    result: SortResult,
    attributes: list[Attribute],
    items: pd.DataFrame,
    has_truth: bool,
    settings: AuditSettings,
) -> list[Finding]:
    """A finding for every ``shortcut`` or ``confound`` verdict (for the groups given
    labels: ``shortcut`` only); appearance looks merged; warnings first."""
    by_name = {a.name: a for a in attributes}
    groups = result.assignments["group"].to_numpy()
    modality = result.assignments["modality_group"].to_numpy()
    findings = []
    for row in rows:
        attribute = by_name[row["name"]]
        for target, scores in row["targets"].items():
            verdict = scores["verdict"]
            if verdict not in ("shortcut", "confound") or (
                target == "groups" and has_truth and verdict != "shortcut"
            ):
                continue
            level = finding_level(row, target, scores, has_truth, settings)
            if row["source"] == "image":
                message = messages.appearance_message(
                    row["name"], items, groups, modality, scores, target, level, has_truth
                )
            elif target == "groups":
                message = messages.groups_message(attribute, groups, scores, has_truth, modality)
            else:
                message = messages.label_message(attribute, row, scores, verdict)
            findings.append(
                Finding(
                    level=level,
                    kind="attribute",
                    attribute=row["name"],
                    source=row["source"],
                    target=target,
                    verdict=verdict,
                    utility=scores["utility"],
                    detectability=scores["detectability"],
                    message=message,
                )
            )
    findings = merge_class_looks(findings, rows)
    findings = merge_group_looks(findings)
    return sort_findings(findings)


def merge_class_looks(findings: list[Finding], rows: list[dict[str, Any]]) -> list[Finding]:
    """One note for every appearance attribute that merely differs between the classes."""
    looks = [
        f for f in findings
        if f.source == "image" and f.target == "label" and f.level == "note"
    ]  # fmt: skip
    if not looks:
        return findings
    groups_utility = {r["name"]: r["targets"]["groups"]["utility"] for r in rows}
    parts = ", ".join(
        f"{appearance.WORDS[f.attribute]} (utility {f.utility:.2f} for the labels, "
        f"{groups_utility[f.attribute]:.2f} for the groups)"
        for f in sorted(looks, key=lambda f: -(f.utility or 0))
    )
    merged = Finding(
        level="note",
        kind="attribute",
        attribute=looks[0].attribute if len(looks) == 1 else None,
        attributes=[f.attribute for f in looks],
        source="image",
        target="label",
        verdict="class_look",
        utility=max(f.utility or 0 for f in looks),
        detectability=None,
        message=messages.class_looks_message(parts),
    )
    return [f for f in findings if f not in looks] + [merged]


def merge_group_looks(findings: list[Finding]) -> list[Finding]:
    """One warning for every appearance attribute the groups follow (strongest first)."""
    looks = [
        f for f in findings
        if f.source == "image" and f.target == "groups" and f.level == "warning"
    ]  # fmt: skip
    if len(looks) < 2:
        return findings
    looks.sort(key=lambda f: -(f.utility or 0))
    others = ", ".join(f"{appearance.WORDS[f.attribute]} ({f.utility:.2f})" for f in looks[1:])
    first = looks[0]
    merged = Finding(
        level=first.level,
        kind=first.kind,
        attribute=first.attribute,
        source=first.source,
        target=first.target,
        verdict=first.verdict,
        utility=first.utility,
        detectability=first.detectability,
        attributes=[f.attribute for f in looks],
        message=f"{first.message} They also follow {others}.",
    )
    return [f for f in findings if f not in looks] + [merged]


def finding_level(
    row: dict[str, Any],
    target: str,
    scores: dict[str, Any],
    has_truth: bool,
    settings: AuditSettings,
) -> str:
    """``warning`` or ``note`` for a flagged attribute.

    An appearance attribute is always visible to an image model, so "visible and goes
    with the target" alone is not a shortcut (a condition has a look), and "not visible
    beyond the target" does not clear it either (a look planted on one class is fully
    explained by the class). For the labels it is a warning when it alone nearly
    separates them (utility >= ``strong_utility``). For the groups: with labels, when the
    groups follow it beyond the true classes; without, only for attributes of the frame
    and file (vignette, surround, padding, text, JPEG quality), as colour, sharpness or
    brightness can be the condition's own look. Otherwise a note.
    """
    strong = (scores["utility"] or 0) >= settings.strong_utility
    if row["source"] == "image":
        if target == "label":
            return "warning" if strong else "note"
        if has_truth or row["name"] in appearance.ACQUISITION:
            return "warning" if scores["verdict"] == "shortcut" else "note"
        return "note"
    if row["name"] in CONTENT_DEPENDENT or scores["verdict"] != "shortcut":
        return "note"
    return "warning"


def grouping_verdict(
    rows: list[dict[str, Any]],
    labels: np.ndarray | None,
    groups: np.ndarray,
    settings: AuditSettings,
) -> GroupingVerdict:
    """Whether the grouping is explained by appearance better than by anything else.

    Compares the appearance attribute with the highest utility for the groups (flagged as
    a shortcut) with the best other attribute and, given labels, with the labels.
    """

    def best(sources: tuple[str, ...]) -> dict[str, Any] | None:
        flagged = [
            r for r in rows
            if r["source"] in sources and r["targets"]["groups"]["verdict"] == "shortcut"
        ]  # fmt: skip
        return max(flagged, key=lambda r: r["targets"]["groups"]["utility"], default=None)

    look = best(("image",))
    if look is not None and labels is None and look["name"] not in appearance.ACQUISITION:
        return GroupingVerdict()
    other = best(("file", "path", "dicom", "metadata"))
    label_utility = None
    if labels is not None:
        known = labels >= 0
        rng = np.random.default_rng(settings.random_state)
        label_utility = utility(
            labels[known], codes_of(groups[known]), settings.n_permutations, rng
        ).value
    verdict = GroupingVerdict(
        label_utility=None if label_utility is None else round(label_utility, 4)
    )
    if look is None:
        return verdict
    value = look["targets"]["groups"]["utility"]
    beats_other = other is None or value >= other["targets"]["groups"]["utility"]
    if label_utility is not None:
        follows = beats_other and value > label_utility
    else:
        follows = beats_other and look["name"] in appearance.ACQUISITION
    if follows:
        verdict.verdict, verdict.attribute, verdict.utility = "appearance", look["name"], value
    return verdict


def verdict_findings(verdict: GroupingVerdict) -> list[Finding]:
    """The warning of an ``appearance`` grouping verdict (none otherwise)."""
    if verdict.verdict != "appearance":
        return []
    return [
        Finding(
            level="warning",
            kind="verdict",
            attribute=verdict.attribute,
            source="image",
            target="groups",
            verdict="appearance",
            utility=verdict.utility,
            detectability=None,
            message=messages.verdict_message(verdict),
        )
    ]


def stability_findings(stable: dict[str, Any], automatic_k: bool = True) -> list[Finding]:
    """A note naming the unstable groups (none when every group came back), and one when
    the reruns found another number of groups than the sort (``automatic_k`` only)."""
    findings = []
    if stable.get("unstable"):
        findings.append(Finding("note", "stability", messages.stability_message(stable)))
    counts = stable.get("rerun_groups") or []
    if automatic_k and any(count != stable.get("n_groups") for count in counts):
        findings.append(Finding("note", "group_count", messages.group_count_message(stable)))
    return findings


def hygiene_findings(summary: dict[str, Any]) -> list[Finding]:
    """One finding per hygiene check that found something: label conflicts and exact
    copies are warnings, near duplicates, outliers and quality flags notes."""
    findings = []
    if summary.get("label_conflicts"):
        message = messages.label_conflicts_message(summary["label_conflicts"])
        findings.append(Finding("warning", "label_conflicts", message))
    exact = summary["exact_duplicates"]
    if exact["n_items"]:
        message = messages.exact_duplicates_message(exact)
        findings.append(Finding("warning", "exact_duplicates", message))
    near = summary["near_duplicates"]
    if near["n_pairs"]:
        findings.append(Finding("note", "near_duplicates", messages.near_duplicates_message(near)))
    if summary["outliers"]["n_items"]:
        message = messages.outliers_message(summary["outliers"]["n_items"])
        findings.append(Finding("note", "outliers", message))
    quality = summary["quality"]
    if quality["n_items"]:
        findings.append(Finding("note", "quality", messages.quality_message(quality["by_flag"])))
    return findings
