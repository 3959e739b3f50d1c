"""Adapt the encoder to one modality group of a sorted folder (``medsort adapt --modality-group``).

A mixed folder (chest X-rays and histology tiles) is first sorted as always; its output
says which file fell in which modality group. ``medsort adapt INPUT --out DIR
--modality-group KEY --from SORT_OUT`` adapts on that group's files only, and
``medsort sort INPUT --encoder-for KEY=adapted:DIR`` then regroups that group with it
(:class:`~medsort.modality_encoders.PerModalityGrouper`). KEY is what ``--encoder-for``
accepts: the group's index in the report, or its name from the files' metadata.
``sort --adapt`` on a folder of several modality groups does the same for each group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsort.modality_encoders import match_keys, names_from_meta
from medsort.results import SortResult, check_complete


@dataclass
class ModalityGroupFiles:
    """The files of one modality group of a finished sort.

    Attributes
    ----------
    key : str
        The key the user gave (index or name).
    index : int
        The modality group's index in that sort.
    name : str or None
        Its name from the files' metadata (``None`` for PNG/JPEG folders).
    files : list of Path
        Its files under the sorted folder, each once.
    sort_dir : Path
        The sort output it was read from.
    """

    key: str
    index: int
    name: str | None
    files: list[Path]
    sort_dir: Path

    def source(self) -> dict[str, Any]:
        """What ``adapted.json`` records under ``trained_on.modality_group``."""
        return {
            "key": self.key,
            "index": self.index,
            "name": self.name,
            "n_files": len(self.files),
            "sort": str(self.sort_dir.resolve()),
        }


def modality_group_files(
    input_dir: Path | str, sort_dir: Path | str, key: str
) -> ModalityGroupFiles:
    """The files of modality group ``key`` in the sort of ``input_dir`` saved in ``sort_dir``.

    Raises ValueError (or FileNotFoundError) with a plain message when ``sort_dir`` is not
    a finished sort, is the sort of another folder, or has no modality group ``key``.
    """
    input_dir, sort_dir = Path(input_dir), Path(sort_dir)
    check_complete(sort_dir)
    result = SortResult.load(sort_dir)
    if result.input_dir.resolve() != input_dir.resolve():
        raise ValueError(
            f"{sort_dir} is the sort of {result.input_dir}, not of {input_dir}: "
            f"run `medsort sort {input_dir} --out SORT_OUT` and give that folder to --from."
        )
    groups = {group.index: group for group in modality_groups(result, sort_dir)}
    key = str(key).strip().lower()
    chosen, notes = match_keys({key: "adapted"}, {g: group.name for g, group in groups.items()})
    if not chosen:
        note = notes[0].replace(f"--encoder-for {key}=adapted", f"--modality-group {key}", 1)
        raise ValueError(f"{note} (sort {sort_dir})")
    if len(chosen) > 1:
        raise ValueError(
            f"--modality-group {key} names modality groups {sorted(chosen)} of {sort_dir}: "
            "give one group's index."
        )
    (index,) = chosen
    return dataclasses.replace(groups[index], key=key)


def modality_groups(result: SortResult, sort_dir: Path) -> list[ModalityGroupFiles]:
    """Every modality group of a sort (``result``, saved or to be saved in ``sort_dir``)
    with its files, keyed by index."""
    labels = result.assignments["modality_group"].to_numpy(dtype=np.int64)
    names = names_from_meta(_metadata(result), labels)
    paths = result.assignments["path"].to_numpy()
    return [
        ModalityGroupFiles(
            key=str(index),
            index=index,
            name=name,
            files=[result.source_path(path) for path in dict.fromkeys(paths[labels == index])],
            sort_dir=sort_dir,
        )
        for index, name in names.items()
    ]


def _metadata(result: SortResult) -> list[dict[str, Any]]:
    """Each row's metadata (``items.csv``), in ``assignments.csv``'s order."""
    items = result.items
    if len(items) != len(result.assignments):
        return [{} for _ in range(len(result.assignments))]
    return [
        {name: value for name, value in row.items() if not pd.isna(value)}
        for row in items.to_dict("records")
    ]
