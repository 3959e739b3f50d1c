"""``medsort adapt``: the adapt stage's subcommand."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsort.io.arguments import existing_folder, folder_to_write
from medsort.io.arguments import whole_number as at_least


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
    model_dir = adapt_folder(
        args.input,
        Path(args.out),
        overwrite=args.overwrite,
        epochs=args.epochs,
        patience=args.patience,
        views=args.views,
        max_images=args.max_images,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet,
    )
    if not args.quiet:
        print(f"medsort sort INPUT --out OUT --encoder adapted:{model_dir}")
    return 0
