"""Finding the modules that register themselves, without a registry naming them.

Registries (readers, report sections, CLI commands) hold what registered itself; the
modules that do so are found here:

- by convention, a stage's role module: ``medsort.<stage>.report`` adds report sections,
  ``medsort.<stage>.cli`` adds commands (:func:`stage_modules`), so a new stage needs no
  edit anywhere else;
- or listed by the package that owns them (``medsort.io`` lists its optional readers).

:func:`import_plugins` imports them and reports, never hides, one that fails to import.
This module imports no other ``medsort`` module.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "medsort"
FLOW = ("io", "preprocess", "embed", "adapt", "group", "name", "refine", "audit", "report")
"""The stages in the order data flows through them; a stage package not listed here
(a new one) comes after them, by name."""


def stage_packages(root: Path | None = None) -> list[str]:
    """Names of the stage packages (sub-packages of ``medsort``), in :data:`FLOW` order."""
    root = Path(__file__).parent if root is None else root
    found = {info.name for info in pkgutil.iter_modules([str(root)]) if info.ispkg}
    known = [name for name in FLOW if name in found]
    return known + sorted(found - set(FLOW))


def stage_modules(role: str, root: Path | None = None) -> list[str]:
    """``medsort.<stage>.<role>`` of every stage package that has that module, in flow
    order (e.g. ``role="cli"``: every stage's commands)."""
    root = Path(__file__).parent if root is None else root
    return [
        f"{PACKAGE}.{stage}.{role}"
        for stage in stage_packages(root)
        if (root / stage / f"{role}.py").is_file()
    ]


def import_plugins(modules: Iterable[str], kind: str, then: str = "") -> dict[str, str]:
    """Import ``modules`` (each registers itself); returns ``{module: why}`` for those that
    failed to import, each also warned about, naming the ``kind`` of plugin it was and
    what follows (``then``)."""
    failed: dict[str, str] = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            failed[module] = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"medsort: the {module.rsplit('.', 1)[-1]} {kind} is unavailable ({error})"
                + (f"; {then}" if then else ""),
                stacklevel=3,
            )
    return failed


def import_all(modules: Iterable[str]) -> None:
    """Import ``modules`` that must be there (a stage's report sections or commands): an
    import error is a bug and is raised."""
    for module in modules:
        importlib.import_module(module)
