"""Report sections of the refine stage: images to label, and predictions by class."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from medsort.io.outputs import read_csv
from medsort.refine.label import PREDICTIONS
from medsort.refine.suggest import TO_LABEL
from medsort.report.html import LABEL_PREDICTIONS, LABEL_SUGGESTIONS, register_section
from medsort.report.thumbnails import figure, thumbnails_of
from medsort.results import SortResult

THUMBS_PER_CLASS = 6
MAX_SUGGESTIONS = 60


def _read(out_dir: Path, name: str) -> pd.DataFrame | None:
    path = out_dir / name
    if not path.is_file():
        return None
    return read_csv(path, dtype={"path": str, "item": str})


@register_section(LABEL_SUGGESTIONS)
def suggestions_section(result: SortResult, out_dir: Path) -> str:
    """The images ``medsort suggest`` proposes to label next."""
    table = _read(out_dir, TO_LABEL)
    if table is None or table.empty:
        return ""
    shown = table.head(MAX_SUGGESTIONS)
    uris = _thumbnails(result, shown)
    figures = "".join(
        _figure(uris, r, f"group {r['group']}: {r['reason']}") for _, r in shown.iterrows()
    )
    return (
        f"<h2>Images to label next ({len(table)})</h2><p>Fill the <code>label</code> "
        f"column of <code>{TO_LABEL}</code> and run <code>medsort label</code>.</p>"
        f'<div class="grid">{figures}</div>'
    )


@register_section(LABEL_PREDICTIONS)
def predictions_section(result: SortResult, out_dir: Path) -> str:
    """Predicted classes: counts, the most confident images, and group disagreements."""
    table = _read(out_dir, PREDICTIONS)
    if table is None or table.empty:
        return ""
    flagged = table["disagrees_with_group"].astype(str).str.lower() == "true"
    shown = {
        label: (
            members.sort_values("probability", ascending=False).head(THUMBS_PER_CLASS),
            members[flagged[members.index]].head(THUMBS_PER_CLASS),
        )
        for label, members in table.groupby("label", sort=True)
    }
    uris = _thumbnails(result, pd.concat([frame for pair in shown.values() for frame in pair]))
    parts = [
        f"<h2>Predicted classes</h2><p>{int(flagged.sum())} image(s) disagree with "
        "the majority prediction of their group (marked ⚑).</p>"
    ]
    for label, (top, odd) in shown.items():
        figures = [_figure(uris, r, f"{r['probability']:.2f}") for _, r in top.iterrows()]
        figures += [
            _figure(uris, r, f"⚑ group {r['group']} · {r['probability']:.2f}")
            for _, r in odd.iterrows()
        ]
        members = table["label"] == label
        parts.append(
            f'<div class="group"><h4>{html.escape(str(label))} <span class="muted">'
            f"({int(members.sum())} images, {int(flagged[members].sum())} disagree with "
            f'their group)</span></h4><div class="grid">{"".join(figures)}</div></div>'
        )
    return "\n".join(parts)


def _thumbnails(result: SortResult, rows: pd.DataFrame) -> dict[tuple[str, str], str]:
    options = result.run.read_options()
    return thumbnails_of(rows, result.source_path, options)


def _figure(uris: dict[tuple[str, str], str], row: pd.Series, caption: str) -> str:
    return figure(uris.get((row["path"], row["item"]), ""), row["path"], row["item"], caption)
