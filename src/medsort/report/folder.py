"""``save_folder``: the whole output folder of a result, as ``medsort sort`` writes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medsort.audit import run_audit
from medsort.memo import NO_MEMO, Memo
from medsort.report.export import export_groups
from medsort.report.html import write_report
from medsort.results import SortResult, writing

STALE_OUTPUTS = (
    "report.html",
    "audit.json",
    "duplicates.csv",
    "near_duplicates.csv",
    "outliers.csv",
    "quality.csv",
)
"""Files a previous sort left that this one may not rewrite (``audit=False``): removed
first, so that no report or audit of another run sits beside the new assignments."""


def remove_stale_outputs(out_dir: Path) -> None:
    for name in STALE_OUTPUTS:
        (Path(out_dir) / name).unlink(missing_ok=True)


def save_folder(
    result: SortResult,
    out_dir: Path | str,
    audit: bool = True,
    metadata_csv: Path | None = None,
    truth_csv: Path | None = None,
    export: str | None = None,
    say: Callable[[str], None] | None = None,
    shared_thumbs: Path | None = None,
    memo: Memo = NO_MEMO,
) -> Path:
    """Save ``result`` with everything ``medsort sort`` adds: the audit, ``report.html``
    with its thumbnails and, with ``export="copy"|"link"``, the group folders.

    :meth:`SortResult.save` writes the tables only; this is the Python way to the same
    folder as the command line::

        sorter = Sorter().fit("images/")
        save_folder(sorter.result_, "out/")   # out/report.html, out/audit.json, ...

    The folder is marked incomplete until the last file is written, as during a sort
    (:func:`medsort.results.writing`); ``say`` receives a line before each step.
    ``shared_thumbs`` is a folder of thumbnails shared between output folders (``medsort
    sort`` passes the embedding cache's ``thumbs/``); ``memo`` remembers the audit's
    and the report's costly steps for a re-run (:mod:`medsort.memo`). Returns the report's path.
    """
    out_dir = Path(out_dir)
    say = say or (lambda _message: None)
    with writing(out_dir):
        remove_stale_outputs(out_dir)
        result.save(out_dir)
        if audit:
            say("auditing for shortcuts, duplicates and outliers...")
            run_audit(out_dir, metadata_csv=metadata_csv, truth_csv=truth_csv, memo=memo)
        say("writing the report...")
        report = write_report(out_dir, shared_thumbs=shared_thumbs, memo=memo)
        if export:
            say(f"placing the images in {out_dir / 'groups'} ({export})...")
            export_groups(result, out_dir, mode=export)
    return report
