"""End-to-end benchmark of ``medsort sort`` on the real sets in ``../shared/data``.

For each case it runs the real command in a subprocess with an empty cache, and prints
wall time, images/s, peak memory, the stage timings from run.json, and ACC/NMI/ARI
against the labels (which the sort never reads). A mixed folder of chest X-rays and
lung histology checks the modality split; every dev set in one folder checks it with six
modalities (and prints each set's scores inside the mix).

    python benchmarks/bench_sort.py                      # every case
    python benchmarks/bench_sort.py --cases lung-histology
    python benchmarks/bench_sort.py --cases lung-histology --encoder efficientnet_lite0_448
    python benchmarks/bench_sort.py --cases lung-histology --compare-views  # cost of views

``--compare-views`` runs every case twice at the same commit, with the default views and
with ``--no-views``, and prints the time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bench_views import SETS

from medsort.evaluate import evaluate
from medsort.group.metrics import score_grouping

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES: dict[str, tuple[list[str], int | None]] = {
    "mixed chest-xray-28 + lung-histology": (["chest-xray-28", "lung-histology"], None),
    "lung-histology": (["lung-histology"], None),
    "chest-xray-28 --k 2": (["chest-xray-28"], 2),
    "chest-xray-28": (["chest-xray-28"], None),
    "brain-mri": (["brain-mri"], None),
    "breast-ultrasound-28": (["breast-ultrasound-28"], None),
    "dermoscopy": (["dermoscopy"], None),
    "blood-cells-128": (["blood-cells-128"], None),
    "breast-ultrasound-28 --k 2": (["breast-ultrasound-28"], 2),
    "brain-mri --k 2": (["brain-mri"], 2),
    "every dev set mixed": (list(SETS), None),
}


def build_input(sets: list[str], work: Path) -> tuple[Path, Path]:
    """One input folder (symlinks to the real images) and a matching truth CSV."""
    if len(sets) == 1:
        return DATA / sets[0], DATA / sets[0] / "labels.csv"
    folder = work / "mixed"
    rows = []
    for name in sets:
        (folder / name).mkdir(parents=True)
        labels = pd.read_csv(DATA / name / "labels.csv")
        for path, label in zip(labels["path"], labels["label"], strict=True):
            link = folder / name / Path(path).name
            link.symlink_to(DATA / name / path)
            rows.append((f"{name}/{Path(path).name}", f"{name}/{label}"))
    truth = work / "mixed_labels.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(truth, index=False)
    return folder, truth


def run_case(
    name: str,
    sets: list[str],
    k: int | None,
    work: Path,
    encoder: str = "efficientnet_lite0",
    views: bool = True,
) -> dict[str, object]:
    input_dir, truth = build_input(sets, work)
    out = work / "out"
    command = [
        sys.executable,
        "-m",
        "medsort",
        "sort",
        str(input_dir),
        "--out",
        str(out),
        "--cache-dir",
        str(work / "cache"),
        "--encoder",
        encoder,
        "--quiet",
    ]
    if k is not None:
        command += ["--k", str(k)]
    if not views:
        command.append("--no-views")
    started, cpu_started = time.perf_counter(), children_cpu()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu_started
    run = json.loads((out / "run.json").read_text())
    scores = evaluate(out, truth)
    modality_purity = purity(out, truth, sets) if len(sets) > 1 else None
    per_set = scores_per_set(out, truth) if len(sets) > 2 else None
    return {
        "case": name,
        "views": [used["views"] for used in run.get("views_per_modality_group", [])],
        "images": run["n_items"],
        "seconds": round(seconds, 1),
        "cpu s": round(cpu, 1),
        "images/s": round(run["n_items"] / seconds, 1),
        "peak MiB": run["peak_rss_mib"],
        "stages": run["timings_s"],
        "modality groups": run["n_modality_groups"],
        "groups": run["n_groups"],
        "classes": scores["n_classes"],
        "modality purity": modality_purity,
        "ACC": round(scores["acc"], 3),
        "NMI": round(scores["nmi"], 3),
        "ARI": round(scores["ari"], 3),
        **({"per set": per_set} if per_set else {}),
    }


def children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes so far: a steadier cost
    figure than wall time when other jobs share the cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def purity(out: Path, truth: Path, sets: list[str]) -> float:
    """Share of images whose modality group's majority source set is their own set."""
    assignments = pd.read_csv(out / "assignments.csv")
    source = assignments["path"].str.split("/").str[0]
    majority = source.groupby(assignments["modality_group"]).agg(lambda s: s.mode()[0])
    return round(float((assignments["modality_group"].map(majority) == source).mean()), 4)


def scores_per_set(out: Path, truth: Path) -> dict[str, dict[str, float]]:
    """ACC / NMI / group count of each source set's images inside a mixed sort."""
    assignments = pd.read_csv(out / "assignments.csv").merge(pd.read_csv(truth), on="path")
    source = assignments["path"].str.split("/").str[0]
    out_scores = {}
    for name, rows in assignments.groupby(source):
        score = score_grouping(rows["label"].to_numpy(), rows["group"].to_numpy())
        out_scores[name] = {
            "ACC": round(score["acc"], 3),
            "NMI": round(score["nmi"], 3),
            "groups": int(rows["group"].nunique()),
        }
    return out_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--compare-views", action="store_true", help="also run --no-views")
    args = parser.parse_args()
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | python {platform.python_version()} "
        f"| {time.strftime('%Y-%m-%d')} | {args.encoder}"
    )
    for name in args.cases:
        sets, k = CASES[name]
        seconds, cpu = {}, {}
        for views in (True, False) if args.compare_views else (True,):
            with tempfile.TemporaryDirectory() as work:
                row = run_case(name, sets, k, Path(work), args.encoder, views)
                seconds[views], cpu[views] = row["seconds"], row["cpu s"]
                print(json.dumps(row), flush=True)
        if args.compare_views:
            ratio, cpu_ratio = seconds[True] / seconds[False], cpu[True] / cpu[False]
            print(
                f"# {name}: with views / without = {ratio:.2f} wall, {cpu_ratio:.2f} CPU",
                flush=True,
            )


if __name__ == "__main__":
    main()
