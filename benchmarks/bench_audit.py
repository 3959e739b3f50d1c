"""Benchmark the audit stage on the real sets in ``../shared/data``.

Builds an output folder per set once (embeddings cached under ``--work``), then times
:func:`medsort.audit.run_audit` and prints the headline figures:

* dermoscopy: utility and detectability of the real ``age``, ``sex`` and ``site`` columns;
* lung-histology (LC25000): how many near-duplicates (augmented copies) are found;
* the audit's wall time on about 1,000 images.

Usage::

    python benchmarks/bench_audit.py [--sets dermoscopy lung-histology] [--work DIR]

When the grouping stage (``medsort.group.TwoLevelGrouper``) is available the folder comes
from :func:`medsort.pipeline.sort_folder`; otherwise groups are k-means on the embeddings
with k = number of classes (a stand-in, good enough to exercise the audit).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def build_out_dir(data_dir: Path, out_dir: Path, cache_dir: Path) -> Path:
    """Sort ``data_dir/images`` into ``out_dir`` (skipped when it already holds a sort)."""
    if (out_dir / "assignments.csv").is_file():
        return out_dir
    try:
        from medsort.group import TwoLevelGrouper  # noqa: F401
    except ImportError:
        return _build_by_hand(data_dir, out_dir, cache_dir)
    from medsort.pipeline import sort_folder

    return sort_folder(data_dir, out_dir, cache_dir=cache_dir, quiet=True)


def _build_by_hand(data_dir: Path, out_dir: Path, cache_dir: Path) -> Path:
    from sklearn.cluster import KMeans

    from medsort.embed.cache import EmbeddingCache
    from medsort.embed.registry import create_encoder
    from medsort.embed.stream import embed_files
    from medsort.io.scan import relative_key, scan_folder
    from medsort.results import ASSIGNMENT_COLUMNS, SortResult, skipped_table

    files = scan_folder(data_dir)
    cache = EmbeddingCache(cache_dir)
    try:
        embedded = embed_files(files, create_encoder("efficientnet_lite0"), cache, progress=False)
    finally:
        cache.close()
    n_classes = pd.read_csv(data_dir / "labels.csv")["label"].nunique()
    vectors = embedded.vectors
    model = KMeans(n_clusters=n_classes, n_init=4, random_state=0).fit(vectors)
    distances = model.transform(vectors).min(axis=1)
    paths = [relative_key(path, data_dir) for path in embedded.files]
    items = [entry["item"] for entry in embedded.items]
    assignments = pd.DataFrame(
        {
            "path": paths,
            "item": items,
            "modality_group": 0,
            "group": model.labels_,
            "distance": distances,
            "representative": False,
            "map_x": 0.0,
            "map_y": 0.0,
        },
        columns=ASSIGNMENT_COLUMNS,
    )
    metadata = pd.DataFrame(
        [
            {"path": p, "item": i, **e["meta"]}
            for p, i, e in zip(paths, items, embedded.items, strict=True)
        ]
    )
    SortResult(
        assignments=assignments,
        items=metadata,
        embeddings=vectors,
        skipped=skipped_table([]),
        run={
            "input_dir": str(data_dir.resolve()),
            "encoder": "efficientnet_lite0",
            "n_items": len(paths),
            "n_modality_groups": 1,
            "n_groups": n_classes,
        },
    ).save(out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["dermoscopy", "lung-histology"])
    parser.add_argument("--work", type=Path, default=ROOT.parent / "scratch" / "audit" / "bench")
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    for name in args.sets:
        data_dir = DATA / name
        out_dir = build_out_dir(data_dir, args.work / name, args.work / "cache")
        if args.build_only:
            print(f"{name}: built {out_dir}")
            continue
        _bench_one(name, data_dir, out_dir)


def _bench_one(name: str, data_dir: Path, out_dir: Path) -> None:
    from medsort.audit import run_audit

    labels = data_dir / "labels.csv"
    extra = [c for c in pd.read_csv(labels, nrows=1).columns if c not in ("path", "label")]
    started, cpu = time.perf_counter(), time.process_time()
    audit = run_audit(out_dir, metadata_csv=labels if extra else None, truth_csv=labels)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    load = os.getloadavg()[0]
    print(
        f"\n== {name}: {audit['n_items']} images, audit {seconds:.2f} s wall, {cpu:.2f} s CPU "
        f"(load average {load:.1f} on {os.cpu_count()} CPUs) =="
    )
    print(json.dumps(audit["timings_s"]))
    _print_attributes(audit)
    hygiene = audit["hygiene"]
    near = hygiene["near_duplicates"]
    print(
        f"exact duplicates: {hygiene['exact_duplicates']['n_items']} items in "
        f"{hygiene['exact_duplicates']['n_sets']} sets; near-duplicates: {near['n_pairs']} pairs, "
        f"{near['n_items']} items ({near['n_by_embedding']} by embedding, cosine >= "
        f"{near['threshold']:.4f}; {near['n_by_pixels']} by pixels, correlation >= "
        f"{near['pixel_threshold']}); "
        f"outliers: {hygiene['outliers']['n_items']}; "
        f"quality flags: {hygiene['quality']['n_items']}"
    )
    for finding in audit["findings"]:
        print(f"  [{finding['level']}] {finding['message']}")
    if name == "lung-histology":
        _score_near_duplicates(out_dir)


def _print_attributes(audit: dict) -> None:
    rows = []
    for attribute in audit["attributes"]:
        for target, scores in attribute["targets"].items():
            rows.append(
                {
                    "attribute": attribute["name"],
                    "target": target,
                    "utility": scores["utility"],
                    "utility_q": scores["utility_q"],
                    "detect": scores["detectability"],
                    "detect_q": scores["detectability_q"],
                    "verdict": scores["verdict"],
                }
            )
        rows.append(
            {
                "attribute": attribute["name"],
                "target": "(image)",
                "utility": np.nan,
                "utility_q": np.nan,
                "detect": attribute["detectability"],
                "detect_q": attribute["detectability_q"],
                "verdict": f"balanced acc {attribute['balanced_accuracy'] or float('nan'):.2f}",
            }
        )
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(pd.DataFrame(rows).round(3).to_string(index=False))
    for ignored in audit["ignored"]:
        print(f"  ignored {ignored['name']}: {ignored['reason']}")


def _score_near_duplicates(out_dir: Path) -> None:
    """Near-duplicate pairs by method (LC25000 holds flipped/rotated copies of originals)."""
    pairs = pd.read_csv(out_dir / "near_duplicates.csv")
    print(f"near-duplicate pairs found: {len(pairs)}; by method:")
    print(pairs["method"].value_counts().to_string())


if __name__ == "__main__":
    main()
