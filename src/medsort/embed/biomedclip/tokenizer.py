"""BiomedCLIP's tokenizer: open_clip's text cleaning, then BiomedBERT's WordPiece vocabulary."""

from __future__ import annotations

import html
from pathlib import Path

import torch
from transformers import BertTokenizer


def clean_text(text: str) -> str:
    """open_clip's ``whitespace`` cleaning: fix mojibake (if ftfy is installed), unescape
    HTML entities, collapse whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text))
    return " ".join(text.split())


class Tokenizer:
    """Token ids ``(n, context_length)``, padded and truncated like open_clip.

    Parameters
    ----------
    directory : Path
        A model folder with ``vocab.txt`` (or ``tokenizer.json``).
    context_length : int
        Tokens per text (256 for BiomedCLIP).
    """

    def __init__(self, directory: Path, context_length: int) -> None:
        self.context_length = context_length
        self.tokenizer = BertTokenizer.from_pretrained(str(directory))

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(
            [clean_text(t) for t in texts],
            max_length=self.context_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids
