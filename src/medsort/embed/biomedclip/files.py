"""A BiomedCLIP model folder: what it must hold, and a short digest of its weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

from medsort.embed.biomedclip.config import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HF_REPO_ID,
    TOKENIZER_FILES,
)


class BiomedCLIPFilesError(FileNotFoundError):
    """A BiomedCLIP model directory lacks a file that the encoder needs."""


def _missing_files_message(directory: Path, missing: str) -> str:
    return (
        f"BiomedCLIP directory {directory} lacks {missing}. Download the model with "
        f"`medsort models download biomedclip {directory}` (Hugging Face repo {HF_REPO_ID})."
    )


def check_model_dir(directory: Path) -> None:
    """Raise :class:`BiomedCLIPFilesError` naming the first file ``directory`` lacks."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BiomedCLIPFilesError(
            _missing_files_message(directory, "everything (not a directory)")
        )
    for name in (CONFIG_FILE, CHECKPOINT_FILE):
        if not (directory / name).is_file():
            raise BiomedCLIPFilesError(_missing_files_message(directory, name))
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise BiomedCLIPFilesError(
            _missing_files_message(directory, " or ".join(TOKENIZER_FILES) + " (the tokenizer)")
        )


def weights_digest(directory: Path, chunk: int = 1 << 20) -> str:
    """Short content hash of the config and checkpoint (size plus first and last MiB)."""
    digest = hashlib.sha1((directory / CONFIG_FILE).read_bytes())
    checkpoint = directory / CHECKPOINT_FILE
    size = checkpoint.stat().st_size
    digest.update(str(size).encode())
    with checkpoint.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:10]
