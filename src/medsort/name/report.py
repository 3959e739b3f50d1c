"""Report section: each group's name, confidence and runner-up (after ``medsort name``)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from medsort.report.html import GROUP_NAMES, register_section
from medsort.results import SortResult


@register_section(GROUP_NAMES)
def names_section(result: SortResult, out_dir: Path) -> str:
    """A table of modality-group and group names; empty when naming has not run."""
    naming = result.run.extra.get("naming")
    if not naming:
        return ""
    if naming.get("method") == "none":
        return (
            '<h2>Names</h2><p class="muted">No names: the encoder has no text model and no '
            "labelled references were given (<code>medsort name OUT --reference DIR</code>)."
            "</p>"
        )
    intro = (
        f"<p>Named by <b>{html.escape(naming['method'])}</b> "
        f"(<code>{html.escape(str(naming.get('source', '')))}</code>); a name needs a "
        f"confidence of at least {naming.get('min_confidence', 0):.2f} and a lead (margin) "
        f"over the runner-up of at least {naming.get('min_margin', 0):.2f}, otherwise the "
        f"group stays <i>unnamed</i> and its best guess is shown.{_calibration(naming)}</p>"
    )
    parts = ["<h2>Names</h2>", intro]
    if naming.get("modalities"):
        parts.append("<h3>Modality groups</h3>" + _table(naming["modalities"], "modality group"))
    parts.append("<h3>Groups</h3>" + _table(naming.get("groups", []), "group"))
    return "\n".join(parts)


def _calibration(naming: dict[str, Any]) -> str:
    calibration = naming.get("margin_calibration") or {}
    if not calibration.get("precision"):
        return ""
    return (
        f" On labelled test sets ({html.escape(calibration.get('sets', ''))}), names with "
        f"at least this margin were right {calibration['precision']:.0%} of the time "
        f"({calibration['n_named']} names)."
    )


def _table(entries: list[dict[str, Any]], kind: str) -> str:
    header = (
        f"<tr><th>{kind}</th><th>images</th><th>name</th><th>confidence</th>"
        "<th>margin</th><th>best guess</th><th>runner-up</th></tr>"
    )
    rows = "".join(_row(entry) for entry in entries)
    return f"<table>{header}{rows}</table>"


def _row(entry: dict[str, Any]) -> str:
    named = entry["name"] != "unnamed"
    name = html.escape(entry["name"]) if named else '<span class="muted">unnamed</span>'
    guess = "" if named else html.escape(entry["candidate"])
    runner = (
        f"{html.escape(entry['runner_up'])} ({entry['runner_up_confidence']:.2f})"
        if entry.get("runner_up")
        else ""
    )
    return (
        f"<tr><td>{entry['group']}</td><td>{entry.get('size', '')}</td><td>{name}</td>"
        f"<td>{entry['confidence']:.2f}</td><td>{entry.get('margin', 0):.2f}</td>"
        f"<td>{guess}</td><td>{runner}</td></tr>"
    )
