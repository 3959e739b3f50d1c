"""The output folder: what each stage writes and the next one reads.

``assignments.csv``  one row per image item: the contract other tools rely on
``items.csv``        non-identifying metadata per item (format, size, DICOM attributes)
``embeddings.npy``   the item vectors, rows in the same order
``skipped.csv``      every file that could not be used, and why
``run.json``         input folder, encoder, options and counts
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ASSIGNMENTS = "assignments.csv"
ITEMS = "items.csv"
EMBEDDINGS = "embeddings.npy"
SKIPPED = "skipped.csv"
RUN = "run.json"
REPORT = "report.html"

ASSIGNMENT_COLUMNS = [
    "path",
    "item",
    "modality_group",
    "group",
    "distance",
    "representative",
    "map_x",
    "map_y",
]


@dataclass
class SortResult:
    """Everything a sort produced, as saved in and loaded from an output folder.

    ``assignments`` and ``items`` share row order with ``embeddings``.
    """

    assignments: pd.DataFrame
    items: pd.DataFrame
    embeddings: np.ndarray
    skipped: pd.DataFrame
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dir(self) -> Path:
        return Path(self.run["input_dir"])

    def source_path(self, relative: str) -> Path:
        """The user's file behind a ``path`` value of ``assignments.csv``."""
        return self.input_dir / relative

    def save(self, out_dir: Path) -> None:
        """Write the tables and ``run.json``; :func:`medsort.report.save_folder` adds the
        audit and ``report.html``, as ``medsort sort`` does."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.assignments.to_csv(out_dir / ASSIGNMENTS, index=False)
        self.items.to_csv(out_dir / ITEMS, index=False)
        np.save(out_dir / EMBEDDINGS, self.embeddings.astype(np.float32, copy=False))
        self.skipped.to_csv(out_dir / SKIPPED, index=False)
        (out_dir / RUN).write_text(json.dumps(self.run, indent=2, default=str))

    @classmethod
    def load(cls, out_dir: Path) -> SortResult:
        out_dir = Path(out_dir)
        if not (out_dir / ASSIGNMENTS).is_file():
            raise FileNotFoundError(
                f"{out_dir} holds no {ASSIGNMENTS}: run `medsort sort INPUT --out {out_dir}` first."
            )
        keep_text = {"path": str, "item": str}
        return cls(
            assignments=pd.read_csv(out_dir / ASSIGNMENTS, dtype=keep_text, keep_default_na=False),
            items=pd.read_csv(out_dir / ITEMS, dtype=keep_text, keep_default_na=False),
            embeddings=np.load(out_dir / EMBEDDINGS),
            skipped=pd.read_csv(out_dir / SKIPPED, dtype=str, keep_default_na=False),
            run=json.loads((out_dir / RUN).read_text()),
        )


def skipped_table(skipped: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(skipped, columns=["path", "reason"])
