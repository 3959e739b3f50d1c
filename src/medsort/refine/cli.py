"""``medsort suggest`` and ``medsort label``: the refine stage's subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medsort.arguments import whole_number as at_least
from medsort.refine.options import (
    DEFAULT_METHOD,
    METHODS,
    PREDICTIONS,
    REFINE_RUN,
    TEXT_PRIOR_MODES,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``suggest`` and ``label`` to the ``medsort`` parser."""
    suggest = commands.add_parser("suggest", help="which images to label first (and next)")
    suggest.add_argument("out", type=Path, help="output folder of a sort")
    suggest.add_argument("--n", type=at_least(1), default=20, help="how many images (default 20)")
    suggest.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="CSV path,label of the images labelled so far (default: the last `label` run's)",
    )
    suggest.add_argument("--quiet", action="store_true", help="no messages")
    suggest.set_defaults(run=run_suggest)
    label = commands.add_parser("label", help="predict every image from a few labelled ones")
    label.add_argument("out", type=Path, help="output folder of a sort")
    label.add_argument("--labels", type=Path, required=True, help="CSV with path,label")
    label.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="spread: label spreading over all images (default); svm/logreg/knn: labelled only",
    )
    label.add_argument(
        "--closed-set",
        action="store_true",
        help="always pick a labelled class (no 'other' for images no label reaches)",
    )
    label.add_argument(
        "--text-prior",
        choices=TEXT_PRIOR_MODES,
        default="auto",
        help="blend in the encoder's zero-shot class probabilities (text-capable encoders "
        "such as BiomedCLIP); auto: when there are at most 5 labels per class",
    )
    label.add_argument("--quiet", action="store_true", help="no summary of the predictions")
    label.set_defaults(run=run_label)


def run_suggest(args: argparse.Namespace) -> int:
    from medsort.refine.suggest import TO_LABEL, suggest_folder
    from medsort.report import write_report

    table = suggest_folder(args.out, args.n, args.labels)
    write_report(args.out)
    if args.quiet:
        return 0
    print(
        f"Suggested {len(table)} image(s) to label: fill the label column of "
        f"{args.out / TO_LABEL}, then run `medsort label {args.out} --labels FILE`."
    )
    return 0


def run_label(args: argparse.Namespace) -> int:
    import pandas as pd

    from medsort.refine.label import label_folder
    from medsort.refine.suggest import TO_LABEL, suggest_folder
    from medsort.report import write_report

    table = label_folder(args.out, args.labels, args.method, not args.closed_set, args.text_prior)
    # Earlier suggestions were picked without these labels: pick the next ones again.
    previous = Path(args.out) / TO_LABEL
    n_suggested = len(pd.read_csv(previous)) if previous.is_file() else 0
    if n_suggested > 0:
        suggest_folder(args.out, n_suggested, args.labels)
    write_report(args.out)
    if args.quiet:
        return 0
    counts = table["label"].value_counts()
    print(
        f"Predicted {len(table)} image(s): "
        + ", ".join(f"{name} {count}" for name, count in counts.items())
    )
    run = json.loads((args.out / REFINE_RUN).read_text())
    if run.get("text_prior_weight"):
        print(f"Zero-shot text prior blended in with weight {run['text_prior_weight']:.1f}.")
    print(
        f"{int(table['disagrees_with_group'].sum())} disagree with their group. "
        f"See {args.out / PREDICTIONS} and the report."
    )
    if n_suggested > 0:
        print(f"Refreshed the {n_suggested} suggestions in {args.out / TO_LABEL}.")
    return 0
