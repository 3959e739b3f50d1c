"""The ``medsort`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medsort import __version__
from medsort.io.arguments import (
    existing_file,
    existing_path,
    folder_to_write,
    number_between,
    volume_mode,
)
from medsort.io.arguments import whole_number as at_least

Command = Callable[[argparse.Namespace], int]
QUIET_HELP = "no progress bars or messages"

# Later stages add their own subcommands through ``add_commands(subparsers)``.
STAGE_COMMANDS: tuple[str, ...] = (
    "medsort.adapt.cli",
    "medsort.name.cli",
    "medsort.refine.cli",
    "medsort.audit.cli",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as error:
        print(f"medsort: error: {_printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medsort: interrupted", file=sys.stderr)
        return 130


def _printable(text: str) -> str:
    """``text`` with undecodable file-name bytes escaped, so printing it cannot fail."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsort",
        description="Sort medical images into groups by modality and condition, without labels.",
    )
    parser.add_argument("--version", action="version", version=f"medsort {__version__}")
    commands = parser.add_subparsers(title="commands")
    _add_sort(commands)
    _add_demo(commands)
    _add_eval(commands)
    _add_models(commands)
    for module in STAGE_COMMANDS:
        importlib.import_module(module).add_commands(commands)
    return parser


def _add_sort_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", type=folder_to_write, required=True, help="output folder")
    command.add_argument(
        "--k",
        type=at_least(1),
        default=None,
        help="exactly K flat groups (default: chosen automatically, two-level)",
    )
    command.add_argument(
        "--encoder",
        default="efficientnet_lite0",
        help="encoder name, e.g. efficientnet_lite0 or biomedclip:DIR",
    )
    command.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the encoder runs (auto: a GPU where onnxruntime-gpu or CUDA torch has one)",
    )
    command.add_argument(
        "--adapt",
        action="store_true",
        help="first adapt the encoder to this folder's images, without labels, into "
        "OUT/adapted (medsort adapt; needs medsort[torch]; minutes), then sort with it",
    )
    command.add_argument(
        "--export",
        choices=["copy", "link"],
        default=None,
        help="also place the images in OUT/groups/<group>/",
    )
    command.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache (default: $MEDSORT_CACHE_DIR or ~/.cache/medsort)",
    )
    command.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    command.add_argument(
        "--batch-size", type=at_least(1), default=32, help="images per encoder batch (default 32)"
    )
    command.add_argument(
        "--seed",
        type=at_least(0),
        default=0,
        help="random seed for grouping and the map: the same seed gives the same groups",
    )
    command.add_argument(
        "--window", default=None, help="CT/DICOM window: lung, soft-tissue, bone, brain, or C,W"
    )
    command.add_argument(
        "--frames",
        choices=["middle", "all"],
        default="middle",
        help="multi-frame DICOM: middle frame or every frame",
    )
    command.add_argument(
        "--volume",
        type=volume_mode,
        default="middle",
        help="volumes: middle (one slice per axis), axial:N, or mip",
    )
    command.add_argument(
        "--slide-mpp",
        type=number_between(0.0, low_open=True),
        default=1.0,
        help="whole-slide tiling resolution in microns per pixel",
    )
    command.add_argument(
        "--tile-size",
        type=at_least(8),
        default=224,
        help="whole-slide tile size in pixels at --slide-mpp",
    )
    command.add_argument(
        "--keep-tag",
        action="append",
        default=[],
        metavar="KEYWORD",
        help="also copy this DICOM attribute into items.csv (may identify "
        "patients: only when you mean it); repeat for several",
    )
    command.add_argument(
        "--reference",
        type=existing_path,
        default=None,
        help="name groups from labelled images: a folder of <label>/ sub-folders, "
        "or a CSV path,label",
    )
    command.add_argument(
        "--vocabulary",
        type=existing_file,
        default=None,
        help="JSON vocabulary extending or replacing the built-in one (text encoders)",
    )
    command.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="leave byte-identical copies out of the grouping",
    )
    command.add_argument(
        "--no-audit", action="store_true", help="skip the shortcut, duplicate and quality audit"
    )
    command.add_argument(
        "--no-views",
        action="store_true",
        help="group on the encoder's vectors only (no colour/texture views)",
    )
    command.add_argument(
        "--metadata",
        type=existing_file,
        default=None,
        help="CSV with path and attributes to audit (site, scanner, ...)",
    )
    command.add_argument(
        "--truth",
        type=existing_file,
        default=None,
        help="CSV with path,label: only for the audit, never to group",
    )
    command.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    command.add_argument(
        "--open", action="store_true", help="open report.html in the web browser when done"
    )
    _add_backend_options(command)


def _add_backend_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="embed in this process, or with Ray encoder actors (needs medsort[ray])",
    )
    command.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto or ray://HEAD:10001 (default: start a local Ray)",
    )
    command.add_argument(
        "--workers",
        type=at_least(1),
        default=None,
        help="Ray encoder actors (default: one per 4 CPUs of the cluster)",
    )


def _add_sort(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("sort", help="sort a folder of images")
    command.add_argument("input", type=Path, help="folder of images (never modified)")
    _add_sort_options(command)
    command.set_defaults(run=run_sort)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("demo", help="sort the bundled demo images")
    command.add_argument(
        "--out",
        type=Path,
        default=Path("medsort-demo"),
        help="output folder (default: ./medsort-demo)",
    )
    command.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    command.add_argument(
        "--open", action="store_true", help="open report.html in the web browser when done"
    )
    command.set_defaults(run=run_demo)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("eval", help="score a sort against known labels")
    command.add_argument("out", type=Path, help="output folder of a sort")
    command.add_argument(
        "--truth",
        type=existing_file,
        required=True,
        help="CSV with path,label; paths relative to the input folder or to its parent "
        "(images/a.png), or bare file names where they are unique",
    )
    command.add_argument(
        "--quiet", action="store_true", help="print the scores only, no notes on matching"
    )
    command.set_defaults(run=run_eval)


def _add_models(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("models", help="list encoders or download weights")
    actions = command.add_subparsers(title="actions")
    listing = actions.add_parser("list", help="list the registered encoders")
    listing.add_argument("--quiet", action="store_true", help="names only (the default output)")
    listing.set_defaults(run=run_models_list)
    download = actions.add_parser("download", help="download weights (needs internet)")
    download.add_argument("model", choices=["biomedclip"], help="which model's weights")
    download.add_argument("target", type=folder_to_write, help="folder to put the weights in")
    download.add_argument("--quiet", action="store_true", help="do not print the folder")
    download.set_defaults(run=run_models_download)


def run_sort(args: argparse.Namespace) -> int:
    from medsort.pipeline import sort_folder

    result_dir = sort_folder(
        args.input,
        args.out,
        encoder=args.encoder,
        n_clusters=args.k,
        export=args.export,
        cache_dir=None if args.no_cache else (args.cache_dir or "default"),
        batch_size=args.batch_size,
        random_state=args.seed,
        read_options=_read_options(args),
        reference=args.reference,
        vocabulary=args.vocabulary,
        drop_duplicates=args.drop_duplicates,
        audit=not args.no_audit,
        metadata_csv=args.metadata,
        truth_csv=args.truth,
        quiet=args.quiet,
        backend=args.backend,
        ray_address=args.address,
        num_workers=args.workers,
        device=args.device,
        views=not args.no_views,
        adapt=args.adapt,
    )
    if result_dir and args.open:
        open_report(result_dir)
    return 0 if result_dir else 1


def open_report(out_dir: Path) -> None:
    """Show ``OUT/report.html`` in the user's web browser (a file, no server)."""
    import webbrowser

    report = (Path(out_dir) / "report.html").resolve()
    if not webbrowser.open(report.as_uri()):
        print(f"medsort: no web browser found; open {report}", file=sys.stderr)


def run_demo(args: argparse.Namespace) -> int:
    from medsort.demo import demo_folder, demo_labels
    from medsort.evaluate import evaluate
    from medsort.pipeline import sort_folder

    sort_folder(demo_folder(), args.out, quiet=args.quiet)
    if not args.quiet:
        scores = evaluate(args.out, demo_labels())
        print(
            "Against the demo's true labels: "
            f"ACC {scores['acc']:.2f}, NMI {scores['nmi']:.2f}, ARI {scores['ari']:.2f} "
            f"({scores['n_groups']} groups for {scores['n_classes']} classes)"
        )
    if args.open:
        open_report(args.out)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from medsort.evaluate import evaluate

    scores = evaluate(args.out, args.truth, quiet=args.quiet)
    print(json.dumps(scores, indent=2))
    return 0


def run_models_list(args: argparse.Namespace) -> int:
    from medsort.embed.registry import list_encoders

    print("\n".join(list_encoders()))
    return 0


def run_models_download(args: argparse.Namespace) -> int:
    from medsort.embed.biomedclip import download_biomedclip

    folder = download_biomedclip(args.target)
    if not args.quiet:
        print(folder)
    return 0


def _read_options(args: argparse.Namespace):  # noqa: ANN202 - imports stay lazy for --help
    from medsort.io.intensity import parse_window
    from medsort.io.phi import check_keep_tags
    from medsort.io.readers import ReadOptions

    if args.window is not None:
        parse_window(args.window)  # fail early on a bad spec
    check_keep_tags(args.keep_tag)
    return ReadOptions(
        window=args.window,
        frames=args.frames,
        volume=args.volume,
        slide_mpp=args.slide_mpp,
        tile_size=args.tile_size,
        keep_tags=tuple(args.keep_tag),
    )


if __name__ == "__main__":
    raise SystemExit(main())
