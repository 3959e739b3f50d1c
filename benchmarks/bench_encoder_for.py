"""``--encoder-for`` on a mixed folder: one modality group re-embedded with its own encoder.

The mixed chest-xray-28 + lung-histology folder of ``bench_sort.py`` is sorted once with
the default encoder; the modality group holding the histology tiles is found from that run
(as a user reads it off the report), then the folder is sorted again with
``--encoder-for <that group>=ENCODER`` on the same cache (the default encoder's vectors
come from it). Both runs are scored against the labels (which neither run reads).

    python benchmarks/bench_encoder_for.py [--encoder efficientnet_lite0_448]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from medsort.evaluate import evaluate
from medsort.group.metrics import score_grouping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sort import build_input, children_cpu, purity  # noqa: E402

SETS = ["chest-xray-28", "lung-histology"]


def sort(input_dir: Path, out: Path, cache: Path, extra: list[str]) -> tuple[float, float]:
    command = [sys.executable, "-m", "medsort", "sort", str(input_dir), "--out", str(out),
               "--cache-dir", str(cache), "--quiet", *extra]  # fmt: skip
    started, cpu = time.perf_counter(), children_cpu()
    subprocess.run(command, check=True)
    return time.perf_counter() - started, children_cpu() - cpu


def scores(out: Path, truth: Path, source: str) -> dict[str, object]:
    """ACC/NMI/ARI over the whole folder, and over the rows of one source set."""
    whole = evaluate(out, truth, quiet=True)
    assignments = pd.read_csv(out / "assignments.csv")
    rows = assignments[assignments["path"].str.startswith(source + "/")]
    merged = rows.merge(pd.read_csv(truth), on="path")
    part = score_grouping(merged["label"].to_numpy(), merged["group"].to_numpy())
    return {
        "ACC": round(whole["acc"], 3),
        "NMI": round(whole["nmi"], 3),
        "ARI": round(whole["ari"], 3),
        source: {key: round(float(value), 3) for key, value in part.items()},
    }


def histology_group(out: Path) -> int:
    """The modality group holding most of the lung-histology tiles."""
    assignments = pd.read_csv(out / "assignments.csv")
    is_histology = assignments["path"].str.startswith("lung-histology/")
    return int(is_histology.groupby(assignments["modality_group"]).mean().idxmax())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite0_448")
    args = parser.parse_args()
    print(f"# {platform.node()} | {os.cpu_count()} CPUs | {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        input_dir, truth = build_input(SETS, work)
        cache = work / "cache"
        seconds, cpu = sort(input_dir, work / "default", cache, [])
        run = json.loads((work / "default" / "run.json").read_text())
        group = histology_group(work / "default")
        row = {
            "run": "default",
            "seconds": round(seconds, 1),
            "cpu s": round(cpu, 1),
            "modality groups": run["n_modality_groups"],
            "modality purity": purity(work / "default", truth, SETS),
            "groups": run["n_groups"],
            "histology group": group,
            **scores(work / "default", truth, "lung-histology"),
        }
        print(json.dumps(row), flush=True)
        mapping = f"{group}={args.encoder}"
        seconds, cpu = sort(input_dir, work / "per", cache, ["--encoder-for", mapping])
        run = json.loads((work / "per" / "run.json").read_text())
        row = {
            "run": f"--encoder-for {mapping}",
            "seconds": round(seconds, 1),
            "cpu s": round(cpu, 1),
            "groups": run["n_groups"],
            "encoder_for": {key: info["encoder"] for key, info in run["encoder_for"].items()},
            **scores(work / "per", truth, "lung-histology"),
        }
        print(json.dumps(row), flush=True)
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
