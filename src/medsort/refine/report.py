"""Report sections of the refine stage: images to label, and predictions by class."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from medsort.io.readers import ReadOptions
from medsort.refine.label import PREDICTIONS
from medsort.refine.suggest import TO_LABEL
from medsort.report.html import register_section
from medsort.report.thumbnails import thumbnail_uri
from medsort.results import SortResult

THUMBS_PER_CLASS = 6
MAX_SUGGESTIONS = 60


def _figure(result: SortResult, row: pd.Series, caption: str, options: ReadOptions) -> str:
    uri = thumbnail_uri(result.source_path(row["path"]), row["item"], options)
    name = html.escape(row["path"] + (f" [{row['item']}]" if row["item"] else ""))
    image = f'<img src="{uri}" alt="{name}">' if uri else '<div class="muted">n/a</div>'
    return (
        f'<figure title="{name}">{image}<figcaption>{name}<br>'
        f"{html.escape(caption)}</figcaption></figure>"
    )


def _read(out_dir: Path, name: str) -> pd.DataFrame | None:
    path = out_dir / name
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"path": str, "item": str}, keep_default_na=False)


@register_section(60)
def suggestions_section(result: SortResult, out_dir: Path) -> str:
    """The images ``medsort suggest`` proposes to label next."""
    table = _read(out_dir, TO_LABEL)
    if table is None or table.empty:
        return ""
    options = ReadOptions(**result.run.get("read_options", {}))
    figures = "".join(
        _figure(result, row, f"group {row['group']}: {row['reason']}", options)
        for _, row in table.head(MAX_SUGGESTIONS).iterrows()
    )
    return (
        f"<h2>Images to label next ({len(table)})</h2><p>Fill the <code>label</code> "
        f"column of <code>{TO_LABEL}</code> and run <code>medsort label</code>.</p>"
        f'<div class="grid">{figures}</div>'
    )


@register_section(65)
def predictions_section(result: SortResult, out_dir: Path) -> str:
    """Predicted classes: counts, the most confident images, and group disagreements."""
    table = _read(out_dir, PREDICTIONS)
    if table is None or table.empty:
        return ""
    options = ReadOptions(**result.run.get("read_options", {}))
    flagged = table["disagrees_with_group"].astype(str).str.lower() == "true"
    parts = [
        f"<h2>Predicted classes</h2><p>{int(flagged.sum())} image(s) disagree with "
        "the majority prediction of their group (marked ⚑).</p>"
    ]
    for label, members in table.groupby("label", sort=True):
        top = members.sort_values("probability", ascending=False).head(THUMBS_PER_CLASS)
        odd = members[flagged[members.index]].head(THUMBS_PER_CLASS)
        figures = [
            _figure(result, r, f"{r['probability']:.2f}", options) for _, r in top.iterrows()
        ]
        figures += [
            _figure(result, r, f"⚑ group {r['group']} · {r['probability']:.2f}", options)
            for _, r in odd.iterrows()
        ]
        parts.append(
            f'<div class="group"><h4>{html.escape(str(label))} <span class="muted">'
            f"({len(members)} images, {int(flagged[members.index].sum())} disagree with "
            f'their group)</span></h4><div class="grid">{"".join(figures)}</div></div>'
        )
    return "\n".join(parts)
