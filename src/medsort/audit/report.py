"""Report sections of the audit: flagged findings at the top, details after the groups."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from medsort.audit.run import DUPLICATES, NEAR_DUPLICATES, OUTLIERS, QUALITY, load_audit
from medsort.io.readers import ReadOptions
from medsort.report.html import register_section
from medsort.report.thumbnails import figure, thumbnail_uri
from medsort.results import SortResult

MAX_ROWS = 20
MAX_THUMBS = 8
THUMB = 96


@register_section(10)
def audit_warnings_section(result: SortResult, out_dir: Path) -> str:
    """Flagged findings (likely shortcuts first), in plain language."""
    audit = load_audit(out_dir)
    if audit is None:
        return ""
    findings = audit.get("findings", [])
    if not findings:
        return (
            '<h2>Audit</h2><p class="muted">No attribute of the files or metadata explains the '
            "groups, and no duplicates, outliers or quality problems were found.</p>"
        )
    items = "".join(
        f'<div class="warning"><b>{html.escape(f["level"].capitalize())}:</b> '
        f"{html.escape(f['message'])}</div>"
        for f in findings
        if f["level"] == "warning"
    )
    notes = "".join(
        f"<li>{html.escape(f['message'])}</li>" for f in findings if f["level"] != "warning"
    )
    notes = f"<ul>{notes}</ul>" if notes else ""
    return (
        "<h2>Audit warnings</h2>"
        f"{items}{notes}"
        '<p class="muted">Details at the end of the report; how to read them: docs/audit.md.</p>'
    )


@register_section(60)
def audit_details_section(result: SortResult, out_dir: Path) -> str:
    """Attribute scores, ignored attributes and the hygiene tables."""
    audit = load_audit(out_dir)
    if audit is None:
        return ""
    parts = ["<h2>Audit details</h2>", _attribute_table(audit)]
    if audit.get("ignored"):
        ignored = "; ".join(
            f"{html.escape(i['name'])} ({html.escape(i['reason'])})" for i in audit["ignored"]
        )
        parts.append(f'<p class="muted">Not audited: {ignored}.</p>')
    options = ReadOptions(**result.run.get("read_options", {}))
    parts.append(_near_duplicates(result, out_dir, audit, options))
    parts.append(_table_block(out_dir / DUPLICATES, "Exact duplicates"))
    parts.append(_outliers(result, out_dir, options))
    parts.append(_table_block(out_dir / QUALITY, "Quality flags"))
    return "\n".join(part for part in parts if part)


def _attribute_table(audit: dict[str, Any]) -> str:
    targets = audit.get("targets", ["groups"])
    head = "<tr><th>attribute</th><th>source</th><th>values</th><th>seen in image</th>"
    for target in targets:
        head += f"<th>utility ({target})</th><th>detectability | {target}</th>"
        head += f"<th>verdict ({target})</th>"
        if target == "groups" and "label" in targets:
            head += "<th>groups beyond label</th>"
    rows = []
    for row in audit["attributes"]:
        levels = ", ".join(row["levels"][:6]) + (" …" if len(row["levels"]) > 6 else "")
        cells = [
            html.escape(row["name"]),
            html.escape(row["source"]),
            html.escape(levels),
            _cell(row, "detectability"),
        ]
        for target in targets:
            scores = row["targets"][target]
            cells += [_cell(scores, "utility"), _cell(scores, "detectability")]
            cells.append(html.escape(scores["verdict"].replace("_", " ")))
            if target == "groups" and "label" in targets:
                cells.append(_cell(scores, "beyond_label"))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        "<h3>Attributes</h3><p class='muted'>Scores are chance-adjusted normalised mutual "
        "information (0 = none, 1 = complete); † = significant after Benjamini–Hochberg "
        "correction.</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )


def _cell(scores: dict[str, Any], key: str) -> str:
    value, q = scores.get(key), scores.get(f"{key}_q")
    if value is None:
        return "n/a"
    mark = "†" if q is not None and q < 0.05 else ""
    return f"{value:.2f}{mark}"


def _read(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return None if table.empty else table


def _table_block(path: Path, title: str) -> str:
    table = _read(path)
    if table is None:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.head(MAX_ROWS).itertuples(index=False)
    )
    more = f'<p class="muted">{len(table) - MAX_ROWS} more in {path.name}.</p>'
    return f"<h3>{title} ({len(table)})</h3><table><tr>{head}</tr>{body}</table>" + (
        more if len(table) > MAX_ROWS else ""
    )


def _thumb(result: SortResult, path: str, item: str, options: ReadOptions) -> str:
    return figure(thumbnail_uri(result.source_path(path), item, options, size=THUMB), path, item)


def _near_duplicates(
    result: SortResult, out_dir: Path, audit: dict[str, Any], options: ReadOptions
) -> str:
    table = _read(out_dir / NEAR_DUPLICATES)
    if table is None:
        return ""
    near = audit["hygiene"]["near_duplicates"]
    pairs = "".join(
        f'<div class="grid" style="margin:4px 0">{_thumb(result, r.path_a, r.item_a, options)}'
        f"{_thumb(result, r.path_b, r.item_b, options)}"
        f'<span class="muted">cosine {float(r.cosine):.4f}, pixels {r.pixel_correlation or "-"}'
        f" ({r.method})</span></div>"
        for r in table.head(MAX_THUMBS).itertuples(index=False)
    )
    return (
        f"<h3>Near duplicates ({len(table)} pairs; embedding cosine ≥ {near['threshold']:.4f} "
        f"or pixel correlation ≥ {near['pixel_threshold']} up to flips and quarter-turns)</h3>"
        f"{pairs}" + _table_block(out_dir / NEAR_DUPLICATES, "All pairs").replace("<h3>", "<h4>", 1)
    )


def _outliers(result: SortResult, out_dir: Path, options: ReadOptions) -> str:
    table = _read(out_dir / OUTLIERS)
    if table is None:
        return ""
    thumbs = "".join(
        _thumb(result, r.path, r.item, options) for r in table.head(MAX_THUMBS).itertuples()
    )
    return f'<h3>Outliers ({len(table)})</h3><div class="grid">{thumbs}</div>' + _table_block(
        out_dir / OUTLIERS, "Outlier scores"
    ).replace("<h3>", "<h4>", 1)
