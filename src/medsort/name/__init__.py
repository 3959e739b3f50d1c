"""Name stage: modality and condition names for the groups, or an honest "unnamed"."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "add_commands": "medsort.name.cli",
    "MIN_CONFIDENCE": "medsort.name.naming",
    "NAME_COLUMNS": "medsort.name.naming",
    "name_groups": "medsort.name.naming",
    "Vocabulary": "medsort.name.vocabulary",
    "load_vocabulary": "medsort.name.vocabulary",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so that `medsort --help` imports no pandas or scikit-learn.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
