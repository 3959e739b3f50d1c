"""``save_folder``: the whole output folder of a result, as ``medsort sort`` writes it."""

from __future__ import annotations

from pathlib import Path

from medsort.audit import run_audit
from medsort.report.export import export_groups
from medsort.report.html import write_report
from medsort.results import SortResult


def save_folder(
    result: SortResult,
    out_dir: Path | str,
    audit: bool = True,
    metadata_csv: Path | None = None,
    truth_csv: Path | None = None,
    export: str | None = None,
) -> Path:
    """Save ``result`` with everything ``medsort sort`` adds: the audit, ``report.html``
    with its thumbnails and, with ``export="copy"|"link"``, the group folders.

    :meth:`SortResult.save` writes the tables only; this is the Python way to the same
    folder as the command line::

        sorter = Sorter().fit("images/")
        save_folder(sorter.result_, "out/")   # out/report.html, out/audit.json, ...

    Returns the report's path.
    """
    out_dir = Path(out_dir)
    result.save(out_dir)
    if audit:
        run_audit(out_dir, metadata_csv=metadata_csv, truth_csv=truth_csv)
    report = write_report(out_dir)
    if export:
        export_groups(result, out_dir, mode=export)
    return report
