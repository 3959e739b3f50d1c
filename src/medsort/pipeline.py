"""``sort_folder``: the whole run, read → embed → group → report/export, as the CLI does it."""

from __future__ import annotations

import sys
from pathlib import Path

from medsort.audit import load_audit
from medsort.io.outputs import write_csv
from medsort.memo import Memo
from medsort.modality_adapt import modality_groups
from medsort.modality_encoders import match_keys, parse_encoder_for
from medsort.name import name_groups
from medsort.report.folder import remove_stale_outputs, save_folder
from medsort.results import SKIPPED, SortResult, mark_failed, writing
from medsort.sorter import NoReadableImageError, Sorter, cache_folder, shared_thumbs


def sort_folder(
    input_dir: Path | str,
    out_dir: Path | str,
    sorter: Sorter | None = None,
    *,
    export: str | None = None,
    reference: Path | None = None,
    vocabulary: Path | None = None,
    audit: bool = True,
    metadata_csv: Path | None = None,
    truth_csv: Path | None = None,
    adapt: bool = False,
) -> Path:
    """Sort ``input_dir`` with ``sorter`` and write every output into ``out_dir``; returns
    ``out_dir``.

    ``sorter`` (an unfitted :class:`~medsort.sorter.Sorter`, default
    ``Sorter(thumbnails=True)``) holds
    every read, embed and group choice (encoder, grouper, backend, cache, views, device,
    ``progress``: also this function's messages and summary); it is fitted here. The rest
    is what happens after grouping: groups are named from ``reference`` images, or from
    the (``vocabulary``'s) text prompts when the encoder embeds text; the shortcut and
    hygiene audit runs unless ``audit=False`` (``metadata_csv`` adds attributes to it and
    ``truth_csv`` labels, never used to group); ``export`` (``copy``, ``link``) places the
    images in group folders.

    Nothing under ``input_dir`` is modified. If ``out_dir`` lies inside ``input_dir`` it
    is left out of the scan. ``out_dir`` is marked incomplete from the first file written
    to the last (see :mod:`medsort.results`); a folder without readable images still gets
    ``skipped.csv``. The sorter's ``encoder_for`` embeds chosen modality groups again with
    their own encoder (:mod:`medsort.modality_encoders`); the summary names any licence
    warning of the encoders used. ``adapt=True`` first adapts EfficientNet-Lite0 to the
    folder's images without labels (:mod:`medsort.adapt`, needs torch) into
    ``out_dir/adapted`` (kept, reused by a later run on the same images, resumed if
    interrupted) and sorts with it.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    sorter = Sorter(thumbnails=True) if sorter is None else sorter
    check_folders(input_dir, out_dir)
    exclude = out_dir if out_dir.resolve().is_relative_to(input_dir.resolve()) else None
    if adapt:
        sorter = with_adapted_encoder(sorter, input_dir, out_dir, exclude)
    with writing(out_dir):
        remove_stale_outputs(out_dir)
        try:
            result = sorter.fit(input_dir, exclude=exclude).result_
            _after_grouping(
                sorter, result, out_dir, export, reference, vocabulary, audit,
                metadata_csv, truth_csv,
            )  # fmt: skip
        except NoReadableImageError as error:
            write_csv(error.skipped, out_dir / SKIPPED)
            mark_failed(out_dir, "no readable image")
            raise ValueError(f"{error} Reasons: {out_dir / SKIPPED}") from None
        except BaseException as error:
            mark_failed(out_dir, type(error).__name__)
            raise
    return out_dir


ADAPTED_DIR = "adapted"


def with_adapted_encoder(
    sorter: Sorter, input_dir: Path, out_dir: Path, exclude: Path | None
) -> Sorter:
    """A copy of ``sorter`` with encoders adapted to ``input_dir`` without labels
    (``sort --adapt``; see :mod:`medsort.adapt`).

    The folder is grouped first as ``sorter`` would (its vectors stay in the cache). One
    modality group: the encoder is adapted on the whole folder, into ``out_dir/adapted``.
    Several: one encoder per modality group, on its files, into
    ``out_dir/adapted/<group>``, used through ``encoder_for`` (groups the user's
    ``encoder_for`` names keep their encoder; mostly grey groups are not adapted, since
    their groups would stay the ImageNet ones).
    """
    from sklearn.base import clone

    try:
        from medsort.adapt.train import Adapter
    except ImportError as error:
        raise ImportError(
            f"--adapt needs torch: pip install 'medsort[torch]' (CPU-only: see the README); {error}"
        ) from None
    seed = sorter.grouper.random_state if sorter.grouper is not None else 0
    first = clone(sorter).set_params(encoder_for=None).fit(input_dir, exclude=exclude)
    adapter = Adapter(seed=seed, device=sorter.device, quiet=not sorter.progress)
    if first.grouper_.n_modalities_ == 1:
        # overwrite: an encoder of other images in out_dir/adapted is this command's own output.
        adapter.fit(
            input_dir, out_dir / ADAPTED_DIR, overwrite=True, read_options=sorter.read_options,
            exclude=exclude,
        )  # fmt: skip
        return clone(sorter).set_params(encoder=f"adapted:{adapter.model_dir_}")
    mapping = parse_encoder_for(sorter.encoder_for)
    groups = modality_groups(first.result_, out_dir)
    named, _ = match_keys(mapping, {group.index: group.name for group in groups})
    for group in groups:
        if group.index in named:
            continue
        adapter.fit(
            input_dir, out_dir / ADAPTED_DIR / str(group.index), overwrite=True,
            read_options=sorter.read_options, exclude=exclude, files=group.files,
            source=group.source(), unless_grey=True,
        )  # fmt: skip
        if adapter.model_dir_ is not None:
            mapping[str(group.index)] = f"adapted:{adapter.model_dir_}"
    return clone(sorter).set_params(encoder_for=mapping or None)


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


def _after_grouping(
    sorter: Sorter,
    result: SortResult,
    out_dir: Path,
    export: str | None,
    reference: Path | None,
    vocabulary: Path | None,
    audit: bool,
    metadata_csv: Path | None,
    truth_csv: Path | None,
) -> None:
    """Name (when a reference or a text encoder is there), then the folder's outputs."""
    quiet = not sorter.progress
    if reference is not None or hasattr(sorter.encoder_, "embed_text"):
        result = name_groups(
            result,
            sorter.encoder_,
            reference=reference,
            vocabulary=vocabulary,
            cache=sorter.cache,
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
        shared_thumbs=shared_thumbs(sorter.cache),
        memo=Memo(cache_folder(sorter.cache)),
    )
    if not quiet:
        findings = (load_audit(out_dir) or {}).get("findings", []) if audit else []
        print(summary(result, out_dir, findings))


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(result: SortResult, out_dir: Path, findings: list[dict] | None = None) -> str:
    run = result.run
    lines = [
        f"Sorted {run.n_items} images into {run.n_modality_groups} modality group(s) "
        f"and {run.n_groups} group(s); embedded {run.n_embedded_files} new file(s).",
    ]
    if run.n_skipped:
        lines.append(f"Skipped {run.n_skipped} file(s): see {out_dir / 'skipped.csv'}")
    for info in [run.encoder_licence or {}, *run.get("encoder_for", {}).values()]:
        warning = info.get("warning") or (info.get("licence") or {}).get("warning")
        if warning:
            lines.append(f"Licence: {warning}")
    warnings = [f for f in findings or [] if f.get("level") == "warning"]
    for finding in warnings:
        lines.append(f"Warning: {finding['message']}")
    for finding in findings or []:
        if finding.get("kind") == "group_count":
            lines.append(f"Note: {finding['message']}")
    lines.append(f"Report: {out_dir / 'report.html'}")
    return "\n".join(lines)
