"""``report.html``: one self-contained page to look at the groups.

The report is rebuilt from the output folder alone, so every stage that adds a file
(names, audit, suggestions, predictions) can simply render it again.
"""

from __future__ import annotations

import html
import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medsort.io.readers import ReadOptions
from medsort.report.thumbnails import figure, thumbnails_of
from medsort.results import REPORT, SortResult

MAX_MAP_POINTS = 20_000
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#637939", "#ad494a", "#a55194", "#6b6ecf",
    "#8ca252", "#bd9e39", "#843c39", "#7b4173",
]  # fmt: skip

Section = Callable[[SortResult, Path], str]
"""A report section: gets the result and output folder, returns HTML ('' to leave out)."""

_SECTIONS: list[tuple[int, Section]] = []


def register_section(order: int) -> Callable[[Section], Section]:
    """Add a section to every report; lower ``order`` comes first (groups are at 50)."""

    def add(section: Section) -> Section:
        _SECTIONS.append((order, section))
        _SECTIONS.sort(key=lambda pair: pair[0])
        return section

    return add


# Stages after grouping contribute sections from these modules (each optional).
SECTION_MODULES = (
    "medsort.io.report",
    "medsort.name.report",
    "medsort.refine.report",
    "medsort.audit.report",
)


def write_report(out_dir: Path) -> Path:
    """Render ``OUT_DIR/report.html`` from what the output folder holds."""
    out_dir = Path(out_dir)
    result = SortResult.load(out_dir)
    _import_section_modules()
    body = "\n".join(section(result, out_dir) for _, section in _SECTIONS)
    target = out_dir / REPORT
    target.write_text(_page(result, body), encoding="utf-8")
    return target


def _import_section_modules() -> None:
    for module in SECTION_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # the module exists but something it needs is missing
                raise


def color(group: int) -> str:
    return PALETTE[group % len(PALETTE)]


def group_title(assignments: pd.DataFrame, group: int) -> str:
    """``Group 3`` or ``Group 3 · pneumonia`` when the group has a name."""
    title = f"Group {group}"
    if "group_name" in assignments.columns:
        names = assignments.loc[assignments["group"] == group, "group_name"]
        name = str(names.iloc[0]) if len(names) else ""
        if name and name != "unnamed":
            title += f" · {name}"
    return title


def _page(result: SortResult, body: str) -> str:
    run = result.run
    n_items = len(result.assignments)
    summary = (
        f"{n_items} images from <code>{html.escape(str(run.get('input_dir', '')))}</code> "
        f"in {run.get('n_modality_groups', '?')} modality group(s) and "
        f"{run.get('n_groups', '?')} group(s); encoder <code>{html.escape(run.get('encoder', ''))}"
        f"</code>; {len(result.skipped)} file(s) skipped."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>medsort report</title>
<style>{_CSS}</style></head>
<body><h1>medsort report</h1><p class="summary">{summary}</p>
{body}
<footer>medsort {html.escape(str(run.get("medsort_version", "")))}</footer>
</body></html>"""


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
.modality{border-left:4px solid #888;padding-left:1em;margin:1.5em 0}
.group{margin:1em 0}.group h4{margin:.3em 0}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:50%;margin-right:.4em}
.grid{display:flex;flex-wrap:wrap;gap:4px}
.grid figure{margin:0;width:112px;text-align:center;font-size:10px;overflow:hidden}
.grid img{width:112px;height:112px;object-fit:contain;background:#000;display:block}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 6px}
.warning{background:#fff4e5;border:1px solid #f0a030;padding:.6em 1em;margin:.5em 0}
.muted{color:#777}footer{margin-top:3em;color:#999;font-size:12px}
"""


@register_section(50)
def groups_section(result: SortResult, out_dir: Path) -> str:
    """Groups nested under their modality group, each a grid of its most typical images."""
    assignments = result.assignments
    options = _read_options(result)
    reps = assignments[assignments["representative"].astype(str).str.lower() == "true"]
    thumbnails = thumbnails_of(reps, result.source_path, options)
    parts = ["<h2>Groups</h2>"]
    for modality, in_modality in assignments.groupby("modality_group", sort=True):
        parts.append(
            f'<div class="modality"><h3>{_modality_title(assignments, modality)} '
            f'<span class="muted">({len(in_modality)} images)</span></h3>'
        )
        for group, members in in_modality.groupby("group", sort=True):
            parts.append(_group_block(result, int(group), members, reps, thumbnails))
        parts.append("</div>")
    return "\n".join(parts)


def _modality_title(assignments: pd.DataFrame, modality: int) -> str:
    title = f"Modality group {modality}"
    if "modality_name" in assignments.columns:
        names = assignments.loc[assignments["modality_group"] == modality, "modality_name"]
        if len(names) and str(names.iloc[0]) not in ("", "unnamed"):
            title += f" · {html.escape(str(names.iloc[0]))}"
    return title


def _group_block(
    result: SortResult,
    group: int,
    members: pd.DataFrame,
    reps: pd.DataFrame,
    thumbnails: dict[tuple[str, str], str],
) -> str:
    figures = [
        figure(thumbnails.get((row["path"], row["item"]), ""), row["path"], row["item"])
        for _, row in reps[reps["group"] == group].sort_values("distance").iterrows()
    ]
    title = html.escape(group_title(result.assignments, group))
    return (
        f'<div class="group"><h4><span class="swatch" style="background:{color(group)}"></span>'
        f'{title} <span class="muted">({len(members)} images)</span></h4>'
        f'<div class="grid">{"".join(figures)}</div></div>'
    )


@register_section(40)
def map_section(result: SortResult, out_dir: Path) -> str:
    """A 2D map of all images (a sample above ``MAX_MAP_POINTS``), coloured by group."""
    assignments = result.assignments
    if len(assignments) > MAX_MAP_POINTS:
        assignments = assignments.sample(MAX_MAP_POINTS, random_state=0)
    xy = assignments[["map_x", "map_y"]].to_numpy(dtype=float)
    if len(xy) == 0 or not np.isfinite(xy).all():
        return ""
    # Percentiles, not min/max: a few far outliers would squeeze everything else.
    low, high = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    scaled = np.clip((xy - low) / span, -0.02, 1.02) * 540 + 30
    circles = "".join(
        f'<circle cx="{x:.1f}" cy="{600 - y:.1f}" r="3" fill="{color(int(g))}">'
        f"<title>{html.escape(p)} (group {int(g)})</title></circle>"
        for (x, y), g, p in zip(scaled, assignments["group"], assignments["path"], strict=True)
    )
    legend = "".join(
        f'<span style="margin-right:1em"><span class="swatch" style="background:{color(int(g))}">'
        f"</span>{html.escape(group_title(result.assignments, int(g)))}</span>"
        for g in sorted(result.assignments["group"].unique())
    )
    note = (
        f" (a random sample of {MAX_MAP_POINTS})"
        if len(result.assignments) > MAX_MAP_POINTS
        else ""
    )
    return (
        f"<h2>Map of all images{note}</h2><p>{legend}</p>"
        f'<svg width="600" height="620" viewBox="0 0 600 620" '
        f'style="border:1px solid #eee;opacity:.9">{circles}</svg>'
    )


@register_section(90)
def skipped_section(result: SortResult, out_dir: Path) -> str:
    """Files that could not be used, with the reason."""
    if result.skipped.empty:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(str(path))}</td><td>{html.escape(str(reason))}</td></tr>"
        for path, reason in zip(result.skipped["path"], result.skipped["reason"], strict=True)
    )
    return (
        f"<h2>Skipped files ({len(result.skipped)})</h2>"
        f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>"
    )


def _read_options(result: SortResult) -> ReadOptions:
    saved = result.run.get("read_options", {})
    return ReadOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
