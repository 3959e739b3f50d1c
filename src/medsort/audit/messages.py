"""The audit's sentences: what a person reads for each finding (plain words first, the
scores in brackets at the end)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medsort.audit import explain
from medsort.audit.attributes import Attribute
from medsort.audit.records import GroupingVerdict
from medsort.audit.settings import CONTENT_DEPENDENT, TECHNICAL_SOURCES
from medsort.io import appearance


def group_contrast(
    attribute: Attribute,
    groups: np.ndarray,
    min_size: int = 5,
    modality: np.ndarray | None = None,
):
    """The two groups (of one modality group) whose ``A`` distributions differ most.

    Distance is total variation. Returns ``(group_1, group_2, level_1, share_1, level_2,
    share_2, distance)`` or ``None``.
    """
    ids = [g for g in np.unique(groups) if np.sum(groups == g) >= min_size]
    modality_of = {
        g: (None if modality is None else modality[np.flatnonzero(groups == g)[0]]) for g in ids
    }
    k = len(attribute.levels)
    dist = {
        g: np.bincount(attribute.codes[groups == g], minlength=k) / np.sum(groups == g) for g in ids
    }
    best = None
    for i, g1 in enumerate(ids):
        for g2 in ids[i + 1 :]:
            if modality_of[g1] != modality_of[g2]:
                continue
            tv = 0.5 * np.abs(dist[g1] - dist[g2]).sum()
            if best is None or tv > best[-1]:
                l1, l2 = int(np.argmax(dist[g1] - dist[g2])), int(np.argmax(dist[g2] - dist[g1]))
                best = (int(g1), int(g2), l1, float(dist[g1][l1]), l2, float(dist[g2][l2]), tv)
    if best is None:
        return None
    g1, g2, l1, s1, l2, s2, tv = best
    return g1, g2, attribute.levels[l1], s1, attribute.levels[l2], s2, float(tv)


def groups_message(
    attribute: Attribute,
    groups: np.ndarray,
    scores: dict[str, Any],
    has_truth: bool,
    modality: np.ndarray | None = None,
) -> str:
    """Why the groups follow a file, path, DICOM or metadata attribute."""
    name = attribute.name.replace("_", " ")
    contrast = group_contrast(attribute, groups, modality=modality)
    if contrast is None:
        head = f"The groups differ by {name}"
    else:
        g1, g2, l1, s1, l2, s2, _ = contrast
        head = (
            f"Groups {g1} and {g2} differ mostly by {name}: {l1} vs {l2} "
            f"(group {g1} is {s1:.0%} {l1}, group {g2} is {s2:.0%} {l2})"
        )
    if has_truth:
        tail = (
            f"; within each true class the groups still follow {name} "
            f"(beyond-label score {scores['beyond_label']:.2f}), so the grouping uses it."
        )
    elif scores["unexplained"] < 0.1:
        tail = f"; the groups separate {name} almost perfectly (utility {scores['utility']:.2f})."
    else:
        tail = (
            f" (utility {scores['utility']:.2f}); the images show {name} even within a group "
            f"(detectability {scores['detectability'] or 0:.2f})."
        )
    advice = (
        " Check whether this is the condition or an acquisition artefact."
        if attribute.source in TECHNICAL_SOURCES
        else " This may be real (it can go with the condition) but deserves a look."
    )
    if attribute.name in CONTENT_DEPENDENT:
        advice = (
            f" {name.capitalize()} also follows image content (detail compresses less), so "
            "this is expected unless formats or compression settings differ."
        )
    return head + tail + advice


def label_message(
    attribute: Attribute, row: dict[str, Any], scores: dict[str, Any], verdict: str
) -> str:
    """Why an attribute that goes with the labels is a confound or a likely shortcut."""
    name = attribute.name.replace("_", " ")
    if verdict == "confound":
        return (
            f"{name.capitalize()} goes with the label (utility {scores['utility']:.2f}) but the "
            f"images do not show it beyond the label: a confound of this data set, not a "
            "visual shortcut."
        )
    accuracy = row.get("balanced_accuracy")
    chance = 1 / len(attribute.levels)
    seen = (
        f" (read with {accuracy:.0%} balanced accuracy, chance {chance:.0%})"
        if accuracy is not None
        else ""
    )
    return (
        f"{name.capitalize()} predicts the label (utility {scores['utility']:.2f}) and the "
        f"images reveal it beyond the label{seen}, detectability "
        f"{scores['detectability'] or 0:.2f}: a model trained on these labels may learn "
        f"{name} instead of the condition."
    )


def appearance_message(
    name: str,
    items: pd.DataFrame,
    groups: np.ndarray,
    modality: np.ndarray,
    scores: dict[str, Any],
    target: str,
    level: str,
    has_truth: bool,
) -> str:
    """Plain words first; the scores in brackets at the end."""
    label = appearance.WORDS[name]
    stats = f"(utility {scores['utility']:.2f}"
    if target == "label":
        lead = f"The true classes differ in {label}."
        if level == "warning":
            return (
                f"{lead} It alone nearly tells the classes apart: a model trained on these "
                f"labels may learn the {label} instead of the condition. Check how the "
                f"images of each class were taken. {stats})"
            )
        return f"{lead} This may be how the condition looks, or how its images were taken. {stats})"
    contrast = explain.strongest_contrast(name, items, groups, modality)
    detail = f" Group {contrast[0]}: {contrast[1]}." if contrast else ""
    lead = f"The groups follow {label}.{detail}"
    if has_truth:
        return (
            f"{lead} Within each true class the groups still differ in it, so they may "
            f"follow how the images were taken, not the condition. {stats}, beyond the "
            f"labels {scores['beyond_label']:.2f})"
        )
    if level == "warning":
        return (
            f"{lead} These groups may follow how the images were taken, not the condition; "
            f"labels for a few images (--truth) would tell. {stats})"
        )
    return f"{lead} This may be the condition's look, or how the images were taken. {stats})"


def verdict_message(verdict: GroupingVerdict) -> str:
    """The warning when the groups follow an appearance attribute above all."""
    name = appearance.WORDS[verdict.attribute]
    versus = (
        f" and more than they follow the true labels ({verdict.label_utility:.2f})"
        if verdict.label_utility is not None
        else ""
    )
    return (
        f"These groups may follow how the images were taken, not the condition: "
        f"above all they differ in {name}, more than in any file or metadata "
        f"attribute{versus}. Look at what sets each group apart below before "
        f"reading them as diagnoses. (utility {verdict.utility:.2f})"
    )


def stability_message(stable: dict[str, Any]) -> str:
    """Which groups did not come back in the reruns."""
    ids = ", ".join(str(g) for g in stable["unstable"])
    return (
        f"Group(s) {ids} did not come back when the grouping was rerun on subsamples "
        f"(mean Jaccard below {stable['threshold']}): treat them as cuts through a "
        "continuum rather than distinct groups."
    )


def group_count_message(stable: dict[str, Any]) -> str:
    """The note that the automatic number of groups changed between reruns."""
    counts = ", ".join(str(count) for count in stable["rerun_groups"])
    share = round(100 * stable["fraction"])
    return (
        f"The number of groups is not settled: reruns of the grouping on {share} % of the "
        f"images found {counts} groups, where this sort found {stable['n_groups']}. If you "
        "know how many conditions the folder holds, sort again with --k."
    )


def class_looks_message(parts: str) -> str:
    """The note that the true classes differ in how their images look."""
    return (
        f"The true classes differ in how their images look: {parts}. This may be how "
        "the conditions look, or how their images were taken; none of it alone tells "
        "the classes apart."
    )


def label_conflicts_message(n: int) -> str:
    """The warning for near-identical pairs filed under two labels."""
    return (
        f"{n} pairs of nearly identical images carry different labels: the same picture "
        "may be filed under two conditions. See near_duplicates.csv."
    )


def exact_duplicates_message(exact: dict[str, Any]) -> str:
    """The warning for byte-identical files."""
    return (
        f"{exact['n_items']} files are byte-identical copies "
        f"({exact['n_sets']} sets; {exact['n_removable']} could be dropped): "
        "see duplicates.csv."
    )


def near_duplicates_message(near: dict[str, Any]) -> str:
    """The note for near-identical pairs, with the signals that agreed."""
    return (
        f"{near['n_pairs']} pairs of images look nearly identical ({near['n_items']} "
        f"images), each confirmed by at least {near['min_signals']} independent "
        f"signals (image model {near['n_by_embedding']}, content correlation "
        f"{near['n_by_pixels']}, perceptual hash {near['n_by_hash']}; up to flips "
        "and quarter-turns): resized, re-encoded, flipped or rotated copies inflate "
        "groups and leak between train and test "
        "splits; see near_duplicates.csv."
    )


def outliers_message(n: int) -> str:
    """The note for images far from every other."""
    return (
        f"{n} images are far from every other image: "
        "see outliers.csv (wrong modality, corrupt or unusual images)."
    )


def quality_message(by_flag: dict[str, int]) -> str:
    """The note listing the image-quality flags and their counts."""
    detail = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in by_flag.items())
    return f"Image-quality flags: {detail}; see quality.csv."
