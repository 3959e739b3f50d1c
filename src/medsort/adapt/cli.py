"""``medsort adapt``: the adapt stage's subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsort.arguments import existing_folder, folder_to_write
from medsort.arguments import whole_number as at_least


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``adapt`` to the ``medsort`` parser."""
    adapt = commands.add_parser(
        "adapt",
        help="adapt the encoder to a folder's images, without labels (needs medsort[torch])",
    )
    adapt.add_argument("input", type=existing_folder, help="folder of images (never modified)")
    adapt.add_argument(
        "--out", type=folder_to_write, required=True, help="folder to save the adapted encoder in"
    )
    adapt.add_argument(
        "--epochs", type=at_least(1), default=15, help="most training epochs (default 15)"
    )
    adapt.add_argument(
        "--patience",
        type=at_least(1),
        default=3,
        help="stop after this many epochs without a better held-out criterion (default 3)",
    )
    adapt.add_argument(
        "--views",
        type=at_least(2),
        default=4,
        help="augmented views cached per image (default 4; more: slower, more varied)",
    )
    adapt.add_argument(
        "--max-images",
        type=at_least(16),
        default=3000,
        help="adapt on a fixed random sample of this many files above it (default 3000)",
    )
    adapt.add_argument(
        "--modality-group",
        metavar="KEY",
        help="adapt on one modality group of a sorted mixed folder only (its index in the "
        "report, or its name, as --encoder-for takes it); needs --from",
    )
    adapt.add_argument(
        "--from",
        dest="sort_out",
        metavar="SORT_OUT",
        type=Path,
        help="a finished `medsort sort INPUT --out SORT_OUT` of this folder: where "
        "--modality-group's files are read from",
    )
    adapt.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    adapt.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where training runs (auto: a CUDA GPU when torch sees one)",
    )
    adapt.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds (by default only a matching run is resumed or kept)",
    )
    adapt.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    adapt.set_defaults(run=run_adapt)


def run_adapt(args: argparse.Namespace) -> int:
    try:
        from medsort.adapt.train import adapt_folder
    except ImportError as error:
        raise SystemExit(
            f"medsort adapt needs torch: pip install 'medsort[torch]' ({error})"
        ) from None
    files, source = None, None
    if (args.modality_group is None) != (args.sort_out is None):
        raise ValueError(
            "--modality-group and --from go together: the group KEY of the sort SORT_OUT."
        )
    if args.modality_group is not None:
        from medsort.modality_adapt import modality_group_files

        group = modality_group_files(args.input, args.sort_out, args.modality_group)
        files, source = group.files, group.source()
        if not args.quiet:
            print(
                f"adapting on modality group {group.index} ({group.name or 'unnamed'}): "
                f"{len(files)} files of {args.sort_out}",
                file=sys.stderr,
            )
    model_dir = adapt_folder(
        args.input,
        Path(args.out),
        files=files,
        source=source,
        overwrite=args.overwrite,
        epochs=args.epochs,
        patience=args.patience,
        views=args.views,
        max_images=args.max_images,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet,
    )
    if not args.quiet and source is not None:
        print(f"medsort sort INPUT --out OUT --encoder-for {source['index']}=adapted:{model_dir}")
    elif not args.quiet:
        print(f"medsort sort INPUT --out OUT --encoder adapted:{model_dir}")
    return 0
