"""``run_audit``: attributes, shortcut verdicts and hygiene for one output folder."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from medsort.audit import explain, hygiene, stability
from medsort.audit.attributes import (
    Attribute,
    align_metadata,
    collect_attributes,
    read_table,
)
from medsort.audit.shortcuts import (
    Score,
    balanced_accuracy,
    benjamini_hochberg,
    codes_of,
    conditional_entropy,
    conditional_score,
    entropy,
    image_features,
    predict_attribute,
    utility,
)
from medsort.embed.cache import keep_mask
from medsort.io import appearance, signatures
from medsort.io.outputs import write_csv, write_text
from medsort.io.readers import ReadOptions
from medsort.results import SortResult

AUDIT = "audit.json"
DUPLICATES = "duplicates.csv"
NEAR_DUPLICATES = "near_duplicates.csv"
OUTLIERS = "outliers.csv"
QUALITY = "quality.csv"

TECHNICAL_SOURCES = ("file", "path", "dicom")
CONTENT_DEPENDENT = ("file_size",)
"""Attributes that follow the image content itself (JPEG/PNG size grows with detail), so
their association with groups is expected: reported as notes, never as warnings."""


@dataclass
class AuditSettings:
    """Thresholds of the audit (the defaults are documented in ``docs/audit.md``).

    Attributes
    ----------
    alpha : float
        False discovery rate (Benjamini–Hochberg over every test of the audit).
    min_utility : float
        Smallest chance-adjusted normalised MI with the groups or labels worth reporting.
    min_detectability : float
        Smallest chance-adjusted share of ``H(A | T)`` the image model must recover.
    determined : float
        ``H(A | T) / H(A)`` below which ``A`` is (almost) a function of ``T``, so that
        "beyond T" cannot be measured; the attribute is then perfectly confounded.
    n_permutations : int
        Permutations per test.
    near_z, outlier_z : float
        Robust z-score cuts for near duplicates and outliers.
    pixel_floor : float
        Lowest content correlation the calibrated near-duplicate cut may take.
    hash_bits : int
        Largest perceptual-hash distance (of 64 bits) that counts as a copy.
    min_signals : int
        Signals (embedding, content correlation, perceptual hash) that must agree before
        a pair is called a near duplicate.
    n_neighbours : int
        Neighbours searched per image.
    quality : bool
        Re-read images for pixel statistics (quality flags, duplicate signals, and the
        appearance attributes of folders sorted before they were recorded).
    strong_utility : float
        Utility above which an appearance attribute alone nearly separates the groups (or
        the classes): a warning even without labels to compare with. Below it, an
        appearance difference is a note (it may be how the condition looks).
    stability_runs : int
        Subsampled reruns of the grouping for the stability score (0 = none).
    random_state : int
        Seed of permutations, PCA and cross-validation folds.
    """

    alpha: float = 0.05
    min_utility: float = 0.1
    min_detectability: float = 0.05
    determined: float = 0.1
    n_permutations: int = 200
    near_z: float = 4.0
    pixel_floor: float = 0.8
    hash_bits: int = 10
    min_signals: int = 2
    outlier_z: float = 3.5
    n_neighbours: int = 10
    quality: bool = True
    strong_utility: float = 0.6
    stability_runs: int = 5
    random_state: int = 0


def run_audit(
    out_dir: Path | str,
    metadata_csv: Path | str | None = None,
    truth_csv: Path | str | None = None,
    settings: AuditSettings | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Audit a sort: which attributes the groups (and labels) follow, and data hygiene.

    Parameters
    ----------
    out_dir : Path or str
        Output folder of a sort (``assignments.csv``, ``items.csv``, ``embeddings.npy``).
    metadata_csv : Path or str, optional
        Extra per-image attributes: ``path`` (relative to the sorted folder) and any columns.
    truth_csv : Path or str, optional
        ``path,label``: known labels, used only to audit (never to group).
    settings : AuditSettings, optional
        Thresholds; the defaults suit most sets.
    write : bool
        Write ``audit.json`` and the hygiene CSVs into ``out_dir``.

    Returns
    -------
    dict
        The content of ``audit.json``: ``attributes``, ``ignored``, ``findings`` (flagged,
        in plain language), ``hygiene`` and ``timings_s``.
    """
    settings = settings or AuditSettings()
    with threadpool_limits(limits=1), _faiss_threads(1):
        audit, tables = _audit(Path(out_dir), metadata_csv, truth_csv, settings)
    if write:
        _write(Path(out_dir), audit, tables)
    return audit


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """Small problems run faster on one thread, and the CPUs are often shared."""
    try:
        import faiss
    except ImportError:  # pragma: no cover
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _audit(
    out_dir: Path,
    metadata_csv: Path | str | None,
    truth_csv: Path | str | None,
    settings: AuditSettings,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    result = SortResult.load(out_dir)
    hashes = _row_hashes(result)
    timings["load+hash"] = time.perf_counter() - clock

    clock = time.perf_counter()
    pixels = _pixel_rows(result, settings)
    items = result.items
    if pixels is not None and pixels.appearance is not None:
        items = pd.concat([items.reset_index(drop=True), pixels.appearance], axis=1)
    timings["pixels"] = time.perf_counter() - clock

    clock = time.perf_counter()
    labels = _truth_codes(result, truth_csv)
    metadata = None
    if metadata_csv is not None:
        metadata = align_metadata(result.items, read_table(metadata_csv))
    exclude = ("label",) if truth_csv is not None else ()
    attributes, ignored = collect_attributes(items, metadata, exclude=exclude)
    rows = _audit_attributes(result, attributes, labels, settings)
    findings = _findings(rows, result, attributes, items, labels is not None, settings)
    groups = result.assignments["group"].to_numpy()
    modality = result.assignments["modality_group"].to_numpy()
    explained = explain.group_explanations(
        attributes, items, groups, modality, skip=CONTENT_DEPENDENT
    )
    verdict = _grouping_verdict(rows, labels, groups, settings)
    findings = _verdict_findings(verdict) + findings
    timings["attributes"] = time.perf_counter() - clock

    clock = time.perf_counter()
    stable = {"per_group": {}, "unstable": [], "overall": None, "n_runs": 0}
    if settings.stability_runs > 0:
        stable = stability.group_stability(
            result.embeddings,
            groups,
            n_clusters=result.run.get("n_clusters"),
            n_runs=settings.stability_runs,
            random_state=settings.random_state,
        )
    findings += _stability_findings(stable)
    timings["stability"] = time.perf_counter() - clock

    clock = time.perf_counter()
    hygiene_tables, hygiene_summary = _hygiene(result, hashes, pixels, settings)
    if labels is not None:
        hygiene_summary["label_conflicts"] = _label_conflicts(
            hygiene_tables[NEAR_DUPLICATES], result, labels
        )
    findings += _hygiene_findings(hygiene_summary)
    timings["hygiene"] = time.perf_counter() - clock

    audit = {
        "version": 2,
        "n_items": len(result.assignments),
        "targets": ["groups"] + (["label"] if labels is not None else []),
        "settings": settings.__dict__,
        "metadata_csv": None if metadata_csv is None else str(metadata_csv),
        "truth_csv": None if truth_csv is None else str(truth_csv),
        "findings": findings,
        "attributes": rows,
        "ignored": [{"name": i.name, "reason": i.reason} for i in ignored],
        "group_explanations": explain.texts(explained),
        "group_explanation_details": explained,
        "grouping_verdict": verdict,
        "stability": stable,
        "hygiene": hygiene_summary,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    return audit, hygiene_tables


# --- loading -----------------------------------------------------------------------------


def _row_hashes(result: SortResult) -> list[str]:
    if "hash" in result.items.columns:  # recorded by the embed stage
        return result.items["hash"].astype(str).tolist()
    paths = result.assignments["path"].tolist()
    unique = list(dict.fromkeys(paths))
    digests = hygiene.file_hashes([result.source_path(p) for p in unique])
    lookup = dict(zip(unique, digests, strict=True))
    return [lookup[p] for p in paths]


def _modality_codes(result: SortResult) -> np.ndarray | None:
    """Modality group per row when there are several, else ``None``."""
    modality = result.assignments["modality_group"].to_numpy()
    return codes_of(modality) if len(np.unique(modality)) > 1 else None


def _truth_codes(result: SortResult, truth_csv: Path | str | None) -> np.ndarray | None:
    """Label code per row, ``-1`` where the file has no label; ``None`` without a CSV."""
    if truth_csv is None:
        return None
    from medsort.evaluate import read_truth

    truth = read_truth(Path(truth_csv)).drop_duplicates("path")
    merged = result.assignments[["path"]].merge(truth, on="path", how="left")
    labelled = merged["label"].notna() & (merged["label"] != "")
    if not labelled.any():
        raise ValueError(f"No path of {truth_csv} matches assignments.csv.")
    codes = np.full(len(merged), -1, dtype=np.int64)
    codes[labelled.to_numpy()] = codes_of(merged.loc[labelled, "label"].to_numpy())
    return codes


# --- attributes --------------------------------------------------------------------------


def _audit_attributes(
    result: SortResult,
    attributes: list[Attribute],
    labels: np.ndarray | None,
    settings: AuditSettings,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(settings.random_state)
    features = image_features(result.embeddings, random_state=settings.random_state)
    groups = codes_of(result.assignments["group"].to_numpy())
    modality = _modality_codes(result)
    n_perm = settings.n_permutations
    rows = []
    for attribute in attributes:
        a = attribute.codes
        predicted = predict_attribute(features, a, random_state=settings.random_state)
        row: dict[str, Any] = {
            "name": attribute.name,
            "source": attribute.source,
            "kind": attribute.kind,
            "levels": attribute.levels,
            "counts": attribute.counts.tolist(),
            "entropy_bits": round(entropy(a), 4),
        }
        if predicted is None:
            row.update(detectability=None, detectability_p=None, balanced_accuracy=None)
        else:
            seen = conditional_score(a, predicted, None, n_perm, rng)
            row.update(_score("detectability", seen))
            row["balanced_accuracy"] = round(balanced_accuracy(a, predicted), 4)
        targets = {
            "groups": _target_scores(a, groups, predicted, labels, n_perm, rng, within=modality)
        }
        if labels is not None:
            known = labels >= 0
            targets["label"] = _target_scores(
                a[known], labels[known], None if predicted is None else predicted[known],
                None, n_perm, rng,
            )  # fmt: skip
        row["targets"] = targets
        rows.append(row)
    _correct(rows)
    for row in rows:
        for target, scores in row["targets"].items():
            scores["verdict"] = _verdict(scores, target, settings)
    return rows


def _target_scores(
    a: np.ndarray,
    t: np.ndarray,
    predicted: np.ndarray | None,
    labels: np.ndarray | None,
    n_perm: int,
    rng: np.random.Generator,
    within: np.ndarray | None = None,
) -> dict[str, Any]:
    """Utility and detectability of ``a`` for target ``t``.

    With ``within`` (modality groups), utility is measured inside each modality group:
    X-rays and slides differ in format and size as a matter of course, so only the
    condition groups of one modality differing by ``a`` is a shortcut.
    """
    t = codes_of(t)
    a = codes_of(a)
    if within is None:
        scores: dict[str, Any] = {
            "utility_kind": "adjusted I(A;T)/min(H(A),H(T))",
            "unexplained": round(conditional_entropy(a, t) / max(entropy(a), 1e-12), 4),
        }
        scores.update(_score("utility", utility(a, t, n_perm, rng)))
    else:
        ceiling = max(conditional_entropy(a, within), 1e-12)
        scores = {
            "utility_kind": "adjusted I(A;T|modality group)/H(A|modality group)",
            "unexplained": round(conditional_entropy(a, t) / ceiling, 4),
        }
        scores.update(_score("utility", conditional_score(a, t, within, n_perm, rng)))
    if predicted is None:
        scores.update(detectability=None, detectability_p=None)
    else:
        scores.update(_score("detectability", conditional_score(a, predicted, t, n_perm, rng)))
    if labels is not None:
        known = labels >= 0
        beyond = conditional_score(a[known], t[known], codes_of(labels[known]), n_perm, rng)
        scores.update(_score("beyond_label", beyond))
    return scores


def _score(name: str, score: Score) -> dict[str, Any]:
    return {name: round(score.value, 4), f"{name}_p": score.p, f"{name}_bits": score.raw_bits}


def _correct(rows: list[dict[str, Any]]) -> None:
    """Benjamini–Hochberg over every p-value of the audit, written as ``*_q``."""
    slots = []
    for row in rows:
        slots += [(row, "detectability")]
        for scores in row["targets"].values():
            slots += [(scores, k) for k in ("utility", "detectability", "beyond_label")]
    present = [(holder, key) for holder, key in slots if holder.get(f"{key}_p") is not None]
    q = benjamini_hochberg(np.array([holder[f"{key}_p"] for holder, key in present]))
    for (holder, key), value in zip(present, q, strict=True):
        holder[f"{key}_q"] = float(value)
        holder[f"{key}_p"] = float(holder[f"{key}_p"])
        holder[f"{key}_bits"] = round(float(holder[f"{key}_bits"]), 5)
    for holder, key in slots:
        holder.setdefault(f"{key}_q", None)


def _significant(scores: dict[str, Any], key: str, minimum: float, alpha: float) -> bool:
    q = scores.get(f"{key}_q")
    return q is not None and q < alpha and (scores.get(key) or 0.0) >= minimum


def _verdict(scores: dict[str, Any], target: str, settings: AuditSettings) -> str:
    """``shortcut``, ``follows_label``, ``confound``, ``visible`` or ``ok``.

    shortcut
        ``A`` goes with the target (utility) and the image shows it beyond the target
        (detectability), or ``A`` is almost a function of the target (cannot be separated).
        For groups with known labels: the groups follow ``A`` beyond the label.
    follows_label
        Groups differ in ``A`` but only as far as the true classes do.
    confound
        ``A`` goes with the target but the image does not show it beyond that.
    visible
        The image shows ``A`` beyond the target, but ``A`` does not go with it.
    """
    useful = _significant(scores, "utility", settings.min_utility, settings.alpha)
    seen = _significant(scores, "detectability", settings.min_detectability, settings.alpha)
    if target == "groups" and "beyond_label" in scores:
        beyond = _significant(scores, "beyond_label", settings.min_utility, settings.alpha)
        if beyond:
            return "shortcut"
        return "follows_label" if useful else ("visible" if seen else "ok")
    if useful and (seen or scores["unexplained"] < settings.determined):
        return "shortcut"
    if useful:
        return "confound"
    return "visible" if seen else "ok"


# --- findings ----------------------------------------------------------------------------


def _findings(
    rows: list[dict[str, Any]],
    result: SortResult,
    attributes: list[Attribute],
    items: pd.DataFrame,
    has_truth: bool,
    settings: AuditSettings,
) -> list[dict[str, Any]]:
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
            level = _level(row, target, scores, has_truth, settings)
            if row["source"] == "image":
                message = _appearance_message(
                    row["name"], items, groups, modality, scores, target, level, has_truth
                )
            elif target == "groups":
                message = _groups_message(attribute, groups, scores, has_truth, modality)
            else:
                message = _label_message(attribute, row, scores, verdict)
            findings.append(
                {
                    "level": level,
                    "kind": "attribute",
                    "attribute": row["name"],
                    "source": row["source"],
                    "target": target,
                    "verdict": verdict,
                    "utility": scores["utility"],
                    "detectability": scores["detectability"],
                    "message": message,
                }
            )
    findings = _merge_class_looks(findings, rows)
    findings = _merge_group_looks(findings)
    findings.sort(key=lambda f: (f["level"] != "warning", -(f["utility"] or 0)))
    return findings


def _merge_class_looks(
    findings: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One note for every appearance attribute that merely differs between the classes."""
    looks = [
        f for f in findings
        if f["source"] == "image" and f["target"] == "label" and f["level"] == "note"
    ]  # fmt: skip
    if not looks:
        return findings
    groups_utility = {r["name"]: r["targets"]["groups"]["utility"] for r in rows}
    parts = ", ".join(
        f"{appearance.WORDS[f['attribute']]} (utility {f['utility']:.2f} for the labels, "
        f"{groups_utility[f['attribute']]:.2f} for the groups)"
        for f in sorted(looks, key=lambda f: -(f["utility"] or 0))
    )
    merged = {
        "level": "note",
        "kind": "attribute",
        "attribute": looks[0]["attribute"] if len(looks) == 1 else None,
        "attributes": [f["attribute"] for f in looks],
        "source": "image",
        "target": "label",
        "verdict": "class_look",
        "utility": max(f["utility"] or 0 for f in looks),
        "detectability": None,
        "message": (
            f"The true classes differ in how their images look: {parts}. This may be how "
            "the conditions look, or how their images were taken; none of it alone tells "
            "the classes apart."
        ),
    }
    return [f for f in findings if f not in looks] + [merged]


def _merge_group_looks(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One warning for every appearance attribute the groups follow (strongest first)."""
    looks = [
        f for f in findings
        if f["source"] == "image" and f["target"] == "groups" and f["level"] == "warning"
    ]  # fmt: skip
    if len(looks) < 2:
        return findings
    looks.sort(key=lambda f: -(f["utility"] or 0))
    others = ", ".join(
        f"{appearance.WORDS[f['attribute']]} ({f['utility']:.2f})" for f in looks[1:]
    )
    merged = dict(looks[0])
    merged["attributes"] = [f["attribute"] for f in looks]
    merged["message"] = f"{looks[0]['message']} They also follow {others}."
    return [f for f in findings if f not in looks] + [merged]


def _level(
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


def _appearance_message(
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


def _grouping_verdict(
    rows: list[dict[str, Any]],
    labels: np.ndarray | None,
    groups: np.ndarray,
    settings: AuditSettings,
) -> dict[str, Any]:
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
        return {"verdict": "ok", "attribute": None, "utility": None, "label_utility": None}
    other = best(("file", "path", "dicom", "metadata"))
    label_utility = None
    if labels is not None:
        known = labels >= 0
        rng = np.random.default_rng(settings.random_state)
        label_utility = utility(
            labels[known], codes_of(groups[known]), settings.n_permutations, rng
        ).value
    verdict = {
        "verdict": "ok",
        "attribute": None,
        "utility": None,
        "label_utility": None if label_utility is None else round(label_utility, 4),
    }
    if look is None:
        return verdict
    value = look["targets"]["groups"]["utility"]
    beats_other = other is None or value >= other["targets"]["groups"]["utility"]
    if label_utility is not None:
        follows = beats_other and value > label_utility
    else:
        follows = beats_other and look["name"] in appearance.ACQUISITION
    if follows:
        verdict.update(verdict="appearance", attribute=look["name"], utility=value)
    return verdict


def _verdict_findings(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    if verdict["verdict"] != "appearance":
        return []
    name = appearance.WORDS[verdict["attribute"]]
    versus = (
        f" and more than they follow the true labels ({verdict['label_utility']:.2f})"
        if verdict["label_utility"] is not None
        else ""
    )
    return [
        {
            "level": "warning",
            "kind": "verdict",
            "attribute": verdict["attribute"],
            "source": "image",
            "target": "groups",
            "verdict": "appearance",
            "utility": verdict["utility"],
            "detectability": None,
            "message": (
                f"These groups may follow how the images were taken, not the condition: "
                f"above all they differ in {name}, more than in any file or metadata "
                f"attribute{versus}. Look at what sets each group apart below before "
                f"reading them as diagnoses. (utility {verdict['utility']:.2f})"
            ),
        }
    ]


def _stability_findings(stable: dict[str, Any]) -> list[dict[str, Any]]:
    if not stable.get("unstable"):
        return []
    ids = ", ".join(str(g) for g in stable["unstable"])
    return [
        _hygiene_finding(
            "stability",
            f"Group(s) {ids} did not come back when the grouping was rerun on subsamples "
            f"(mean Jaccard below {stable['threshold']}): treat them as cuts through a "
            "continuum rather than distinct groups.",
        )
    ]


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


def _groups_message(
    attribute: Attribute,
    groups: np.ndarray,
    scores: dict[str, Any],
    has_truth: bool,
    modality: np.ndarray | None = None,
) -> str:
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


def _label_message(
    attribute: Attribute, row: dict[str, Any], scores: dict[str, Any], verdict: str
) -> str:
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


# --- hygiene -----------------------------------------------------------------------------


def _pixel_rows(result: SortResult, settings: AuditSettings) -> hygiene.PixelPass | None:
    """The pixel measures of every row (``None`` when not asked).

    They come from the signatures the read pass recorded (``signatures.npz``), so a sort's
    audit decodes no image; folders sorted before they were recorded are re-read once per
    file through the readers (:func:`hygiene.pixel_pass`). Either way, rows of multi-item
    files (slices, frames, tiles) get NaN statistics and zero descriptors, as the re-read
    measures only their first item. Appearance is measured here only for output folders
    written before the embed stage recorded it.
    """
    if not settings.quality or len(result.assignments) == 0:
        return None
    missing = not set(appearance.NAMES) <= set(result.items.columns)
    if result.signatures and not missing:
        read = _recorded_pixels(result)
    else:
        read = _reread_pixels(result, with_appearance=missing)
    assignments = result.assignments
    multi = assignments["path"].duplicated(keep=False).to_numpy()
    read.stats.loc[multi] = np.nan
    read.descriptors[multi], read.hashes[multi] = 0.0, 0
    if read.appearance is not None:
        read.appearance.loc[multi] = np.nan
    return read


def _recorded_pixels(result: SortResult) -> hygiene.PixelPass:
    stats, descriptors, hashes = signatures.unpack(result.signatures)
    frame = pd.DataFrame(stats, columns=["mean", "std", "entropy"])
    return hygiene.PixelPass(frame, descriptors.copy(), hashes.copy(), None)


def _reread_pixels(result: SortResult, with_appearance: bool) -> hygiene.PixelPass:
    """One re-read per file through the readers, spread to rows."""
    assignments = result.assignments
    unique = list(dict.fromkeys(assignments["path"]))
    options = ReadOptions(**result.run.get("read_options", {}))
    read = hygiene.pixel_pass(
        [result.source_path(p) for p in unique], options, with_appearance=with_appearance
    )
    position = {path: i for i, path in enumerate(unique)}
    rows = np.array([position[p] for p in assignments["path"]])
    stats = read.stats.iloc[rows].reset_index(drop=True)
    descriptors, hashes = read.descriptors[rows], read.hashes[rows]
    table = None
    if read.appearance is not None:
        table = read.appearance.iloc[rows].reset_index(drop=True)
    return hygiene.PixelPass(stats, descriptors, hashes, table)


def _hygiene(
    result: SortResult,
    hashes: list[str],
    pixels: hygiene.PixelPass | None,
    settings: AuditSettings,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    assignments = result.assignments
    paths, items = assignments["path"].tolist(), assignments["item"].tolist()
    exact = hygiene.exact_duplicates(paths, items, hashes)
    x = hygiene.normalise(result.embeddings)
    sims, idx = hygiene.nearest_neighbours(x, settings.n_neighbours)
    _, threshold = hygiene.near_pairs(sims, idx, paths, hashes, z=settings.near_z)
    neighbour_lists = [idx]
    pixel_threshold = None
    if pixels is not None:
        usable = np.abs(pixels.descriptors).sum(axis=1) > 0
        p_sims, p_idx = hygiene.dihedral_neighbours(pixels.descriptors, k=5)
        _, pixel_threshold = hygiene.near_pairs(
            p_sims, p_idx, paths, hashes, z=settings.near_z, floor=settings.pixel_floor,
            ceiling=0.98, usable=usable,
        )  # fmt: skip
        neighbour_lists.append(p_idx)
    a, b = hygiene.candidate_pairs(*neighbour_lists)
    thresholds = {
        "cosine": threshold,
        "pixels": pixel_threshold if pixel_threshold is not None else 1.0,
        "hash_bits": settings.hash_bits,
    }
    near = hygiene.near_duplicate_table(
        a, b, x, pixels, paths, items, hashes, thresholds, min_signals=settings.min_signals
    )
    quality = _quality(result, pixels)
    knn, z = hygiene.outlier_scores(sims)
    far = z > settings.outlier_z
    outliers = pd.DataFrame(
        {
            "path": assignments["path"][far],
            "item": assignments["item"][far],
            "group": assignments["group"][far],
            "knn_distance": np.round(knn[far], 5),
            "robust_z": np.round(z[far], 2),
        }
    ).sort_values("robust_z", ascending=False)
    summary = {
        "exact_duplicates": {
            "n_sets": int(exact["set"].nunique()) if len(exact) else 0,
            "n_items": len(exact),
            "n_removable": int((~exact["kept"].astype(bool)).sum()) if len(exact) else 0,
        },
        "near_duplicates": {
            "threshold": round(threshold, 5),
            "pixel_threshold": None if pixel_threshold is None else round(pixel_threshold, 4),
            "hash_bits": settings.hash_bits,
            "min_signals": settings.min_signals,
            "n_candidates": len(a),
            "n_pairs": len(near),
            "n_by_embedding": int(near["method"].astype(str).str.contains("embedding").sum()),
            "n_by_pixels": int(near["method"].astype(str).str.contains("pixels").sum()),
            "n_by_hash": int(near["method"].astype(str).str.contains("hash").sum()),
            "n_items": len(set(near["path_a"]) | set(near["path_b"])) if len(near) else 0,
        },
        "outliers": {
            "n_items": int(far.sum()),
            "median_knn_distance": round(float(np.median(knn)), 5) if len(knn) else None,
            "z": settings.outlier_z,
        },
        "quality": _quality_summary(quality, settings),
    }
    flagged = quality[quality["flags"] != ""] if len(quality) else quality
    tables = {DUPLICATES: exact, NEAR_DUPLICATES: near, OUTLIERS: outliers, QUALITY: flagged}
    return tables, summary


def _quality(result: SortResult, pixels: hygiene.PixelPass | None) -> pd.DataFrame:
    """Quality table per row (empty when pixels were not re-read)."""
    assignments, items = result.assignments, result.items
    columns = ["path", "item", "flags", "mean", "std", "entropy", "width", "height"]
    if pixels is None:
        return pd.DataFrame(columns=columns)
    per_row = pixels.stats
    width = items["width"] if "width" in items.columns else None
    height = items["height"] if "height" in items.columns else None
    table = pd.DataFrame({"path": assignments["path"], "item": assignments["item"]})
    table["flags"] = hygiene.quality_flags(per_row, width, height).to_numpy()
    for column in ("mean", "std", "entropy"):
        table[column] = per_row[column].round(3).to_numpy()
    table["width"] = width.to_numpy() if width is not None else ""
    table["height"] = height.to_numpy() if height is not None else ""
    return table[columns]


def _quality_summary(quality: pd.DataFrame, settings: AuditSettings) -> dict[str, Any]:
    if quality.empty:
        return {"n_items": 0, "by_flag": {}, "n_read": 0}
    flags = quality["flags"]
    names = [name for entry in flags if entry for name in entry.split(";")]
    return {
        "n_items": int((flags != "").sum()),
        "by_flag": {name: names.count(name) for name in sorted(set(names))},
        "n_read": int(quality["mean"].notna().sum()),
    }


def _label_conflicts(near: pd.DataFrame, result: SortResult, labels: np.ndarray) -> int:
    """Near-duplicate pairs whose two images carry different known labels."""
    if near.empty:
        return 0
    label_of = dict(zip(result.assignments["path"], labels, strict=True))
    a = np.array([label_of.get(p, -1) for p in near["path_a"]])
    b = np.array([label_of.get(p, -1) for p in near["path_b"]])
    return int(np.sum((a != b) & (a >= 0) & (b >= 0)))


def _hygiene_findings(summary: dict[str, Any]) -> list[dict[str, Any]]:
    findings = []
    if summary.get("label_conflicts"):
        findings.append(
            _hygiene_finding(
                "label_conflicts",
                level="warning",
                message=(
                    f"{summary['label_conflicts']} pairs of nearly identical images carry "
                    "different labels: the same picture may be filed under two conditions. "
                    "See near_duplicates.csv."
                ),
            )
        )
    exact = summary["exact_duplicates"]
    if exact["n_items"]:
        findings.append(
            _hygiene_finding(
                "exact_duplicates",
                level="warning",
                message=(
                    f"{exact['n_items']} files are byte-identical copies "
                    f"({exact['n_sets']} sets; {exact['n_removable']} could be dropped): "
                    "see duplicates.csv."
                ),
            )
        )
    near = summary["near_duplicates"]
    if near["n_pairs"]:
        findings.append(
            _hygiene_finding(
                "near_duplicates",
                f"{near['n_pairs']} pairs of images look nearly identical ({near['n_items']} "
                f"images), each confirmed by at least {near['min_signals']} independent "
                f"signals (image model {near['n_by_embedding']}, content correlation "
                f"{near['n_by_pixels']}, perceptual hash {near['n_by_hash']}; up to flips "
                "and quarter-turns): resized, re-encoded, flipped or rotated copies inflate "
                "groups and leak between train and test "
                "splits; see near_duplicates.csv.",
            )
        )
    if summary["outliers"]["n_items"]:
        findings.append(
            _hygiene_finding(
                "outliers",
                f"{summary['outliers']['n_items']} images are far from every other image: "
                "see outliers.csv (wrong modality, corrupt or unusual images).",
            )
        )
    quality = summary["quality"]
    if quality["n_items"]:
        detail = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in quality["by_flag"].items())
        findings.append(
            _hygiene_finding("quality", f"Image-quality flags: {detail}; see quality.csv.")
        )
    return findings


def _hygiene_finding(kind: str, message: str, level: str = "note") -> dict[str, Any]:
    return {"level": level, "kind": kind, "message": message}


def _write(out_dir: Path, audit: dict[str, Any], tables: dict[str, pd.DataFrame]) -> None:
    for name, table in tables.items():
        write_csv(table, out_dir / name)
    write_text(out_dir / AUDIT, json.dumps(audit, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def load_audit(out_dir: Path | str) -> dict[str, Any] | None:
    """``audit.json`` of an output folder, or ``None`` when it has not been audited."""
    path = Path(out_dir) / AUDIT
    return json.loads(path.read_text()) if path.is_file() else None


def duplicate_keep_mask(out_dir: Path | str) -> np.ndarray:
    """Rows of ``assignments.csv`` to keep when dropping exact duplicate files."""
    result = SortResult.load(Path(out_dir))
    return keep_mask(_row_hashes(result), result.assignments["path"].tolist())
