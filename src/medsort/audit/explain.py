"""Per-group explanations: what sets each group apart from the others of its modality.

For every group, each attribute (file, path, DICOM, user metadata and the image-derived
appearance attributes of :mod:`medsort.io.appearance`) is compared between the group and
the rest of its modality group:

* categorical attributes by the level most over-represented in the group, with its
  share in the group and in the rest ("mostly JPEG (95% vs 10%)"); effect = total
  variation distance of the two distributions;
* appearance attributes by the rank statistic ``|2 AUC - 1|`` of the raw values (0 = the
  same, 1 = every image of the group above or below every other), phrased with the word
  for the direction ("sharper", "darker border (vignette) in 81% vs 12%").

Phrases with an effect of at least ``min_effect`` are kept, most distinctive first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from medsort.audit.attributes import Attribute
from medsort.io import appearance

MIN_EFFECT = 0.3
MAX_PHRASES = 4


def group_explanations(
    attributes: list[Attribute],
    raw: pd.DataFrame,
    groups: np.ndarray,
    modality: np.ndarray,
    min_effect: float = MIN_EFFECT,
    min_size: int = 5,
    skip: tuple[str, ...] = (),
) -> dict[str, list[dict[str, Any]]]:
    """``{group id: [{"attribute", "source", "effect", "text"}, ...]}``, strongest first.

    Parameters
    ----------
    attributes : list of Attribute
        The discretised attributes of the audit.
    raw : DataFrame
        The undiscretised values per row (used for appearance attributes).
    groups, modality : ndarray of shape (n,)
        Final group and modality group of each row.
    min_effect : float
        Smallest effect worth a phrase.
    min_size : int
        Groups (and rests) smaller than this are not explained.
    skip : tuple of str
        Attribute names never used (e.g. content-dependent ones).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for g in np.unique(groups):
        inside = groups == g
        rest = (modality == modality[inside][0]) & ~inside
        if inside.sum() < min_size or rest.sum() < min_size:
            out[str(g)] = []
            continue
        phrases = []
        for attribute in attributes:
            if attribute.name in skip:
                continue
            if attribute.source == "image" and attribute.name in raw.columns:
                values = pd.to_numeric(raw[attribute.name], errors="coerce").to_numpy(float)
                phrase = _numeric_phrase(attribute.name, values, inside, rest, min_size)
            else:
                phrase = _categorical_phrase(attribute, inside, rest)
            if phrase is not None and phrase[0] >= min_effect:
                phrases.append(
                    {
                        "attribute": attribute.name,
                        "source": attribute.source,
                        "effect": round(phrase[0], 3),
                        "text": phrase[1],
                    }
                )
        phrases.sort(key=lambda p: -p["effect"])
        out[str(g)] = phrases[:MAX_PHRASES]
    return out


def _categorical_phrase(
    attribute: Attribute, inside: np.ndarray, rest: np.ndarray
) -> tuple[float, str] | None:
    k = len(attribute.levels)
    p_in = np.bincount(attribute.codes[inside], minlength=k) / inside.sum()
    p_rest = np.bincount(attribute.codes[rest], minlength=k) / rest.sum()
    effect = 0.5 * float(np.abs(p_in - p_rest).sum())
    level = int(np.argmax(p_in - p_rest))
    name = attribute.name.replace("_", " ")
    value = attribute.levels[level]
    if attribute.name in ("format", "mode", "compression"):
        label = value
    else:
        label = f"{name} {value}"
    lead = "mostly" if p_in[level] >= 0.5 else "more often"
    return effect, f"{lead} {label} ({p_in[level]:.0%} vs {p_rest[level]:.0%})"


def _numeric_phrase(
    name: str, values: np.ndarray, inside: np.ndarray, rest: np.ndarray, min_size: int
) -> tuple[float, str] | None:
    a, b = values[inside], values[rest]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < min_size or len(b) < min_size:
        return None
    ranks = rankdata(np.concatenate([a, b]))
    auc = (ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b))
    effect = abs(2 * auc - 1)
    _, higher, lower = appearance.DESCRIPTIONS[name]
    word = higher if auc > 0.5 else lower
    level = appearance.PRESENCE.get(name)
    if level is not None and auc > 0.5:
        share_in, share_rest = float(np.mean(a > level)), float(np.mean(b > level))
        if share_in - share_rest >= 0.1:
            return effect, f"{word} in {share_in:.0%} vs {share_rest:.0%}"
    centre_a, centre_b, kind = np.median(a), np.median(b), "median"
    if centre_a == centre_b:  # mostly zeros (no padding, no marks): the means differ
        centre_a, centre_b, kind = a.mean(), b.mean(), "mean"
    return effect, f"{word} ({kind} {_num(centre_a)} vs {_num(centre_b)})"


def strongest_contrast(
    name: str, raw: pd.DataFrame, groups: np.ndarray, modality: np.ndarray, min_size: int = 5
) -> tuple[int, str] | None:
    """The group that differs most from the rest of its modality in appearance ``name``."""
    values = pd.to_numeric(raw[name], errors="coerce").to_numpy(float)
    best = None
    for g in np.unique(groups):
        inside = groups == g
        rest = (modality == modality[inside][0]) & ~inside
        phrase = _numeric_phrase(name, values, inside, rest, min_size)
        if phrase is not None and (best is None or phrase[0] > best[0]):
            best = (phrase[0], int(g), phrase[1])
    return None if best is None else (best[1], best[2])


def _num(value: float) -> str:
    return f"{value:.3g}"


def texts(explanations: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """The plain-words strings only (the ``group_explanations`` key of ``audit.json``)."""
    return {g: [p["text"] for p in phrases] for g, phrases in explanations.items()}
