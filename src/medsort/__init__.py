"""medsort: sort medical images into groups by modality and condition, without labels."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Sorter", "sort_folder", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `medsort --help` does not wait for torch to import.
    if name == "Sorter":
        from medsort.sorter import Sorter

        return Sorter
    if name == "sort_folder":
        from medsort.pipeline import sort_folder

        return sort_folder
    raise AttributeError(f"module 'medsort' has no attribute {name!r}")
