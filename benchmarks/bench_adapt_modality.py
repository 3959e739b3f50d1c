"""Adapting one modality group of a mixed folder: default sort vs ``--encoder-for G=adapted:DIR``.

The mixed chest-xray-28 + lung-histology folder of ``bench_sort.py`` is sorted with the
defaults; the modality group holding the histology tiles is found from that run (as a
user reads it off the report); ``medsort adapt --modality-group G --from DEFAULT_OUT``
adapts the encoder on that group's files only (no labels), and the folder is sorted again
with ``--encoder-for G=adapted:DIR`` on the same cache. Both sorts are scored against the
labels (which no run reads): ACC/NMI/ARI overall and per source set, and each set's k.
Prints the adaptation's CPU seconds (user + system of the process, all threads) and wall
seconds.

    nice -n 5 python benchmarks/bench_adapt_modality.py --epochs 5 [--work DIR]
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
from bench_encoder_for import histology_group, sort  # noqa: E402
from bench_sort import build_input, children_cpu  # noqa: E402

SETS = ["chest-xray-28", "lung-histology"]


def scores(out: Path, truth: Path) -> dict[str, object]:
    """ACC/NMI/ARI over the whole folder and, with the number of groups, per source set."""
    whole = evaluate(out, truth, quiet=True)
    rows = pd.read_csv(out / "assignments.csv").merge(pd.read_csv(truth), on="path")
    row: dict[str, object] = {
        "ACC": round(whole["acc"], 4),
        "NMI": round(whole["nmi"], 4),
        "ARI": round(whole["ari"], 4),
        "groups": int(whole["n_groups"]),
    }
    for name in SETS:
        part = rows[rows["path"].str.startswith(name + "/")]
        metrics = score_grouping(part["label"].to_numpy(), part["group"].to_numpy())
        row[name] = {key: round(float(value), 3) for key, value in metrics.items()}
        row[name]["k"] = int(part["group"].nunique())
    return row


def adapt(input_dir: Path, model: Path, group: int, sort_out: Path, epochs: int) -> dict:
    command = [sys.executable, "-m", "medsort", "adapt", str(input_dir), "--out", str(model),
               "--modality-group", str(group), "--from", str(sort_out), "--epochs", str(epochs),
               "--quiet"]  # fmt: skip
    started, cpu = time.perf_counter(), children_cpu()
    subprocess.run(command, check=True)
    config = json.loads((model / "adapted.json").read_text())
    training = config["training"]
    return {
        "run": f"adapt --modality-group {group} --epochs {epochs}",
        "seconds": round(time.perf_counter() - started, 1),
        "cpu s": round(children_cpu() - cpu, 1),
        "cpu s (adapted.json)": training["cpu_seconds"],
        "images": config["trained_on"]["n_images"],
        "best epoch": training["best_epoch"],
        "criterion": [h["criterion"] for h in training["history"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args()
    print(f"# {platform.node()} | {os.cpu_count()} CPUs | {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        work = args.work or Path(folder)
        input_dir, truth = build_input(SETS, work)
        cache = work / "cache"
        seconds, cpu = sort(input_dir, work / "default", cache, [])
        group = histology_group(work / "default")
        row = {"run": "default", "seconds": round(seconds, 1), "cpu s": round(cpu, 1),
               "histology group": group, **scores(work / "default", truth)}  # fmt: skip
        print(json.dumps(row), flush=True)
        model = work / f"adapted-{group}-{args.epochs}"
        print(json.dumps(adapt(input_dir, model, group, work / "default", args.epochs)), flush=True)
        mapping = f"{group}=adapted:{model}"
        seconds, cpu = sort(input_dir, work / "per", cache, ["--encoder-for", mapping])
        run = json.loads((work / "per" / "run.json").read_text())
        row = {"run": f"--encoder-for {group}=adapted", "seconds": round(seconds, 1),
               "cpu s": round(cpu, 1), "k_from": run["encoder_for"][str(group)].get("k_from"),
               **scores(work / "per", truth)}  # fmt: skip
        print(json.dumps(row), flush=True)
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
