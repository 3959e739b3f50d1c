"""Zero-shot text prior for few labels (a text-capable encoder such as BiomedCLIP).

With one to five labels per class a classifier has little to go on, but a CLIP-style
encoder already knows what "adenocarcinoma" looks like from its captions. The prior is the
zero-shot probability of each labelled class for every image, from the class names (and,
where the naming vocabulary has them, their descriptions, as in TransMed). How much of
it is blended into the few-label prediction is learned on held-out labels
(:meth:`~medsort.refine.propagate.GraphLabelSpreading.fit`), so a prior that does not
help gets no weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsort.name.text import has_text, label_embeddings, logit_scale_of, text_probabilities
from medsort.name.vocabulary import Label, Vocabulary, load_vocabulary

if TYPE_CHECKING:
    from medsort.embed.registry import Encoder


def class_labels(classes: Sequence[str], vocabulary: Vocabulary) -> list[Label]:
    """The vocabulary's :class:`Label` for each class name, or a bare label of the name.

    Names are matched ignoring case, ``_`` and ``-``: first to a condition's name or one
    of its aliases (``mel`` finds "melanoma", ``Pneumonia`` finds "pneumonia"), then as
    the words of exactly one condition's name ("squamous cell carcinoma" finds "lung
    squamous cell carcinoma"; "adenocarcinoma", in lung and colon, finds nothing).
    A found class is prompted with the condition's name and descriptions (TransMed-style
    richer label text), a class not found with its own name.
    """
    conditions = [label for modality in vocabulary.modalities for label in modality.conditions]
    return [_find(name, conditions) or Label(name.replace("_", " ")) for name in classes]


def _find(name: str, conditions: list[Label]) -> Label | None:
    key = _key(name)
    for condition in conditions:
        if key in {_key(n) for n in (condition.name, *condition.aliases)}:
            return condition
    within = {c.name: c for c in conditions if f" {key} " in f" {_key(c.name)} "}
    return next(iter(within.values())) if len(within) == 1 else None


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def text_prior(
    embeddings: np.ndarray,
    encoder: Encoder,
    classes: Sequence[str],
    vocabulary: Vocabulary | None = None,
) -> np.ndarray:
    """Zero-shot probabilities of ``classes`` for every row of ``embeddings``.

    Parameters
    ----------
    embeddings : ndarray of shape (n, dim)
        Image embeddings made by ``encoder``.
    encoder : Encoder
        Must have ``embed_text`` (see :func:`medsort.name.text.has_text`).
    classes : sequence of str
        The labelled class names, in the classifier's column order.
    vocabulary : Vocabulary, optional
        Source of templates and descriptions; the built-in one by default.

    Returns
    -------
    ndarray of shape (n, len(classes))
        Rows sum to one.
    """
    if not has_text(encoder):
        raise ValueError(f"Encoder {encoder.name} has no text model for a text prior.")
    vocabulary = vocabulary or load_vocabulary()
    vectors = label_embeddings(
        encoder,  # type: ignore[arg-type]
        class_labels(classes, vocabulary),
        vocabulary.templates,
    )
    return text_probabilities(embeddings, vectors, logit_scale_of(encoder))
