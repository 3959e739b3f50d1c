"""Model weights on disk: fetched once from the hub (``medsort models download``), then
read offline; a short digest of a folder's files names the weights in cache keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from medsort.embed.registry import EncoderEntry, default_model_dir, get_entry

SOURCE_FILE = "medsort-model.json"
"""Written next to downloaded weights: which entry, hub repository and licence they are."""


def files_digest(paths: Iterable[Path], chunk: int = 1 << 20) -> str:
    """Short content hash of files: each one's name, size, first and last MiB."""
    digest = hashlib.sha1()
    for path in paths:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            digest.update(f.read(chunk))
            if size > chunk:
                f.seek(max(chunk, size - chunk))
                digest.update(f.read(chunk))
    return digest.hexdigest()[:10]


def download_encoder(name: str, target: Path | str | None = None) -> Path:
    """Download the weights of registered encoder ``name`` into ``target`` (default: its
    models-home folder) with ``huggingface_hub``; needs internet, once.

    Returns
    -------
    Path
        The folder, ready for ``--encoder NAME:FOLDER`` (or ``--encoder NAME`` when it is
        the models-home folder).
    """
    entry = get_entry(name)
    if entry.weights is None:
        raise ValueError(
            f"Encoder {entry.name} has nothing to download: its weights ship with medsort or "
            "an installed package, or are given as a folder."
        )
    folder = Path(target).expanduser() if target is not None else default_model_dir(entry.name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ImportError(
            "Downloading weights needs huggingface_hub: pip install 'medsort[hub]'."
        ) from error
    folder.mkdir(parents=True, exist_ok=True)
    source = entry.weights
    snapshot_download(
        repo_id=source.hub_id,
        revision=source.revision,
        local_dir=str(folder),
        allow_patterns=list(source.files) or None,
    )
    if entry.check is not None:
        entry.check(folder)
    write_source(entry, folder)
    return folder


def write_source(entry: EncoderEntry, folder: Path) -> None:
    """Record in ``folder`` which entry, repository and licence its weights are."""
    assert entry.weights is not None
    record = {
        "entry": entry.name,
        "hub_id": entry.weights.hub_id,
        "revision": entry.weights.revision,
        "licence": entry.licence.as_dict(),
    }
    (folder / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
