"""Audit stage: does the grouping follow the condition, or an attribute of the files?

After Data AUDIT (arXiv 2304.03218): every attribute found in the metadata (file format,
size, bit depth, sub-folder, DICOM tags, a user CSV) gets a *utility* (how much it goes with
the groups, or the labels) and a *detectability* (how much of it an image model reads
beyond them); high on both flags a likely shortcut. Hygiene checks find exact and near
duplicates, outliers and low-quality images. See ``docs/audit.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "keep_mask": "medsort.embed.cache",
    "AuditSettings": "medsort.audit.run",
    "duplicate_keep_mask": "medsort.audit.run",
    "load_audit": "medsort.audit.run",
    "run_audit": "medsort.audit.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so that `medsort --help` imports no pandas or scikit-learn.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
