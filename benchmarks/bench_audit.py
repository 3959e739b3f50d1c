"""Benchmark the audit stage on the real sets in ``../shared/data``.

Builds an output folder per set once (embeddings cached under ``--work``), then times
:func:`medsort.audit.run_audit` and prints the headline figures:

* dermoscopy: utility and detectability of the real ``age``, ``sex`` and ``site`` columns;
* every set: utility of each appearance attribute for the labels vs for the groups, the
  grouping verdict, the stability per group and overall;
* near duplicates: pairs flagged with two of three signals vs any one signal, and how many
  of them are *known* different images (dermoscopy: a different diagnosis, age, sex or
  site, which one lesion cannot have; blood cells: a different cell type). A contact sheet
  of a sample of flagged pairs is written for checking by eye (``--sheets``);
* the audit's wall time on about 1,000 images;
* ``--appearance-cost``: milliseconds per image of :func:`medsort.io.appearance.appearance`
  next to reading the same image, measured side by side.

Usage::

    python benchmarks/bench_audit.py [--sets dermoscopy lung-histology] [--work DIR]
        [--sheets DIR] [--appearance-cost]

The folder comes from :func:`medsort.pipeline.sort_folder` (the default sort).
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
    from medsort.pipeline import sort_folder
    from medsort.sorter import Sorter

    return sort_folder(data_dir, out_dir, Sorter(cache=cache_dir, progress=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["dermoscopy", "lung-histology"])
    parser.add_argument("--work", type=Path, default=ROOT.parent / "scratch" / "audit" / "bench")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--sheets", type=Path, default=None, help="write contact sheets here")
    parser.add_argument("--appearance-cost", action="store_true")
    args = parser.parse_args()
    if args.appearance_cost:
        for name in args.sets:
            _appearance_cost(name, DATA / name)
        return
    for name in args.sets:
        data_dir = DATA / name
        out_dir = build_out_dir(data_dir, args.work / name, args.work / "cache")
        if args.build_only:
            print(f"{name}: built {out_dir}")
            continue
        _bench_one(name, data_dir, out_dir, args.sheets)


def _appearance_cost(name: str, data_dir: Path, n: int = 200) -> None:
    """Reading vs measuring appearance, per image, on the same ``n`` files."""
    from medsort.io.appearance import appearance
    from medsort.io.readers import read_file

    files = sorted((data_dir / "images").iterdir())[:n]
    started = time.perf_counter()
    images = [read_file(path)[0] for path in files]
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    for image in images:
        appearance(image)
    measure_s = time.perf_counter() - started
    shape = images[0].pixels.shape
    print(
        f"{name}: {len(files)} images {shape}: read {1000 * read_s / len(files):.2f} ms, "
        f"appearance {1000 * measure_s / len(files):.2f} ms per image "
        f"({measure_s / read_s:.2f}x the read)"
    )


def _bench_one(name: str, data_dir: Path, out_dir: Path, sheets: Path | None = None) -> None:
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
    print(f"grouping verdict: {audit['grouping_verdict']}")
    stability = audit["stability"]
    print(f"stability: overall {stability['overall']}, per group {stability['per_group']}")
    for group, texts in audit["group_explanations"].items():
        print(f"  group {group}: {'; '.join(texts) or '-'}")
    _score_near_duplicates(out_dir, labels)
    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True)
        contact_sheet(out_dir, sheets / f"{name}-near-duplicates.png")


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


def _score_near_duplicates(out_dir: Path, labels_csv: Path) -> None:
    """Flagged pairs (two signals) vs any one signal, and the known-different among them.

    Two images are known to differ when their label or any other column of the labels
    file (age, sex, site) differs: one lesion or cell has one of each.
    """
    pairs = pd.read_csv(out_dir / "near_duplicates.csv", keep_default_na=False)
    one = _pairs_with_one_signal(out_dir)
    table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False).set_index("path")
    columns = list(table.columns)

    def known_different(frame: pd.DataFrame) -> int:
        if frame.empty:
            return 0
        a = table.reindex(frame["path_a"])[columns].to_numpy()
        b = table.reindex(frame["path_b"])[columns].to_numpy()
        return int(((a != b) & (a != "") & (b != "")).any(axis=1).sum())

    n2, d2 = len(pairs), known_different(pairs)
    n1, d1 = len(one), known_different(one)
    print(
        f"near duplicates: {n2} pairs by two of three signals, {d2} known different "
        f"(upper bound on precision {1 - d2 / max(n2, 1):.3f}); any one signal: {n1} pairs, "
        f"{d1} known different. Columns compared: {columns}."
    )
    if n2:
        print(pairs["method"].value_counts().to_string())


def _pairs_with_one_signal(out_dir: Path) -> pd.DataFrame:
    """Re-run the near-duplicate step with ``min_signals=1`` (the previous rule: either)."""
    import shutil
    import tempfile

    from medsort.audit import AuditSettings, run_audit

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "out"
        copy.mkdir()
        for name in ("assignments.csv", "items.csv", "embeddings.npy", "skipped.csv", "run.json"):
            shutil.copy2(out_dir / name, copy / name)
        run_audit(copy, settings=AuditSettings(min_signals=1, stability_runs=0))
        return pd.read_csv(copy / "near_duplicates.csv", keep_default_na=False)


def contact_sheet(out_dir: Path, target: Path, n: int = 24, side: int = 128) -> None:
    """A PNG of ``n`` flagged pairs (a random sample), side by side, for checking by eye."""
    from PIL import Image, ImageDraw

    run = json.loads((out_dir / "run.json").read_text())
    source = Path(run["input_dir"])
    pairs = pd.read_csv(out_dir / "near_duplicates.csv", keep_default_na=False)
    if pairs.empty:
        return
    sample = pairs.sample(min(n, len(pairs)), random_state=0)
    columns = 4
    rows = (len(sample) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (2 * side + 10), rows * (side + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, pair in enumerate(sample.itertuples(index=False)):
        x, y = (k % columns) * (2 * side + 10), (k // columns) * (side + 14)
        for j, path in enumerate((pair.path_a, pair.path_b)):
            with Image.open(source / path) as image:
                sheet.paste(image.convert("RGB").resize((side, side)), (x + j * side, y))
        caption = f"{k} cos {float(pair.cosine):.3f} px {pair.pixel_correlation} h {pair.hash_bits}"
        draw.text((x, y + side), caption, fill="black")
    sheet.save(target)
    print(f"contact sheet of {len(sample)} pairs: {target}")


if __name__ == "__main__":
    main()
