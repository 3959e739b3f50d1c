"""Lazy re-exports for stage packages, so that ``medsort --help`` imports no heavy library,
and lazy modules for the optional readers' libraries."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first use.

    Use as ``__getattr__ = lazy_exports(__name__, {"name": "medsort.stage.module"})``.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


class LazyModule:
    """A module that is imported on first attribute access (``lazy_module``).

    Readers of optional formats name their library this way, so that loading the readers
    (for every sort) costs nothing until a file of theirs turns up: pydicom, tifffile and
    nibabel together took 0.3 s to import.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:  # importlib's own per-module lock makes this thread-safe
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r}, {state}>"


def lazy_module(name: str) -> Any:
    """``name`` as a :class:`LazyModule`; ImportError now if it is not installed at all
    (so an optional reader whose library is missing still fails to register at once)."""
    if importlib.util.find_spec(name) is None:
        raise ImportError(f"No module named {name!r}", name=name)
    return LazyModule(name)
