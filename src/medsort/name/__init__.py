"""Name stage: modality and condition names for the groups, or an honest "unnamed"."""

from __future__ import annotations

from medsort.lazy import lazy_exports

_EXPORTS = {
    "add_commands": "medsort.name.cli",
    "MIN_CONFIDENCE": "medsort.name.naming",
    "NAME_COLUMNS": "medsort.name.naming",
    "name_groups": "medsort.name.naming",
    "Vocabulary": "medsort.name.vocabulary",
    "load_vocabulary": "medsort.name.vocabulary",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
