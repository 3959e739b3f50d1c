"""Zero-shot scores from a text-capable encoder: prompt ensembles against image embeddings.

Each label becomes one unit vector: the mean of its template prompts ("this is an image
of pneumonia", ...) and, when it has descriptions, the mean of those sentences; the two
means are averaged (TransMed-style richer label text) and normalised again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsort.name.vocabulary import Label

if TYPE_CHECKING:  # torch comes with the registry; text scoring itself needs only numpy
    from medsort.embed.registry import Encoder, TextEncoder

DEFAULT_LOGIT_SCALE = 100.0


def has_text(encoder: Encoder | None) -> bool:
    """Whether ``encoder`` can embed text into its image space."""
    return encoder is not None and callable(getattr(encoder, "embed_text", None))


def prompt_texts(label: Label, templates: Sequence[str], context: str | None = None) -> list[str]:
    """The template prompts for ``label``; ``context`` (a modality) is appended to the name.

    >>> prompt_texts(Label("pneumonia"), ["a photo of {}"], context="chest X-ray")
    ['a photo of pneumonia, chest X-ray']
    """
    phrase = label.name if context is None else f"{label.name}, {context}"
    return [template.format(phrase) for template in templates]


def label_embeddings(
    encoder: TextEncoder,
    labels: Sequence[Label],
    templates: Sequence[str],
    contexts: Sequence[str | None] | None = None,
) -> np.ndarray:
    """One unit vector per label from its prompt ensemble and descriptions.

    Parameters
    ----------
    encoder : TextEncoder
        Embeds all prompts in one call.
    labels : sequence of Label
        The candidate names.
    templates : sequence of str
        Prompt templates with a ``{}`` for the name.
    contexts : sequence of str or None, optional
        Per label, a modality name to qualify the prompts with (used when conditions of
        several modalities compete).

    Returns
    -------
    ndarray of shape (n_labels, dim)
    """
    contexts = contexts if contexts is not None else [None] * len(labels)
    prompt_sets = [
        prompt_texts(lab, templates, ctx) for lab, ctx in zip(labels, contexts, strict=True)
    ]
    description_sets = [list(lab.descriptions) for lab in labels]
    texts = [t for group in prompt_sets + description_sets for t in group]
    vectors = _unit(np.asarray(encoder.embed_text(texts), dtype=np.float64))
    out = np.zeros((len(labels), vectors.shape[1]))
    start = 0
    prompt_means, start = _block_means(vectors, prompt_sets, start)
    description_means, _ = _block_means(vectors, description_sets, start)
    for index, (prompt, description) in enumerate(
        zip(prompt_means, description_means, strict=True)
    ):
        out[index] = prompt if description is None else _unit(prompt) + _unit(description)
    return _unit(out).astype(np.float32)


def text_probabilities(
    embeddings: np.ndarray, label_vectors: np.ndarray, logit_scale: float = DEFAULT_LOGIT_SCALE
) -> np.ndarray:
    """Per-image softmax over labels of ``logit_scale`` times the cosine similarity.

    Returns
    -------
    ndarray of shape (n_images, n_labels)
        Rows sum to one.
    """
    logits = logit_scale * (_unit(embeddings.astype(np.float64)) @ label_vectors.T)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def logit_scale_of(encoder: Encoder) -> float:
    """The encoder's learned ``logit_scale`` (CLIP temperature), else 100."""
    value = getattr(encoder, "logit_scale", None)
    if value is None:
        return DEFAULT_LOGIT_SCALE
    value = float(np.asarray(value.detach() if hasattr(value, "detach") else value))
    return value if np.isfinite(value) and value > 0 else DEFAULT_LOGIT_SCALE


def _block_means(
    vectors: np.ndarray, sets: list[list[str]], start: int
) -> tuple[list[np.ndarray | None], int]:
    means: list[np.ndarray | None] = []
    for texts in sets:
        block = vectors[start : start + len(texts)]
        means.append(block.mean(axis=0) if len(texts) else None)
        start += len(texts)
    return means, start


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
