"""Report sections of the audit: flagged findings at the top, details after the groups."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from medsort.audit.store import DUPLICATES, NEAR_DUPLICATES, OUTLIERS, QUALITY, load_audit
from medsort.io.readers import ReadOptions
from medsort.report.html import AUDIT_DETAILS, AUDIT_WARNINGS, register_section
from medsort.report.thumbnails import figure, thumbnail_uri
from medsort.results import SortResult

MAX_ROWS = 20
MAX_THUMBS = 8
THUMB = 96


HOW_IT_WORKS = (
    "<p>The audit asks whether the groups (and, with <code>--truth</code>, the labels) follow "
    "something other than the condition. It looks at three kinds of attribute: how the files "
    "were stored (format, size, bit depth, folder, scanner tags), how the images look "
    "(brightness, contrast, sharpness, noise, colour, dark corners, black bars, burned-in text "
    "or rulers, hair or ink lines, zoom, JPEG quality — measured from the pixels), and any "
    "columns you gave with <code>--metadata</code> (site, sex, age...).</p>"
    "<p>For each attribute it measures two things (after Data AUDIT, arXiv 2304.03218): "
    "<b>utility</b> — how much the attribute goes with the groups or labels (0 = not at all, "
    "1 = one decides the other); and <b>detectability</b> — how much of it an image model "
    "can still read from the pictures beyond the groups. An attribute high on both is a "
    "possible <b>shortcut</b>: a model, or the grouping, may use it instead of the "
    "disease. Differences in look between true classes are only a note unless the look "
    "alone nearly separates them: a condition has a look of its own.</p>"
    "<p><b>Stability</b> reruns the grouping five times on 80% of the images; a group that "
    "does not come back (mean overlap below 0.6) is a cut through a continuum. "
    "<b>Near duplicates</b> must be confirmed by two of three independent signals (image "
    "model, content correlation with borders and vignette removed, perceptual hash), each "
    "up to flips and rotations. Full explanation: docs/audit.md.</p>"
)


@register_section(AUDIT_WARNINGS)
def audit_warnings_section(result: SortResult, out_dir: Path) -> str:
    """What a clinician should know first: verdict, warnings, each group's traits."""
    audit = load_audit(out_dir)
    if audit is None:
        return ""
    findings = audit.get("findings", [])
    warnings = [f for f in findings if f["level"] == "warning"]
    notes = [f for f in findings if f["level"] != "warning"]
    parts = ["<h2>Audit: before you trust these groups</h2>"]
    if not warnings:
        parts.append(
            '<p class="muted">Nothing found that the groups follow instead of the images\' '
            "content: no file, appearance or metadata attribute explains them, and no "
            "duplicate problem needs action.</p>"
        )
    parts += [
        f'<div class="warning"><b>Warning:</b> {html.escape(f["message"])}</div>' for f in warnings
    ]
    parts.append(_groups_table(audit))
    if notes:
        items = "".join(f"<li>{html.escape(f['message'])}</li>" for f in notes)
        parts.append(f"<details><summary>Notes ({len(notes)})</summary><ul>{items}</ul></details>")
    parts.append(f"<details><summary>How this audit works</summary>{HOW_IT_WORKS}</details>")
    parts.append('<p class="muted">Scores and tables: "Audit details" at the end.</p>')
    return "\n".join(parts)


def _groups_table(audit: dict[str, Any]) -> str:
    """One row per group: what sets it apart, and whether it comes back on reruns."""
    explanations = audit.get("group_explanations", {})
    stability = audit.get("stability", {}) or {}
    per_group = {str(k): v for k, v in (stability.get("per_group") or {}).items()}
    unstable = {str(g) for g in stability.get("unstable", [])}
    if not explanations:
        return ""
    rows = []
    for group in sorted(explanations, key=lambda g: int(g) if g.lstrip("-").isdigit() else g):
        traits = "; ".join(explanations[group]) or "nothing stands out"
        score = per_group.get(group)
        if score is None:
            stable = "n/a"
        else:
            word = "unstable" if group in unstable else "stable"
            stable = f"{word} ({score:.2f})"
        rows.append(
            f"<tr><td>{html.escape(group)}</td><td>{html.escape(traits)}</td>"
            f"<td>{html.escape(stable)}</td></tr>"
        )
    overall = stability.get("overall")
    caption = (
        f" Whole grouping: {overall:.2f} mean overlap over {stability.get('n_runs')} reruns"
        f"{_rerun_counts(stability)}."
        if overall is not None
        else ""
    )
    return (
        "<h3>What sets each group apart</h3>"
        '<p class="muted">Compared with the other groups of the same modality; "stable" '
        f"groups come back when the grouping is rerun on subsamples.{caption}</p>"
        "<table><tr><th>group</th><th>differs from the others by</th><th>stability</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _rerun_counts(stability: dict[str, Any]) -> str:
    """ ", which found 2, 3, 2 groups" when the reruns' group counts are known."""
    counts = stability.get("rerun_groups")
    if not counts:
        return ""
    return f", which found {', '.join(str(count) for count in counts)} groups"


@register_section(AUDIT_DETAILS)
def audit_details_section(result: SortResult, out_dir: Path) -> str:
    """Attribute scores, ignored attributes and the hygiene tables, folded."""
    audit = load_audit(out_dir)
    if audit is None:
        return ""
    parts = ["<h2>Audit details</h2>", _attribute_table(audit)]
    if audit.get("ignored"):
        ignored = "; ".join(
            f"{html.escape(i['name'])} ({html.escape(i['reason'])})" for i in audit["ignored"]
        )
        parts.append(f'<p class="muted">Not audited: {ignored}.</p>')
    options = result.run.read_options()
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
        "<details><summary>Attribute scores (statistics)</summary>"
        "<p class='muted'>Scores are chance-adjusted normalised mutual information (0 = none, "
        "1 = complete); † = significant after Benjamini–Hochberg correction. Source "
        "<i>image</i> = measured from the pixels.</p>"
        f"<table>{head}{''.join(rows)}</table></details>"
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
        f'<span class="muted">cosine {float(r.cosine):.4f}, content {r.pixel_correlation or "-"}'
        f", hash {getattr(r, 'hash_bits', '-')} bits ({r.method})</span></div>"
        for r in table.head(MAX_THUMBS).itertuples(index=False)
    )
    return (
        f"<h3>Near duplicates ({len(table)} pairs, each confirmed by "
        f"{near.get('min_signals', 2)} of: embedding cosine ≥ {near['threshold']:.4f}, content "
        f"correlation ≥ {near['pixel_threshold']}, perceptual hash within "
        f"{near.get('hash_bits', '-')} bits; up to flips and quarter-turns)</h3>"
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
