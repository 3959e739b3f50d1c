"""``medsort audit OUT_DIR [--metadata meta.csv] [--truth labels.csv]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsort.arguments import existing_file
from medsort.arguments import whole_number as at_least


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    command = subparsers.add_parser(
        "audit",
        help="check a sort for shortcuts (format, size, look, site...), duplicates, stability",
    )
    command.add_argument("out", type=Path, help="output folder of a sort")
    command.add_argument(
        "--metadata",
        type=existing_file,
        default=None,
        help="CSV with path and extra columns to audit",
    )
    command.add_argument(
        "--truth", type=existing_file, default=None, help="CSV with path,label (only to audit)"
    )
    command.add_argument("--no-quality", action="store_true", help="do not re-read pixels")
    command.add_argument(
        "--stability-runs",
        type=at_least(0),
        default=5,
        help="subsampled reruns of the grouping for group stability (0 = skip)",
    )
    command.add_argument("--quiet", action="store_true", help="no summary of the findings")
    command.set_defaults(run=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    from medsort.audit import AuditSettings, run_audit
    from medsort.report import write_report

    audit = run_audit(
        args.out,
        metadata_csv=args.metadata,
        truth_csv=args.truth,
        settings=AuditSettings(quality=not args.no_quality, stability_runs=args.stability_runs),
    )
    report = write_report(args.out)
    if not args.quiet:
        print(summary(audit))
        print(f"Audit: {Path(args.out) / 'audit.json'}; report: {report}")
    return 0


def summary(audit: dict) -> str:
    """One line per finding, warnings first."""
    findings = audit["findings"]
    if not findings:
        return f"Audited {audit['n_items']} images: nothing flagged."
    lines = [f"Audited {audit['n_items']} images:"]
    lines += [f"  [{f['level']}] {f['message']}" for f in findings]
    return "\n".join(lines)
