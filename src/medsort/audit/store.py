"""The audit's files in an output folder: ``audit.json`` and the hygiene CSVs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medsort.io.outputs import write_csv, write_text

AUDIT = "audit.json"
DUPLICATES = "duplicates.csv"
NEAR_DUPLICATES = "near_duplicates.csv"
OUTLIERS = "outliers.csv"
QUALITY = "quality.csv"


def write_audit(out_dir: Path, audit: dict[str, Any], tables: dict[str, Any]) -> None:
    """The hygiene tables (each a CSV, by file name), then ``audit.json``."""
    for name, table in tables.items():
        write_csv(table, out_dir / name)
    write_text(out_dir / AUDIT, json.dumps(audit, indent=2, default=json_default))


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def load_audit(out_dir: Path | str) -> dict[str, Any] | None:
    """``audit.json`` of an output folder, or ``None`` when it has not been audited."""
    path = Path(out_dir) / AUDIT
    return json.loads(path.read_text()) if path.is_file() else None
