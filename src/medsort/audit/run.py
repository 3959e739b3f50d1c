"""``run_audit``: attributes, shortcut verdicts, stability and hygiene for one output folder.

The steps live in their own modules: :mod:`~medsort.audit.inputs` (what is read from the
folder), :mod:`~medsort.audit.attributes` (which attributes there are),
:mod:`~medsort.audit.scoring` (utility, detectability, verdicts),
:mod:`~medsort.audit.findings` and :mod:`~medsort.audit.messages` (what is flagged, in
words), :mod:`~medsort.audit.stability`, :mod:`~medsort.audit.hygiene_checks` and
:mod:`~medsort.audit.store` (the files); :mod:`~medsort.audit.records` holds the typed
records between them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import config_context as sklearn_config
from threadpoolctl import threadpool_limits

from medsort.audit import explain, findings, forked, hygiene, inputs, memoised
from medsort.audit.attributes import align_metadata, read_table
from medsort.audit.hygiene_checks import hygiene_checks, label_conflicts
from medsort.audit.messages import group_contrast  # noqa: F401  (re-exported)
from medsort.audit.records import AuditResult
from medsort.audit.settings import (  # noqa: F401  (re-exported)
    CONTENT_DEPENDENT,
    TECHNICAL_SOURCES,
    AuditSettings,
)
from medsort.audit.store import (  # noqa: F401  (re-exported)
    AUDIT,
    DUPLICATES,
    NEAR_DUPLICATES,
    OUTLIERS,
    QUALITY,
    load_audit,
    write_audit,
)
from medsort.embed.cache import keep_mask
from medsort.group.two_level import SMALL_PROBLEM_ROWS
from medsort.memo import NO_MEMO, Memo
from medsort.results import SortResult


def run_audit(
    out_dir: Path | str,
    metadata_csv: Path | str | None = None,
    truth_csv: Path | str | None = None,
    settings: AuditSettings | None = None,
    write: bool = True,
    memo: Memo = NO_MEMO,
) -> dict[str, Any]:
    """Audit a sort: which attributes the groups (and labels) follow, and data hygiene.

    Parameters
    ----------
    out_dir : Path or str
        Output folder of a sort (``assignments.csv``, ``items.csv``, ``embeddings.npy``).
    metadata_csv : Path or str, optional
        Extra per-image attributes: ``path`` (relative to the sorted folder) and any columns.
    truth_csv : Path or str, optional
        ``path,label``: known labels, used only to audit (never to group).
    settings : AuditSettings, optional
        Thresholds; the defaults suit most sets.
    write : bool
        Write ``audit.json`` and the hygiene CSVs into ``out_dir``.
    memo : Memo
        Where the attribute tests and stability reruns of the same inputs are remembered
        (:mod:`medsort.audit.memoised`); the default remembers nothing.

    Returns
    -------
    dict
        The content of ``audit.json``: ``attributes``, ``ignored``, ``findings`` (flagged,
        in plain language), ``hygiene`` and ``timings_s``. :func:`audit_folder` gives the
        same as an :class:`~medsort.audit.records.AuditResult`.
    """
    result = audit_folder(out_dir, metadata_csv, truth_csv, settings, memo)
    audit = result.to_dict()
    if write:
        write_audit(Path(out_dir), audit, result.tables)
    return audit


def audit_folder(
    out_dir: Path | str,
    metadata_csv: Path | str | None = None,
    truth_csv: Path | str | None = None,
    settings: AuditSettings | None = None,
    memo: Memo = NO_MEMO,
) -> AuditResult:
    """The audit of an output folder as a typed record (nothing written); see
    :func:`run_audit`."""
    settings = settings or AuditSettings()
    clock = time.perf_counter()
    result = SortResult.load(Path(out_dir))
    loaded = time.perf_counter() - clock
    # The audit's estimators get parameters it sets itself: scikit-learn need not check
    # them on each of its ~100 fits (10% of the audit's CPU; the same results).
    with (
        threadpool_limits(limits=1),
        _faiss_threads(1, len(result.assignments)),
        sklearn_config(skip_parameter_validation=True),
    ):
        return _audit(result, metadata_csv, truth_csv, settings, loaded, memo)


@contextmanager
def _faiss_threads(n: int, n_rows: int) -> Iterator[None]:
    """Small problems run faster on one thread, and the CPUs are often shared. Up to
    :data:`~medsort.audit.hygiene.EXACT_LIMIT` rows nothing in the audit uses faiss, so
    it is not even imported (70-150 ms)."""
    if n_rows <= hygiene.EXACT_LIMIT and "faiss" not in sys.modules:
        yield
        return
    try:
        import faiss
    except ImportError:  # pragma: no cover
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


NO_STABILITY: dict[str, Any] = {"per_group": {}, "unstable": [], "overall": None, "n_runs": 0}


def _audit(
    result: SortResult,
    metadata_csv: Path | str | None,
    truth_csv: Path | str | None,
    settings: AuditSettings,
    loaded_s: float = 0.0,
    memo: Memo = NO_MEMO,
) -> AuditResult:
    timings: dict[str, float] = {}
    clock = time.perf_counter() - loaded_s
    hashes = inputs.row_hashes(result)
    groups = result.assignments["group"].to_numpy()
    modality = result.assignments["modality_group"].to_numpy()
    timings["load+hash"] = time.perf_counter() - clock

    clock = time.perf_counter()
    pixels = inputs.pixel_rows(result, settings)
    items = result.items
    if pixels is not None and pixels.appearance is not None:
        items = pd.concat([items.reset_index(drop=True), pixels.appearance], axis=1)
    timings["pixels"] = time.perf_counter() - clock

    clock = time.perf_counter()
    stability = _start_stability(result, groups, settings, memo)
    timings["stability (start)"] = time.perf_counter() - clock

    clock = time.perf_counter()
    labels = inputs.truth_codes(result, truth_csv)
    metadata = None
    if metadata_csv is not None:
        metadata = align_metadata(result.items, read_table(metadata_csv))
    exclude = ("label",) if truth_csv is not None else ()
    attributes, ignored = memoised.collect_attributes(items, metadata, exclude, memo)
    rows = memoised.audit_attributes(result, attributes, labels, settings, memo)
    flagged = findings.attribute_findings(
        rows, result, attributes, items, labels is not None, settings
    )
    explained = explain.group_explanations(
        attributes, items, groups, modality, skip=CONTENT_DEPENDENT
    )
    verdict = findings.grouping_verdict(rows, labels, groups, settings)
    flagged = findings.verdict_findings(verdict) + flagged
    timings["attributes"] = time.perf_counter() - clock

    clock = time.perf_counter()
    stable = stability()
    flagged += findings.stability_findings(stable, automatic_k=result.run.n_clusters is None)
    timings["stability"] = time.perf_counter() - clock

    clock = time.perf_counter()
    hygiene_tables, hygiene_summary = hygiene_checks(result, hashes, pixels, settings, memo)
    if labels is not None:
        hygiene_summary["label_conflicts"] = label_conflicts(
            hygiene_tables[NEAR_DUPLICATES], result, labels
        )
    timings["hygiene"] = time.perf_counter() - clock

    flagged += findings.hygiene_findings(hygiene_summary)

    return AuditResult(
        n_items=len(result.assignments),
        targets=["groups"] + (["label"] if labels is not None else []),
        settings=settings.__dict__,
        metadata_csv=None if metadata_csv is None else str(metadata_csv),
        truth_csv=None if truth_csv is None else str(truth_csv),
        findings=flagged,
        attributes=rows,
        ignored=[{"name": i.name, "reason": i.reason} for i in ignored],
        group_explanations=explain.texts(explained),
        group_explanation_details=explained,
        grouping_verdict=verdict,
        stability=stable,
        hygiene=hygiene_summary,
        timings_s=timings,
        tables=hygiene_tables,
    )


def _start_stability(
    result: SortResult, groups: np.ndarray, settings: AuditSettings, memo: Memo
) -> Callable[[], dict[str, Any]]:
    """Start the stability reruns; the call returned gives their result.

    Reruns that must be computed (not in ``memo``) on a small problem run in a forked
    child on another core while the attribute tests run here (:mod:`~medsort.audit.forked`;
    the same result). A large one stays in this process: a child's reruns of a million rows
    would double the peak memory.
    """
    if settings.stability_runs <= 0:
        return lambda: dict(NO_STABILITY)
    args = (
        result.embeddings,
        groups,
        result.run.n_clusters,
        settings.stability_runs,
        settings.random_state,
        memo,
    )
    found = memoised.remembered_stability(*args)
    if found is not None:
        return lambda: found

    def reruns() -> dict[str, Any]:
        return memoised.group_stability(*args)

    return forked.start(reruns) if len(groups) < SMALL_PROBLEM_ROWS else reruns


def duplicate_keep_mask(out_dir: Path | str) -> np.ndarray:
    """Rows of ``assignments.csv`` to keep when dropping exact duplicate files."""
    result = SortResult.load(Path(out_dir))
    return keep_mask(inputs.row_hashes(result), result.assignments["path"].tolist())
