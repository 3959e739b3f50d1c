"""Report sections from the clinical readers: slides by group, burned-in annotations."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from medsort.report.html import BURNED_IN_TEXT, SLIDES, group_title, register_section
from medsort.results import SortResult

MAX_SLIDES = 200


def _counts(rows: pd.DataFrame, assignments: pd.DataFrame) -> str:
    """``Group 3: 12, Group 5: 4`` for the rows' groups, most common first."""
    counts = rows["group"].value_counts()
    return ", ".join(
        f"{html.escape(group_title(assignments, int(group)))}: {int(n)}"
        for group, n in counts.items()
    )


@register_section(SLIDES)
def slides_section(result: SortResult, out_dir: Path) -> str:
    """For each whole-slide image, how many of its tiles fall into each group."""
    assignments = result.assignments
    tiles = assignments[assignments["item"].astype(str).str.startswith("tile=")]
    if tiles.empty:
        return ""
    rows = []
    for index, (path, members) in enumerate(tiles.groupby("path", sort=True)):
        if index == MAX_SLIDES:
            rows.append(f'<tr><td colspan="3" class="muted">… more slides in {_csv()}</td></tr>')
            break
        rows.append(
            f"<tr><td><code>{html.escape(str(path))}</code></td><td>{len(members)}</td>"
            f"<td>{_counts(members, assignments)}</td></tr>"
        )
    return (
        "<h2>Whole-slide images</h2>"
        f"<p>{tiles['path'].nunique()} slide(s), {len(tiles)} tissue tile(s).</p>"
        "<table><tr><th>slide</th><th>tiles</th><th>tiles per group</th></tr>"
        + "".join(rows)
        + "</table>"
    )


@register_section(BURNED_IN_TEXT)
def burned_in_section(result: SortResult, out_dir: Path) -> str:
    """Items whose DICOM header declares burned-in annotation (text on the pixels)."""
    items = result.items
    if "burned_in_annotation" not in items.columns or len(items) != len(result.assignments):
        return ""
    flagged = items["burned_in_annotation"].astype(str).str.upper().str.strip() == "YES"
    if not flagged.any():
        return ""
    rows = result.assignments[flagged.to_numpy()]
    return (
        "<h2>Burned-in annotations</h2>"
        f'<p class="warning">{int(flagged.sum())} image(s) in {rows["path"].nunique()} file(s) '
        "declare <code>BurnedInAnnotation YES</code>: text such as patient details may be "
        "part of the pixels themselves. Review them before sharing any image or export. "
        f"Groups: {_counts(rows, result.assignments)}.</p>"
    )


def _csv() -> str:
    return "<code>assignments.csv</code>"
