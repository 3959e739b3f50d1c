"""``medsort name OUT_DIR [--reference DIR_OR_CSV] [--vocabulary FILE]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsort.arguments import existing_file, existing_path, number_between


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``name`` subcommand to the ``medsort`` command line."""
    command = subparsers.add_parser(
        "name",
        help="name the groups of a sort (vocabulary or labelled references)",
        description=(
            "Name modality groups and groups: from a few labelled reference images "
            "(any encoder), or zero-shot from a vocabulary (text-capable encoders such as "
            "biomedclip). Unsure names stay 'unnamed'."
        ),
    )
    command.add_argument("out", type=Path, help="output folder of `medsort sort`")
    command.add_argument(
        "--reference",
        type=existing_path,
        default=None,
        help="labelled images: a folder with one sub-folder per label, or a CSV path,label",
    )
    command.add_argument(
        "--vocabulary",
        type=existing_file,
        default=None,
        help='JSON vocabulary extending (or, with "mode": "replace", replacing) the built-in',
    )
    command.add_argument(
        "--min-confidence",
        type=number_between(0.0, 1.0),
        default=None,
        help="below this confidence a group stays 'unnamed' (default 0.5)",
    )
    command.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache (default: $MEDSORT_CACHE_DIR or ~/.cache/medsort)",
    )
    command.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    command.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    command.set_defaults(run=run_name)


def run_name(args: argparse.Namespace) -> int:
    """Load the sort, name its groups, save, re-render the report and print a summary."""
    from medsort.embed.registry import create_encoder
    from medsort.name.naming import MIN_CONFIDENCE, name_groups
    from medsort.report import write_report
    from medsort.results import SortResult

    result = SortResult.load(args.out)
    encoder = create_encoder(result.run.encoder_spec or result.run.encoder)
    named = name_groups(
        result,
        encoder,
        reference=args.reference,
        vocabulary=args.vocabulary,
        min_confidence=MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence,
        cache=False if args.no_cache else args.cache_dir,
        progress=not args.quiet,
    )
    named.save(args.out)
    write_report(args.out)
    if not args.quiet:
        print(summary(named.run.extra["naming"]))
    return 0


def summary(naming: dict) -> str:
    """One line per group: ``group 3: pneumonia (0.71; runner-up normal 0.20)``."""
    if naming["method"] == "none":
        return (
            "No names: this encoder has no text model; give labelled examples with "
            "--reference DIR_OR_CSV (or sort with --encoder biomedclip:DIR)."
        )
    lines = [f"Named by {naming['method']} ({naming['source']}):"]
    for entry in naming["groups"]:
        guess = "" if entry["name"] != "unnamed" else f", best guess {entry['candidate']}"
        lines.append(
            f"  group {entry['group']}: {entry['name']} ({entry['confidence']:.2f}{guess}; "
            f"runner-up {entry['runner_up'] or '-'} {entry['runner_up_confidence']:.2f})"
        )
    return "\n".join(lines)
