"""The ``medsort`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medsort import __version__
from medsort.arguments import (
    existing_file,
    existing_path,
    folder_to_write,
    number_between,
    volume_mode,
)
from medsort.arguments import whole_number as at_least
from medsort.plugins import stage_modules

Command = Callable[[argparse.Namespace], int]
QUIET_HELP = "no progress bars or messages"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as error:
        print(f"medsort: error: {_printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medsort: interrupted", file=sys.stderr)
        return 130


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
    """Licence warnings read as medsort's own messages; others as Python prints them."""
    if category.__name__ == "LicenceWarning":
        print(f"medsort: warning: {message}", file=sys.stderr, flush=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


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
    for module in stage_modules("cli"):  # each stage adds its own: add_commands(commands)
        importlib.import_module(module).add_commands(commands)
    return parser


def _add_sort_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", type=folder_to_write, required=True, help="output folder")
    _with_alias(
        command,
        "--n-clusters",
        "--k",
        type=at_least(1),
        default=None,
        metavar="K",
        help="exactly K flat groups (default: chosen automatically, two-level)",
    )
    command.add_argument(
        "--encoder",
        default="efficientnet_lite0",
        help="encoder name (see `medsort models list`), e.g. efficientnet_lite0, "
        "dinov2-small (weights from `medsort models download`) or biomedclip:DIR",
    )
    command.add_argument(
        "--encoder-for",
        default=None,
        metavar="GROUP=ENCODER,...",
        help="embed modality groups again with their own encoder, e.g. "
        "xray=rad-dino,1=phikon (a group's index as in the report, or a modality name "
        "from DICOM Modality / slides)",
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
        "OUT/adapted (medsort adapt; needs medsort[torch]; minutes), then sort with it "
        "(k counted on the ImageNet features; grey folders keep the ImageNet groups); "
        "several modality groups: one encoder per colour group, in OUT/adapted/<group>",
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
        "--batch-size",
        type=at_least(1),
        default=32,
        help="images per encoder batch on a GPU or with torch (default 32; on a CPU the "
        "ONNX encoders run 2 images per call in each decoding thread)",
    )
    _with_alias(
        command,
        "--random-state",
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


def _with_alias(command: argparse.ArgumentParser, name: str, alias: str, **options: Any) -> None:
    """``name`` (the :class:`~medsort.sorter.Sorter` parameter's name) and its older
    spelling ``alias``, each its own option so that a message names the one typed."""
    command.add_argument(name, **options)
    options["help"] = f"same as {name}"
    command.add_argument(alias, dest=name.removeprefix("--").replace("-", "_"), **options)


def _add_backend_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="embed in this process, or with Ray encoder actors (needs medsort[ray])",
    )
    _with_alias(
        command,
        "--ray-address",
        "--address",
        default=None,
        help="Ray cluster to join: auto or ray://HEAD:10001 (default: start a local Ray)",
    )
    _with_alias(
        command,
        "--num-workers",
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
    listing = actions.add_parser(
        "list", help="the registered encoders: licence, modality, weights (downloaded or not)"
    )
    listing.add_argument("--quiet", action="store_true", help="names only")
    listing.set_defaults(run=run_models_list)
    download = actions.add_parser(
        "download", help="download an encoder's weights once (needs internet), then use offline"
    )
    download.add_argument("model", help="encoder name, e.g. dinov2-small (see `models list`)")
    download.add_argument(
        "target",
        type=folder_to_write,
        nargs="?",
        default=None,
        help="folder to put the weights in (default: the models home, "
        "$MEDSORT_MODELS_DIR or ~/.cache/medsort/models/NAME, found by --encoder NAME)",
    )
    download.add_argument("--quiet", action="store_true", help="do not print the folder")
    download.set_defaults(run=run_models_download)


def sorter_from_args(args: argparse.Namespace):  # noqa: ANN201 - imports stay lazy for --help
    """The :class:`~medsort.sorter.Sorter` that ``medsort sort``'s options describe."""
    from medsort.embed.backends import LocalBackend, RayBackend
    from medsort.group import TwoLevelGrouper
    from medsort.sorter import Sorter

    backend = (
        RayBackend(address=args.ray_address, num_workers=args.num_workers)
        if args.backend == "ray"
        else LocalBackend()
    )
    return Sorter(
        encoder=args.encoder,
        grouper=TwoLevelGrouper(n_clusters=args.n_clusters, random_state=args.random_state),
        backend=backend,
        cache=False if args.no_cache else args.cache_dir,
        read_options=_read_options(args),
        batch_size=args.batch_size,
        drop_duplicates=args.drop_duplicates,
        device=args.device,
        views=not args.no_views,
        progress=not args.quiet,
        encoder_for=args.encoder_for,
        thumbnails=True,
    )


def run_sort(args: argparse.Namespace) -> int:
    from medsort.pipeline import sort_folder

    result_dir = sort_folder(
        args.input,
        args.out,
        sorter_from_args(args),
        export=args.export,
        reference=args.reference,
        vocabulary=args.vocabulary,
        audit=not args.no_audit,
        metadata_csv=args.metadata,
        truth_csv=args.truth,
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
    from medsort.sorter import Sorter

    sort_folder(demo_folder(), args.out, Sorter(progress=not args.quiet, thumbnails=True))
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
    from medsort.embed.registry import default_model_dir, list_entries

    entries = list_entries()
    if args.quiet:
        print("\n".join(entry.name for entry in entries))
        return 0
    rows = [("name", "licence", "commercial", "modality", "weights", "what")]
    for entry in entries:
        if entry.weights is None:
            weights = "folder" if entry.argument else "installed"
        else:
            weights = "downloaded" if default_model_dir(entry.name).is_dir() else "download"
        if not entry.argument:
            spec = entry.name
        elif entry.weights is None:
            spec = f"{entry.name}:{entry.argument}"  # a folder is needed
        else:
            spec = f"{entry.name}[:{entry.argument}]"  # default: the models-home folder
        commercial = {True: "yes", False: "NO", None: "?"}[entry.licence.commercial]
        rows.append((spec, entry.licence.spdx, commercial, entry.modality, weights, entry.summary))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True))
            + "  "
            + row[5]
        )
    return 0


def run_models_download(args: argparse.Namespace) -> int:
    from medsort.embed.registry import get_entry
    from medsort.embed.weights import download_encoder

    entry = get_entry(args.model)
    message = entry.licence.warning(entry.name)
    if message:
        print(f"medsort: warning: {message}", file=sys.stderr)
    folder = download_encoder(entry.name, args.target)
    if not args.quiet:
        print(folder)
    return 0


def _read_options(args: argparse.Namespace):  # noqa: ANN202 - imports stay lazy for --help
    from medsort.io.intensity import parse_window
    from medsort.io.readers import ReadOptions

    if args.window is not None:
        parse_window(args.window)  # fail early on a bad spec
    if args.keep_tag:  # pydicom's tag dictionary takes 0.2-0.5 s to import
        from medsort.io.phi import check_keep_tags

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
