"""Utility and detectability of every attribute for the groups (and labels), corrected for
multiple testing, and the verdict of each: ``shortcut``, ``follows_label``, ``confound``,
``visible`` or ``ok`` (Data AUDIT, arXiv 2304.03218)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsort.audit.attributes import Attribute
from medsort.audit.settings import AuditSettings
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
from medsort.results import SortResult


def modality_codes(result: SortResult) -> np.ndarray | None:
    """Modality group per row when there are several, else ``None``."""
    modality = result.assignments["modality_group"].to_numpy()
    return codes_of(modality) if len(np.unique(modality)) > 1 else None


def audit_attributes(
    result: SortResult,
    attributes: list[Attribute],
    labels: np.ndarray | None,
    settings: AuditSettings,
) -> list[dict[str, Any]]:
    """One row of scores per attribute (the ``attributes`` list of ``audit.json``).

    Detectability from a cross-validated image model of the attribute; utility, and
    detectability beyond the target, for the groups (within modality groups) and, given
    ``labels``, for the labels; q-values over every test; a verdict per target. The
    permutations draw from one generator seeded with ``settings.random_state``, in this
    order, so the same folder gives the same numbers.
    """
    rng = np.random.default_rng(settings.random_state)
    features = image_features(result.embeddings, random_state=settings.random_state)
    groups = codes_of(result.assignments["group"].to_numpy())
    modality = modality_codes(result)
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
            row.update(score_fields("detectability", seen))
            row["balanced_accuracy"] = round(balanced_accuracy(a, predicted), 4)
        targets = {
            "groups": target_scores(a, groups, predicted, labels, n_perm, rng, within=modality)
        }
        if labels is not None:
            known = labels >= 0
            targets["label"] = target_scores(
                a[known], labels[known], None if predicted is None else predicted[known],
                None, n_perm, rng,
            )  # fmt: skip
        row["targets"] = targets
        rows.append(row)
    add_q_values(rows)
    for row in rows:
        for target, scores in row["targets"].items():
            scores["verdict"] = verdict(scores, target, settings)
    return rows


def target_scores(
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
        scores.update(score_fields("utility", utility(a, t, n_perm, rng)))
    else:
        ceiling = max(conditional_entropy(a, within), 1e-12)
        scores = {
            "utility_kind": "adjusted I(A;T|modality group)/H(A|modality group)",
            "unexplained": round(conditional_entropy(a, t) / ceiling, 4),
        }
        scores.update(score_fields("utility", conditional_score(a, t, within, n_perm, rng)))
    if predicted is None:
        scores.update(detectability=None, detectability_p=None)
    else:
        scores.update(
            score_fields("detectability", conditional_score(a, predicted, t, n_perm, rng))
        )
    if labels is not None:
        known = labels >= 0
        beyond = conditional_score(a[known], t[known], codes_of(labels[known]), n_perm, rng)
        scores.update(score_fields("beyond_label", beyond))
    return scores


def score_fields(name: str, score: Score) -> dict[str, Any]:
    return {name: round(score.value, 4), f"{name}_p": score.p, f"{name}_bits": score.raw_bits}


def add_q_values(rows: list[dict[str, Any]]) -> None:
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


def significant(scores: dict[str, Any], key: str, minimum: float, alpha: float) -> bool:
    q = scores.get(f"{key}_q")
    return q is not None and q < alpha and (scores.get(key) or 0.0) >= minimum


def verdict(scores: dict[str, Any], target: str, settings: AuditSettings) -> str:
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
    useful = significant(scores, "utility", settings.min_utility, settings.alpha)
    seen = significant(scores, "detectability", settings.min_detectability, settings.alpha)
    if target == "groups" and "beyond_label" in scores:
        beyond = significant(scores, "beyond_label", settings.min_utility, settings.alpha)
        if beyond:
            return "shortcut"
        return "follows_label" if useful else ("visible" if seen else "ok")
    if useful and (seen or scores["unexplained"] < settings.determined):
        return "shortcut"
    if useful:
        return "confound"
    return "visible" if seen else "ok"
