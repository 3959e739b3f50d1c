"""The one-way flow, read from the source: a stage imports only the stages before it.

io → preprocess → embed → adapt → group → name → refine → audit → report → cli. A stage's
``cli.py`` belongs to the cli layer and its ``report.py`` (its report section) to the
report layer, wherever they live. The imports that still run against the flow are listed
in ``KNOWN``: the list may shrink (issue 15), never grow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medsort"
LAYERS = ("io", "preprocess", "embed", "adapt", "group", "name", "refine", "audit", "report", "cli")
TOP_LEVEL = {
    "arguments": "io",
    "demo": "io",
    "lazy": "io",
    "memo": "io",
    "numeric": "io",
    "plugins": "io",
    "results": "group",
    "sorter": "group",
    "modality_encoders": "group",
    "modality_adapt": "group",
    "evaluate": "group",
    "pipeline": "cli",
    "cli": "cli",
    "__main__": "cli",
}
ROLE_MODULES = {"cli": "cli", "report": "report"}
"""A stage's ``cli`` and ``report`` modules serve the later layers of that name."""

KNOWN: set[tuple[str, str]] = set()
"""(importer, imported) pairs against the flow that issue 15 is to remove."""


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")[1:]
    if not parts:
        return None  # the package itself: lazy re-exports only
    if len(parts) >= 2 and parts[-1] in ROLE_MODULES:
        return ROLE_MODULES[parts[-1]]
    if parts[0] in LAYERS:
        return parts[0]
    return TOP_LEVEL.get(parts[0])


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """The ``medsort`` modules that ``path`` imports: anywhere in the file, or only those
    run when it is imported (``top_level_only``, where ``from m import x`` may be module
    ``m.x``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if top_level_only:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "medsort"}


def flow_violations() -> set[tuple[str, str]]:
    order = {name: rank for rank, name in enumerate(LAYERS)}
    violations = set()
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        source = layer_of(importer)
        if source is None:
            continue
        for imported in imports_of(path):
            target = layer_of(imported)
            if target is not None and order[target] > order[source]:
                violations.add((importer, imported))
    return violations


def test_layers_cover_every_module() -> None:
    unknown = [module_name(p) for p in PACKAGE.rglob("*.py") if layer_of(module_name(p)) is None]
    assert unknown == ["medsort"]


def test_no_new_import_against_the_flow() -> None:
    new = flow_violations() - KNOWN
    assert not new, "imports against io → … → cli: " + ", ".join(
        f"{a} imports {b}" for a, b in sorted(new)
    )


def test_known_violations_are_still_real() -> None:
    """A mended arrow leaves ``KNOWN``, so that the list stays true."""
    assert flow_violations() >= KNOWN


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from medsort.report.html import write_report\n")
    assert imports_of(probe) == {"medsort.report.html"}
    assert layer_of("medsort.io.readers") == "io"
    assert layer_of("medsort.audit.report") == "report"


@pytest.mark.parametrize("module", ["medsort.io", "medsort.embed", "medsort.group"])
def test_early_stages_import_nothing_later(module: str) -> None:
    rank = LAYERS.index(module.split(".")[1])
    later = {f"medsort.{name}" for name in LAYERS[rank + 1 :]}
    for path in (PACKAGE / module.split(".")[1]).rglob("*.py"):
        if layer_of(module_name(path)) != module.split(".")[1]:
            continue
        bad = {
            imported
            for imported in imports_of(path)
            if any(imported == m or imported.startswith(m + ".") for m in later)
        } - {b for a, b in KNOWN if a == module_name(path)}
        assert not bad, f"{module_name(path)} imports {bad}"


def test_the_numeric_core_imports_no_stage() -> None:
    """``medsort.numeric`` sits below every stage (group, refine and audit all use it), and
    so do ``plugins`` and the CLI's argument types (every stage's ``cli.py`` uses them)."""
    assert imports_of(PACKAGE / "numeric.py") == set()
    assert imports_of(PACKAGE / "plugins.py") == set()
    assert imports_of(PACKAGE / "arguments.py") == set()


REGISTRIES = ("io/readers.py", "report/html.py", "cli.py", "embed/registry.py")
"""Modules that hold what registers itself: none may name a plugin module (the encoder
registry's built-ins are imported by ``embed/__init__.py``)."""
NOT_MODULES = {"embed/registry.py": {"medsort.encoders"}}
"""Names a registry may hold that are no module (the encoders' entry-point group)."""


@pytest.mark.parametrize("registry", REGISTRIES)
def test_registries_name_no_plugin_module(registry: str) -> None:
    tree = ast.parse((PACKAGE / registry).read_text())
    named = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("medsort.")
    }
    own_package = "medsort." + registry.split("/")[0]  # e.g. its own assets
    named -= {own_package} | NOT_MODULES.get(registry, set())
    assert not named, f"{registry} names {sorted(named)}"


def test_each_stage_brings_its_own_commands_and_sections(tmp_path: Path) -> None:
    from medsort.plugins import stage_modules

    assert stage_modules("cli") == [
        "medsort.adapt.cli",
        "medsort.name.cli",
        "medsort.refine.cli",
        "medsort.audit.cli",
    ]
    assert "medsort.audit.report" in stage_modules("report")
    for stage in ("io", "name", "zeta"):  # zeta: a new stage, listed nowhere
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "__init__.py").write_text("")
    for stage in ("name", "zeta"):
        (tmp_path / stage / "cli.py").write_text("")
    assert stage_modules("cli", tmp_path) == ["medsort.name.cli", "medsort.zeta.cli"]


def import_cycles(package: Path = PACKAGE) -> list[list[str]]:
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    graph = {
        name: imports_of(path, top_level_only=True) & modules.keys()
        for name, path in modules.items()
    }
    cycles, state = [], dict.fromkeys(graph, 0)

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt])
            elif state[nxt] == 0:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if state[name] == 0:
            visit(name, [name])
    return cycles


def test_no_import_cycle_between_modules() -> None:
    assert import_cycles() == []


def test_the_cycle_finder_sees_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "medsort"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from medsort.b import g\n")
    (package / "b.py").write_text("import medsort.a\n\n\ndef g():\n    pass\n")
    assert import_cycles(package) == [["medsort.a", "medsort.b", "medsort.a"]]
