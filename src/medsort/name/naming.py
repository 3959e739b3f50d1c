"""``name_groups``: give modality groups and groups human names, or an honest "unnamed".

Sources, in order of preference:

* ``reference`` (any encoder): a few labelled images; labels ``"modality/condition"``
  also name the modality groups.
* a text-capable encoder (e.g. BiomedCLIP): zero-shot against a vocabulary of modalities
  and their conditions. Condition candidates come from the modality group's named
  modality, or from every modality when that name was not confident.
* neither: every name is ``"unnamed"``.

With references and a text encoder, references name the groups and, when their labels
carry no modality, the text vocabulary names the modality groups.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsort.embed.cache import CacheSpec
from medsort.embed.registry import Encoder
from medsort.name.reference import References, embed_references, reference_probabilities
from medsort.name.scores import (
    UNNAMED,
    GroupName,
    merge_same_names,
    name_group,
    top_k_strings,
)
from medsort.name.text import has_text, label_embeddings, logit_scale_of, text_probabilities
from medsort.name.vocabulary import Label, Vocabulary, load_vocabulary
from medsort.results import SortResult

MIN_CONFIDENCE = 0.5
"""Default: a name needs the members' mean probability of it to reach one half."""
MIN_MARGIN = 0.1
"""Default: the best label must lead the runner-up by this much. Calibrated on dev sets
(``benchmarks/bench_naming.py``, 2026-12-01): with confidence >= 0.5, names were right
68.4% of the time (117 names) without a margin and 68.4% (114) at 0.1 — a near-tie is a
coin flip, so it stays unnamed at no cost; 0.3 would raise precision to 77% but drop 16
right names for 18 wrong ones, so it is not the default."""
MARGIN_CALIBRATION = {
    "min_margin": MIN_MARGIN,
    "precision": 0.684,
    "n_named": 114,
    "sets": (
        "reference naming on lung histology, chest X-ray, dermoscopy, brain MRI, breast "
        "ultrasound and blood cells; 1-10 references per class, 2 draws"
    ),
}
"""How often best guesses at or above ``MIN_MARGIN`` were right on labelled dev sets
(reference naming, ``benchmarks/bench_naming.py``); shown next to every name."""
NAME_COLUMNS = ["modality_name", "group_name", "name_confidence", "top3"]


@dataclass
class _Scores:
    """Per-image probabilities over ``labels`` for a subset of rows."""

    labels: list[str]
    probabilities: np.ndarray


def name_groups(
    result: SortResult,
    encoder: Encoder | None,
    reference: Path | str | None = None,
    vocabulary: Path | str | None = None,
    min_confidence: float = MIN_CONFIDENCE,
    cache: CacheSpec = None,
    progress: bool = False,
    min_margin: float = MIN_MARGIN,
) -> SortResult:
    """A copy of ``result`` whose assignments carry names, confidences and top-3 labels.

    Parameters
    ----------
    result : SortResult
        A finished sort (``modality_group`` and ``group`` columns, embeddings).
    encoder : Encoder or None
        The encoder that made ``result.embeddings``; text naming needs ``embed_text``.
    reference : Path, str or None
        A folder with one sub-folder per label, or a ``path,label`` CSV.
    vocabulary : Path, str or None
        A JSON vocabulary that extends or replaces the built-in one (text naming only).
    min_confidence : float
        Names whose confidence (mean member probability) is below this stay ``"unnamed"``.
    cache : None, False, Path or EmbeddingCache
        Embedding cache for the reference images: ``None`` the usual folder, ``False``
        none (see :data:`~medsort.embed.cache.CacheSpec`).
    progress : bool
        Show a progress bar while embedding references.
    min_margin : float
        Names leading the runner-up by less than this stay ``"unnamed"`` (see
        :data:`MARGIN_CALIBRATION` for how often names above the default were right).

    Returns
    -------
    SortResult
        New ``assignments`` with ``modality_name``, ``group_name``, ``name_confidence``
        and ``top3``; ``run.extra["naming"]`` lists every name with its runner-up.
    """
    assignments = result.assignments.drop(columns=NAME_COLUMNS, errors="ignore").copy()
    embeddings = np.asarray(result.embeddings, dtype=np.float64)
    refs = None
    if reference is not None:
        if encoder is None:
            raise ValueError("Naming from references needs the encoder that made the sort.")
        options = result.run.read_options()
        refs = embed_references(reference, encoder, cache, options, progress)
    text = has_text(encoder) and (refs is None or not _has_modality_part(refs.labels))
    vocab = load_vocabulary(vocabulary) if text else None
    cuts = (min_confidence, min_margin)
    modality_names = _name_modalities(assignments, embeddings, encoder, refs, vocab, cuts)
    group_names, top3 = _name_conditions(
        assignments, embeddings, encoder, refs, vocab, modality_names, cuts
    )
    _fill_columns(assignments, modality_names, group_names, top3)
    naming = _naming_record(refs, reference, vocab, cuts, modality_names, group_names)
    return replace(result, assignments=assignments, run=result.run.with_extra(naming=naming))


def _name_modalities(
    assignments: pd.DataFrame,
    embeddings: np.ndarray,
    encoder: Encoder | None,
    refs: References | None,
    vocab: Vocabulary | None,
    cuts: tuple[float, float],
) -> dict[int, GroupName]:
    if refs is not None and _has_modality_part(refs.labels):
        modality_labels = np.array([_split(label)[0] for label in refs.labels], dtype=object)
        labels, probabilities = reference_probabilities(embeddings, refs.vectors, modality_labels)
        scores = _Scores(labels, probabilities)
    elif vocab is not None and encoder is not None:
        modalities = [m.label for m in vocab.modalities]
        vectors = label_embeddings(encoder, modalities, vocab.templates)  # type: ignore[arg-type]
        probabilities = text_probabilities(embeddings, vectors, logit_scale_of(encoder))
        scores = _Scores([m.name for m in modalities], probabilities)
    else:
        return {}
    codes = assignments["modality_group"].to_numpy()
    return {
        int(m): name_group(int(m), scores.labels, scores.probabilities[codes == m], *cuts)
        for m in np.unique(codes)
    }


def _name_conditions(
    assignments: pd.DataFrame,
    embeddings: np.ndarray,
    encoder: Encoder | None,
    refs: References | None,
    vocab: Vocabulary | None,
    modality_names: dict[int, GroupName],
    cuts: tuple[float, float],
) -> tuple[dict[int, GroupName], list[str]]:
    top3 = [""] * len(assignments)
    names: dict[int, GroupName] = {}
    if refs is None and vocab is None:
        return names, top3
    modality_codes = assignments["modality_group"].to_numpy()
    groups = assignments["group"].to_numpy()
    for modality in np.unique(modality_codes):
        rows = np.flatnonzero(modality_codes == modality)
        named = modality_names.get(int(modality))
        modality_name = named.name if named is not None and named.named else None
        if refs is not None:
            scores = _reference_condition_scores(embeddings, rows, refs, modality_name)
        else:
            scores = _text_condition_scores(embeddings[rows], encoder, vocab, modality_name)
        if scores is None:
            continue
        for index, text in zip(
            rows, top_k_strings(scores.labels, scores.probabilities), strict=True
        ):
            top3[index] = text
        for group in np.unique(groups[rows]):
            members = groups[rows] == group
            names[int(group)] = name_group(
                int(group), scores.labels, scores.probabilities[members], *cuts
            )
    return names, top3


def _reference_condition_scores(
    embeddings: np.ndarray, rows: np.ndarray, refs: References, modality: str | None
) -> _Scores:
    keep = np.ones(len(refs.labels), dtype=bool)
    if modality is not None and _has_modality_part(refs.labels):
        keep = np.array([_split(label)[0] == modality for label in refs.labels])
    # Centre on every sorted image, so the space is the same for all modality groups.
    labels, probabilities = reference_probabilities(
        embeddings, refs.vectors[keep], refs.labels[keep]
    )
    conditions = [_split(label)[1] for label in labels]
    return _Scores(*merge_same_names(conditions, probabilities[rows]))


def _text_condition_scores(
    embeddings: np.ndarray,
    encoder: Encoder | None,
    vocab: Vocabulary | None,
    modality: str | None,
) -> _Scores | None:
    assert encoder is not None and vocab is not None
    conditions: list[Label] = []
    contexts: list[str | None] = []
    if modality is not None:
        conditions = list(vocab.modality(modality).conditions)
        contexts = [None] * len(conditions)
    if not conditions:  # modality unsure (or without conditions): every condition competes
        pairs = vocab.all_conditions()
        conditions = [condition for _, condition in pairs]
        contexts = [m.name for m, _ in pairs]
    if not conditions:
        return None
    vectors = label_embeddings(encoder, conditions, vocab.templates, contexts)  # type: ignore[arg-type]
    probabilities = text_probabilities(embeddings, vectors, logit_scale_of(encoder))
    return _Scores(*merge_same_names([c.name for c in conditions], probabilities))


def _fill_columns(
    assignments: pd.DataFrame,
    modality_names: dict[int, GroupName],
    group_names: dict[int, GroupName],
    top3: list[str],
) -> None:
    modality_codes = assignments["modality_group"].astype(int)
    group_codes = assignments["group"].astype(int)
    assignments["modality_name"] = [
        modality_names[m].name if m in modality_names else UNNAMED for m in modality_codes
    ]
    assignments["group_name"] = [
        group_names[g].name if g in group_names else UNNAMED for g in group_codes
    ]
    assignments["name_confidence"] = [
        group_names[g].confidence if g in group_names else 0.0 for g in group_codes
    ]
    assignments["top3"] = top3


def _naming_record(
    refs: References | None,
    reference: Path | str | None,
    vocab: Vocabulary | None,
    cuts: tuple[float, float],
    modality_names: dict[int, GroupName],
    group_names: dict[int, GroupName],
) -> dict[str, Any]:
    if refs is not None:
        method, source = "reference", str(reference)
    elif vocab is not None:
        method, source = "text", vocab.source
    else:
        method, source = "none", ""
    return {
        "method": method,
        "source": source,
        "min_confidence": cuts[0],
        "min_margin": cuts[1],
        "margin_calibration": MARGIN_CALIBRATION,
        "n_references": 0 if refs is None else int(len(refs.labels)),
        "modalities": [name.as_dict() for _, name in sorted(modality_names.items())],
        "groups": [name.as_dict() for _, name in sorted(group_names.items())],
    }


def _has_modality_part(labels: np.ndarray) -> bool:
    return len(labels) > 0 and all("/" in str(label) for label in labels)


def _split(label: str) -> tuple[str, str]:
    """``"chest X-ray/pneumonia"`` → ``("chest X-ray", "pneumonia")``; ``"a"`` → ``("", "a")``."""
    modality, _, condition = str(label).rpartition("/")
    return modality, condition
