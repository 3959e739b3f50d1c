"""``sort_folder``: the whole run, read → embed → group → report/export, as the CLI does it."""

from __future__ import annotations

import sys
from pathlib import Path

from medsort.audit import run_audit
from medsort.embed.registry import Encoder
from medsort.io.readers import ReadOptions
from medsort.name import name_groups
from medsort.report import export_groups, write_report
from medsort.results import SortResult
from medsort.sorter import Sorter


def sort_folder(
    input_dir: Path | str,
    out_dir: Path | str,
    encoder: str | Encoder = "efficientnet_lite0",
    n_clusters: int | None = None,
    export: str | None = None,
    cache_dir: Path | str | None = "default",
    batch_size: int = 32,
    random_state: int = 0,
    read_options: ReadOptions | None = None,
    quiet: bool = False,
    reference: Path | None = None,
    vocabulary: Path | None = None,
    drop_duplicates: bool = False,
    audit: bool = True,
    metadata_csv: Path | None = None,
    truth_csv: Path | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    views: bool = True,
) -> Path:
    """Sort ``input_dir`` and write every output into ``out_dir``; returns ``out_dir``.

    Nothing under ``input_dir`` is modified. If ``out_dir`` lies inside ``input_dir`` it
    is left out of the scan. ``backend="ray"`` embeds with Ray encoder actors (see
    :class:`~medsort.sorter.Sorter` and ``docs/scaling.md``). The shortcut and hygiene
    audit runs unless ``audit=False``; ``metadata_csv`` adds attributes to it and
    ``truth_csv`` labels (never used to group). ``views=False`` groups on the encoder's
    vectors only, without the hand-crafted views (:mod:`medsort.embed.views`). Groups are
    named from ``reference`` images, or from the (``vocabulary``'s) text prompts when the
    encoder embeds text.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise NotADirectoryError(f"Input folder not found: {input_dir}")
    if out_dir.resolve() == input_dir.resolve():
        raise ValueError("The output folder must not be the input folder.")
    exclude = out_dir if out_dir.resolve().is_relative_to(input_dir.resolve()) else None
    sorter = Sorter(
        encoder=encoder,
        n_clusters=n_clusters,
        read_options=read_options,
        cache_dir=cache_dir,
        batch_size=batch_size,
        drop_duplicates=drop_duplicates,
        random_state=random_state,
        progress=not quiet,
        backend=backend,
        ray_address=ray_address,
        num_workers=num_workers,
        views=views,
    ).fit(input_dir, exclude=exclude)
    result = sorter.result_
    if reference is not None or hasattr(sorter.encoder_, "embed_text"):
        result = name_groups(
            result,
            sorter.encoder_,
            reference=reference,
            vocabulary=vocabulary,
            cache_dir=cache_dir,
            progress=not quiet,
        )
    result.save(out_dir)
    findings: list[dict] = []
    if audit:
        _say("auditing for shortcuts, duplicates and outliers...", quiet)
        findings = run_audit(out_dir, metadata_csv=metadata_csv, truth_csv=truth_csv)["findings"]
    _say("writing the report...", quiet)
    write_report(out_dir)
    if export:
        _say(f"placing the images in {out_dir / 'groups'} ({export})...", quiet)
        export_groups(result, out_dir, mode=export)
    if not quiet:
        print(summary(result, out_dir, findings))
    return out_dir


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def summary(result: SortResult, out_dir: Path, findings: list[dict] | None = None) -> str:
    run = result.run
    lines = [
        f"Sorted {run['n_items']} images into {run['n_modality_groups']} modality group(s) "
        f"and {run['n_groups']} group(s); embedded {run['n_embedded_files']} new file(s).",
    ]
    if run["n_skipped"]:
        lines.append(f"Skipped {run['n_skipped']} file(s): see {out_dir / 'skipped.csv'}")
    warnings = [f for f in findings or [] if f.get("level") == "warning"]
    for finding in warnings:
        lines.append(f"Warning: {finding['message']}")
    lines.append(f"Report: {out_dir / 'report.html'}")
    return "\n".join(lines)
