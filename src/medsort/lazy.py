"""Lazy re-exports for stage packages, so that ``medsort --help`` imports no heavy library."""

from __future__ import annotations

import importlib
from collections.abc import Callable
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
