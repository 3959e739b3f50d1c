"""``sort_folder``: the whole run, read → embed → group → report/export, as the CLI does it."""

from __future__ import annotations

import sys
from pathlib import Path

from medsort.audit import load_audit
from medsort.embed.registry import Encoder
from medsort.io.outputs import write_csv
from medsort.io.readers import ReadOptions
from medsort.name import name_groups
from medsort.report.folder import remove_stale_outputs, save_folder
from medsort.results import SKIPPED, SortResult, mark_failed, writing
from medsort.sorter import NoReadableImageError, Sorter


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
    device: str = "auto",
    views: bool = True,
    adapt: bool = False,
) -> Path:
    """Sort ``input_dir`` and write every output into ``out_dir``; returns ``out_dir``.

    Nothing under ``input_dir`` is modified. If ``out_dir`` lies inside ``input_dir`` it
    is left out of the scan. ``out_dir`` is marked incomplete from the first file written
    to the last (see :mod:`medsort.results`); a folder without readable images still gets
    ``skipped.csv``. ``backend="ray"`` embeds with Ray encoder actors (see
    :class:`~medsort.sorter.Sorter` and ``docs/scaling.md``). The shortcut and hygiene
    audit runs unless ``audit=False``; ``metadata_csv`` adds attributes to it and
    ``truth_csv`` labels (never used to group). ``views=False`` groups on the encoder's
    vectors only, without the hand-crafted views (:mod:`medsort.embed.views`). Groups are
    named from ``reference`` images, or from the (``vocabulary``'s) text prompts when the
    encoder embeds text. ``device`` (``auto``, ``cpu``, ``cuda``) is where a named encoder
    runs. ``adapt=True`` first adapts EfficientNet-Lite0 to the folder's images without
    labels (:mod:`medsort.adapt`, needs torch) into ``out_dir/adapted`` (kept, reused by a
    later run on the same images, resumed if interrupted) and sorts with it.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    check_folders(input_dir, out_dir)
    exclude = out_dir if out_dir.resolve().is_relative_to(input_dir.resolve()) else None
    if adapt:
        model_dir = adapt_to_folder(input_dir, out_dir, exclude, random_state, device, quiet,
                                    read_options)  # fmt: skip
        encoder = f"adapted:{model_dir}"
    with writing(out_dir):
        remove_stale_outputs(out_dir)
        try:
            return _sort_into(
                input_dir, out_dir, exclude, encoder, n_clusters, export, cache_dir,
                batch_size, random_state, read_options, quiet, reference, vocabulary,
                drop_duplicates, audit, metadata_csv, truth_csv, backend, ray_address,
                num_workers, device, views,
            )  # fmt: skip
        except NoReadableImageError as error:
            write_csv(error.skipped, out_dir / SKIPPED)
            mark_failed(out_dir, "no readable image")
            raise ValueError(f"{error} Reasons: {out_dir / SKIPPED}") from None
        except BaseException as error:
            mark_failed(out_dir, type(error).__name__)
            raise


ADAPTED_DIR = "adapted"


def adapt_to_folder(
    input_dir: Path,
    out_dir: Path,
    exclude: Path | None,
    seed: int,
    device: str,
    quiet: bool,
    read_options: ReadOptions | None,
) -> Path:
    """``medsort sort --adapt``'s adaptation into ``out_dir/adapted`` (see :mod:`medsort.adapt`)."""
    try:
        from medsort.adapt.train import Adapter
    except ImportError as error:
        raise ImportError(
            f"--adapt needs torch: pip install 'medsort[torch]' (CPU-only: see the README); {error}"
        ) from None
    adapter = Adapter(seed=seed, device=device, quiet=quiet)
    # overwrite: an encoder of other images in out_dir/adapted is this command's own output.
    adapter.fit(input_dir, out_dir / ADAPTED_DIR, overwrite=True, read_options=read_options,
                exclude=exclude)  # fmt: skip
    return adapter.model_dir_


def check_folders(input_dir: Path, out_dir: Path) -> None:
    """Plain messages for an input that is not a folder and outputs that cannot go there."""
    if not input_dir.exists():
        raise FileNotFoundError(f"Input folder not found: {input_dir}")
    if not input_dir.is_dir():
        raise NotADirectoryError(
            f"The input must be a folder of images, not a file: {input_dir} "
            "(put the file in a folder and sort that)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"The output folder is a file: {out_dir}")
    if out_dir.resolve() == input_dir.resolve():
        raise ValueError("The output folder must not be the input folder.")


def _sort_into(
    input_dir: Path,
    out_dir: Path,
    exclude: Path | None,
    encoder: str | Encoder,
    n_clusters: int | None,
    export: str | None,
    cache_dir: Path | str | None,
    batch_size: int,
    random_state: int,
    read_options: ReadOptions | None,
    quiet: bool,
    reference: Path | None,
    vocabulary: Path | None,
    drop_duplicates: bool,
    audit: bool,
    metadata_csv: Path | None,
    truth_csv: Path | None,
    backend: str,
    ray_address: str | None,
    num_workers: int | None,
    device: str,
    views: bool,
) -> Path:
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
        device=device,
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
    save_folder(
        result,
        out_dir,
        audit=audit,
        metadata_csv=metadata_csv,
        truth_csv=truth_csv,
        export=export,
        say=None if quiet else _say,
    )
    if not quiet:
        findings = (load_audit(out_dir) or {}).get("findings", []) if audit else []
        print(summary(result, out_dir, findings))
    return out_dir


def _say(message: str) -> None:
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
