"""The repository's own promises: CI runs the README's test command, and that runs all."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest_commands(text: str) -> list[str]:
    return [c.strip() for c in re.findall(r"python -m pytest[^\n`]*", text)]


def test_ci_runs_the_readme_test_command_and_it_runs_every_test() -> None:
    readme = _pytest_commands((REPO / "README.md").read_text())[0]  # the set-up block's
    [ci] = _pytest_commands((REPO / ".ci" / "run").read_text())
    assert readme == ci
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'addopts = ["-m", "not slow"]' in pyproject  # fast by default
    assert '-m "slow or not slow"' in ci  # ... CI overrides it: every test
