"""The ONNX Runtime default against the torch path, side by side in one run.

Sections (default: help, sort, stages; sort runs before anything loads a model here, so
the children's peak memory is their own):

* ``help``: ``medsort --help`` wall time, median of 5 fresh interpreters.
* ``stages``: where the time of one image goes, single-threaded per stage on the first
  ``--stage-images`` images of ``--set`` (hash, decode full / JPEG draft, resize, normalise,
  inference torch vs ONNX at batch 32), as CPU ms per image.
* ``sort``: ``medsort sort`` on ``--set`` in a subprocess with a cold cache, torch encoder
  then ONNX, then a cached ONNX re-run: wall s, images/s, CPU s per image (user + system of
  the child), stage timings (run.json, audit.json) and the ratio.
* ``agree``: every dev set in ``../shared/data``, torch then ONNX encoder at the same
  settings: ACC of each against the labels and ARI between their groupings.
* ``install``: the README's first command in a fresh venv under /tmp (``--venv``): install
  time, venv size, whether any nvidia/cuda/torch package came with it (needs PyPI).

    python benchmarks/bench_onnx.py
    python benchmarks/bench_onnx.py --sections agree
    python benchmarks/bench_onnx.py --sections install --venv /tmp/medsort-venv

``--reference`` and ``--candidate`` change the pair compared by ``sort`` and ``agree``
(default: the torch path against the ONNX default), e.g. the int8 graph of
``benchmarks/int8_lite.py`` against the default:

    python benchmarks/bench_onnx.py --sections sort agree \
        --reference efficientnet_lite0 --candidate adapted:/tmp/lite0-int8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEV_SETS = [
    "lung-histology",
    "chest-xray-28",
    "breast-ultrasound-28",
    "brain-mri",
    "dermoscopy",
    "blood-cells-128",
]
TORCH, ONNX = "efficientnet_lite0_torch", "efficientnet_lite0"


def header() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"# {platform.node()} | {os.cpu_count()} CPUs | python {platform.python_version()} "
        f"| {time.strftime('%Y-%m-%d %H:%M')} | load average {load}"
    )


def bench_help(repeats: int = 5) -> dict[str, object]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medsort", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return {"section": "help", "median_s": round(statistics.median(times), 3), "runs_s": times}


def _cpu_ms(function, count: int) -> float:  # noqa: ANN001
    started = time.process_time()
    function()
    return round((time.process_time() - started) / count * 1000, 2)


def bench_stages(folder: Path, count: int) -> dict[str, object]:
    """CPU ms per image of each stage, one thread for the reading stages."""
    from medsort.embed.cache import content_hash
    from medsort.embed.registry import create_encoder
    from medsort.embed.runtime import tune_cpu_runtime
    from medsort.io import ReadOptions, scan_folder
    from medsort.io.readers import read_file
    from medsort.preprocess import to_model_input, to_tensor_batch

    files = scan_folder(folder / "images")[:count]
    onnx = create_encoder(ONNX, device="cpu")
    row: dict[str, object] = {"section": "stages", "set": folder.name, "images": len(files)}
    read_file(files[0])  # warm-up: the optional readers register on first use
    row["hash"] = _cpu_ms(lambda: [content_hash(f) for f in files], len(files))
    for label, size in (("decode full", 0), ("decode draft", onnx.config.size)):
        options = ReadOptions(draft_size=size)
        row[label] = _cpu_ms(lambda o=options: [read_file(f, o) for f in files], len(files))
    images = [read_file(f, ReadOptions(draft_size=onnx.config.size))[0].rgb() for f in files]
    inputs: list[np.ndarray] = []
    row["resize"] = _cpu_ms(
        lambda: inputs.extend(to_model_input(i, onnx.config) for i in images), len(files)
    )
    batches: list[np.ndarray] = []
    row["normalise"] = _cpu_ms(
        lambda: batches.extend(
            to_tensor_batch(inputs[i : i + 32], onnx.config) for i in range(0, len(inputs), 32)
        ),
        len(files),
    )
    encoders = {"onnx": onnx}
    try:
        encoders["torch"] = create_encoder(TORCH, device="cpu")
        tune_cpu_runtime()
    except ImportError as error:
        row["torch"] = f"not installed: {error}"
    for label, encoder in encoders.items():
        encoder.embed(batches[0])  # warm-up
        started = time.perf_counter()
        row[f"inference {label} (cpu ms)"] = _cpu_ms(
            lambda e=encoder: [e.embed(b) for b in batches], len(files)
        )
        row[f"inference {label} (wall ms)"] = round(
            (time.perf_counter() - started) / len(files) * 1000, 2
        )
    return row


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sort(folder: Path, out: Path, cache: Path, encoder: str) -> dict[str, object]:
    command = [sys.executable, "-m", "medsort", "sort", str(folder), "--out", str(out)]
    command += ["--cache-dir", str(cache), "--encoder", encoder, "--quiet"]
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run(command, check=True)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    run = json.loads((out / "run.json").read_text())
    audit = json.loads((out / "audit.json").read_text()) if (out / "audit.json").is_file() else {}
    n = run["n_items"]
    return {
        "encoder": encoder,
        "images": n,
        "embedded": run["n_embedded_files"],
        "seconds": round(seconds, 2),
        "images/s": round(n / seconds, 1),
        "cpu ms/image": round(cpu / n * 1000, 1),
        "peak MiB": run.get("peak_rss_mib"),
        "stages_s": run.get("timings_s"),
        "audit_s": audit.get("timings_s"),
    }


def _warm_file_cache(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.read_bytes()


def bench_sort(folder: Path, pair: tuple[str, str] = (TORCH, ONNX)) -> list[dict[str, object]]:
    _warm_file_cache(folder)  # both encoders read from the page cache
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        for i, encoder in enumerate(pair):
            cache = work_dir / f"cache-{i}"
            rows.append(run_sort(folder, work_dir / f"out-{i}", cache, encoder))
            rows[-1]["section"] = "sort (cold cache)"
        rows.append(run_sort(folder, work_dir / "out-again", work_dir / "cache-1", pair[1]))
        rows[-1]["section"] = "sort (cached re-run)"
        rows.append(
            {
                "section": "sort ratio",
                "candidate/reference images/s": round(rows[1]["images/s"] / rows[0]["images/s"], 2),
                "reference/candidate cpu per image": round(
                    rows[0]["cpu ms/image"] / rows[1]["cpu ms/image"], 2
                ),
                "load average after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    return rows


def bench_agree(
    sets: list[str], pair: tuple[str, str] = (TORCH, ONNX)
) -> Iterator[dict[str, object]]:
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from medsort.evaluate import evaluate

    for name in sets:
        folder = DATA / name
        with tempfile.TemporaryDirectory() as work:
            outs = {}
            row: dict[str, object] = {"section": "agree", "set": name}
            for i, encoder in enumerate(pair):
                out = Path(work) / f"out-{i}"
                result = run_sort(folder, out, Path(work) / f"cache-{i}", encoder)
                outs[encoder] = pd.read_csv(out / "assignments.csv").sort_values(["path", "item"])
                row[f"ACC {encoder}"] = round(evaluate(out, folder / "labels.csv")["acc"], 3)
                row[f"images/s {encoder}"] = result["images/s"]
            groups = [outs[e]["group"].astype(str) for e in pair]
            row["images"] = len(groups[0])
            row["ARI candidate vs reference"] = round(float(adjusted_rand_score(*groups)), 4)
        yield row


def bench_install(venv: Path) -> dict[str, object]:
    """The README's first command (the demo), from scratch, into ``venv``."""
    if venv.exists():
        shutil.rmtree(venv)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], check=True)
    install_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        subprocess.run(
            [str(venv / "bin" / "medsort"), "demo", "--out", str(Path(work) / "demo")],
            check=True,
            capture_output=True,
            env={**os.environ, "MEDSORT_CACHE_DIR": str(Path(work) / "cache")},
        )
        demo_s = time.perf_counter() - started
    listing = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = [p["name"].lower() for p in json.loads(listing.stdout)]
    heavy = [n for n in names if n.startswith(("nvidia", "torch", "triton")) or "cuda" in n]
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    return {
        "section": "install",
        "install_s": round(install_s, 1),
        "demo_s": round(demo_s, 1),
        "venv_MB": round(size / 1e6),
        "packages": len(names),
        "nvidia/cuda/torch packages": heavy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["help", "sort", "stages"],
        choices=["help", "stages", "sort", "agree", "install"],
    )
    parser.add_argument("--set", default="lung-histology", help="data set for stages and sort")
    parser.add_argument("--stage-images", type=int, default=256)
    parser.add_argument("--agree-sets", nargs="+", default=DEV_SETS)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/medsort-bench-venv"))
    parser.add_argument("--reference", default=TORCH, help="encoder compared against")
    parser.add_argument("--candidate", default=ONNX, help="encoder measured")
    args = parser.parse_args()
    pair = (args.reference, args.candidate)
    print(header(), flush=True)
    folder = DATA / args.set
    for section in args.sections:
        rows: Iterable[dict[str, object]]
        if section == "help":
            rows = [bench_help()]
        elif section == "stages":
            rows = [bench_stages(folder, args.stage_images)]
        elif section == "sort":
            rows = bench_sort(folder, pair)
        elif section == "agree":
            rows = bench_agree(args.agree_sets, pair)
        else:
            rows = [bench_install(args.venv)]
        for row in rows:
            print(json.dumps(row), flush=True)
    print(header().replace("#", "# end:"), flush=True)


if __name__ == "__main__":
    main()
