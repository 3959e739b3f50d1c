"""``report.html``: one self-contained page to browse, review and label the groups.

The page opens offline from disk: its script, style and data are inline, and the only
other files are the thumbnails in ``thumbs/`` beside it. It is rebuilt from the output
folder alone, so every stage that adds a file (names, audit, suggestions, predictions)
can simply render it again; thumbnails are made once and reused.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pandas as pd

from medsort.io.readers import ReadOptions
from medsort.memo import NO_MEMO, Memo
from medsort.plugins import import_all, stage_modules
from medsort.report.data import (
    MAX_MAP_POINTS,
    MAX_PAGE_ITEMS,
    group_explanations,
    page_data,
    page_rows,
    shown_part,
)
from medsort.report.thumbnails import ThumbnailStore
from medsort.results import REPORT, RunInfo, SortResult

MAX_TRAITS = 2
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#637939", "#ad494a", "#a55194", "#6b6ecf",
    "#8ca252", "#bd9e39", "#843c39", "#7b4173",
]  # fmt: skip

Section = Callable[[SortResult, Path], str]
"""A report section: gets the result and output folder, returns HTML ('' to leave out)."""

_SECTIONS: list[tuple[int, Section]] = []

# Where each section stands on the page, top to bottom (a section's ``order``).
AUDIT_WARNINGS = 10
"""The audit's warnings, first: they change how everything below reads."""
MAP = 40
GROUP_NAMES = 45
GROUPS = 50
SLIDES = 60
LABEL_SUGGESTIONS = 61
AUDIT_DETAILS = 62
BURNED_IN_TEXT = 63
LABEL_PREDICTIONS = 65
SKIPPED = 90


def register_section(order: int) -> Callable[[Section], Section]:
    """Add a section to every report; lower ``order`` comes first (one of the constants
    above: :data:`GROUPS`, ...). Sections live in their stage's ``report`` module, found
    by :func:`medsort.plugins.stage_modules`."""

    def add(section: Section) -> Section:
        _SECTIONS.append((order, section))
        _SECTIONS.sort(key=lambda pair: pair[0])
        return section

    return add


def write_report(
    out_dir: Path,
    progress: bool = False,
    shared_thumbs: Path | None = None,
    memo: Memo = NO_MEMO,
) -> Path:
    """Render ``OUT_DIR/report.html`` (and its ``thumbs/``) from what the folder holds.

    The first build reads every image once for its thumbnail; later builds reuse them, and
    so do other output folders through ``shared_thumbs`` (see
    :class:`~medsort.report.thumbnails.ThumbnailStore`); ``memo`` remembers the
    neighbour lists (:mod:`medsort.memo`).
    """
    out_dir = Path(out_dir)
    result = SortResult.load(out_dir)
    import_all(stage_modules("report"))
    shown = shown_part(result, page_rows(result.assignments))
    store = ThumbnailStore(out_dir, read_options(result), shared=shared_thumbs)
    thumbs = store.build(shown.assignments, result.source_path, progress=progress)
    titles = group_titles(result, out_dir)
    colors = {g: color(g) for g in titles}
    sizes = result.assignments["group"].value_counts().to_dict()
    data = page_data(shown, out_dir, thumbs, titles, colors, sizes, memo)
    data["modality_titles"] = {
        int(m): modality_title(result.assignments, int(m))
        for m in sorted(result.assignments["modality_group"].unique())
    }
    with store.active():
        body = "\n".join(section(result, out_dir) for _, section in _SECTIONS)
    target = out_dir / REPORT
    partial = target.with_suffix(".html.part")
    partial.write_text(_page(result, body, data), encoding="utf-8")
    os.replace(partial, target)
    return target


def color(group: int) -> str:
    return PALETTE[group % len(PALETTE)]


def group_title(assignments: pd.DataFrame, group: int, traits: list[str] | None = None) -> str:
    """``Group 3 · pneumonia`` when the group has a name, else ``Group 3`` followed by
    up to :data:`MAX_TRAITS` of its distinguishing ``traits`` (from the audit)."""
    title = f"Group {group}"
    if "group_name" in assignments.columns:
        names = assignments.loc[assignments["group"] == group, "group_name"]
        name = str(names.iloc[0]) if len(names) else ""
        if name and name != "unnamed":
            return f"{title} · {name}"
    if traits:
        title += " · " + "; ".join(traits[:MAX_TRAITS])
    return title


def group_titles(result: SortResult, out_dir: Path) -> dict[int, str]:
    """Every group's title, with the audit's explanations where the group has no name."""
    traits = group_explanations(out_dir)
    return {
        int(g): group_title(result.assignments, int(g), traits.get(int(g)))
        for g in sorted(result.assignments["group"].unique())
    }


def modality_title(assignments: pd.DataFrame, modality: int) -> str:
    """``Modality group 1`` or ``Modality group 1 · chest X-ray`` when it has a name."""
    title = f"Modality group {modality}"
    if "modality_name" in assignments.columns:
        names = assignments.loc[assignments["modality_group"] == modality, "modality_name"]
        if len(names) and str(names.iloc[0]) not in ("", "unnamed"):
            title += f" · {names.iloc[0]}"
    return title


def _asset(name: str) -> str:
    return resources.files("medsort.report").joinpath("assets", name).read_text("utf-8")


def _json_for_script(data: dict) -> str:
    """JSON that cannot end its ``<script>`` element early."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c")


def _licence_note(run: RunInfo) -> str:
    """The encoder's licence after its name, as a warning when not for commercial use."""
    licences = [run.encoder_licence or {}]
    licences += [info.get("licence") or {} for info in run.get("encoder_for", {}).values()]
    notes = []
    for licence in licences:
        if licence.get("warning"):
            notes.append(f'<span class="warning">{html.escape(licence["warning"])}</span>')
        elif licence.get("spdx") and not notes:
            notes.append(f"licence {html.escape(licence['spdx'])}")
    return f" ({'; '.join(notes)})" if notes else ""


def _page(result: SortResult, body: str, data: dict) -> str:
    run = result.run
    n_items = len(result.assignments)
    summary = (
        f"{n_items} images from <code>{html.escape(_known(run.input_dir, ''))}</code> "
        f"in {_known(run.n_modality_groups)} modality group(s) and "
        f"{_known(run.n_groups)} group(s); encoder <code>{html.escape(_known(run.encoder, ''))}"
        f"</code>{_licence_note(run)}; {len(result.skipped)} file(s) skipped."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medsort report</title>
<style>{_asset("report.css")}</style></head>
<body><header><h1>medsort report</h1><p class="summary">{summary}</p>
<nav id="nav"></nav></header>
{_REVIEW_BAR}
<main>
{body}
</main>
{_VIEWER}
<footer>medsort {html.escape(_known(run.medsort_version, ""))} · this page works offline;
marks stay in this browser until you download them.</footer>
<noscript><p class="warning">Turn on JavaScript to browse the images and mark them.</p></noscript>
<script type="application/json" id="medsort-data">{_json_for_script(data)}</script>
<script>{_asset("report.js")}</script>
</body></html>"""


_REVIEW_BAR = """<div id="review" role="toolbar" aria-label="Review">
<b>Review</b>
<label>Class <input id="class-name" list="class-list" placeholder="type a class name"
 autocomplete="off" size="18"></label><datalist id="class-list"></datalist>
<label title="When on, clicking an image marks it with the class instead of opening it">
<input type="checkbox" id="mark-mode" autocomplete="off"> clicks mark images</label>
<span id="mark-count">0 images marked</span>
<button id="download" type="button">Download labels.csv</button>
<button id="clear-marks" type="button">Clear marks</button>
<span id="review-status" class="muted" aria-live="polite"></span>
<details class="howto"><summary>How</summary><p>Type a class name, then turn on
<i>clicks mark images</i> and click images, or use <i>This whole group is …</i> on a group.
A single image's mark wins over its group's. Marks are kept in this browser. Download
<code>labels.csv</code> and run <code>medsort label OUT --labels labels.csv</code> to
predict every image.</p></details>
</div>"""

_VIEWER = """<div id="viewer" hidden role="dialog" aria-modal="true" aria-label="Image">
<div class="vbox">
<div class="vbar"><button id="v-prev" type="button" title="previous in group (←)">‹</button>
<span id="v-pos"></span>
<button id="v-next" type="button" title="next in group (→)">›</button>
<button id="v-close" type="button" title="close (Esc)">×</button></div>
<div class="vmain"><div class="vimage"><img id="v-img" alt=""></div>
<div class="vside"><table id="v-info"></table>
<p><button id="v-mark" type="button">Mark as …</button>
<button id="v-unmark" type="button">Remove mark</button></p>
<p><label>Move to group <select id="v-move"></select></label></p>
<p><a id="v-open" href="#" target="_blank" rel="noopener">open the original file</a></p>
</div></div>
<h4>Nearest neighbours</h4><div class="grid" id="v-neighbours"></div>
</div></div>"""


@register_section(GROUPS)
def groups_section(result: SortResult, out_dir: Path) -> str:
    """Every image of every group, paged, most typical first (drawn by the page script)."""
    sampled = (
        f" With more than {MAX_PAGE_ITEMS:,} images the page holds part of each group: its "
        "most and least typical images and an even spread between; marks apply to those "
        "images only, and every image is in <code>assignments.csv</code>."
        if len(result.assignments) > MAX_PAGE_ITEMS
        else ""
    )
    return (
        '<section id="groups"><h2>Groups</h2><p class="muted">Each group is a set of images '
        "the encoder finds alike. Images go from the most typical (closest to the group's "
        f"centre) to the least typical; click one to see it large.{sampled}</p>"
        '<div id="gallery"></div></section>'
    )


@register_section(MAP)
def map_section(result: SortResult, out_dir: Path) -> str:
    """A 2D map of all images (a sample above ``MAX_MAP_POINTS``), coloured by group."""
    if result.assignments.empty:
        return ""
    note = (
        f" (a random sample of {MAX_MAP_POINTS})"
        if len(result.assignments) > MAX_MAP_POINTS
        else ""
    )
    return (
        f'<section id="map"><h2>Map of all images{note}</h2>'
        '<p class="muted">Each dot is an image; images that look alike to the encoder lie '
        "close together. The axes have no units (a 2-D projection of the image features). "
        "Hover a dot to see the image, click it to open it, drag to draw a lasso around "
        "dots, click a group below to highlight it.</p>"
        '<div id="legend"></div><div class="maplayout"><div class="mapwrap">'
        '<canvas id="map-canvas" width="640" height="640"></canvas><div id="map-tip" hidden>'
        '</div></div><div id="selection"><p class="muted">Draw a lasso around dots to '
        "list those images here and mark them together.</p></div></div></section>"
    )


@register_section(SKIPPED)
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


def read_options(result: SortResult) -> ReadOptions:
    """The read options the sort used (from ``run.json``)."""
    return result.run.read_options()


def _known(value: object, unknown: str = "?") -> str:
    """``value`` as text, ``unknown`` where ``run.json`` did not say."""
    return unknown if value is None else str(value)
