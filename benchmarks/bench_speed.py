"""End-to-end ``medsort sort`` speed, before and after, side by side in one run.

"Before" is another checkout of medsort (``--before``, e.g. main's at ``/work/main``) run
with its own interpreter; "after" is this checkout. For each, in alternation so both see
the same machine load:

* cold run: a fresh embedding cache, ``medsort sort SET --out A``;
* cached re-run: the same folder into a new output folder with the cache warm
  (``--out B``), and once more with ``--no-audit``.

Printed per run: wall seconds, images/s, CPU seconds of the child (user + system), and
the stage breakdown (``run.json``'s read+embed and group, ``audit.json``'s audit stages,
the rest: interpreter start, imports, saving, report and thumbnails).
Then whether both versions wrote the same ``assignments.csv`` and ``audit.json`` (timings
aside).

    python benchmarks/bench_speed.py --before /work/main
    python benchmarks/bench_speed.py --before /work/main --set dermoscopy --rounds 2
    python benchmarks/bench_speed.py --before /work/main --set chest-xray-28 --upscale 2048

``--upscale SIDE`` sorts copies of the set's images scaled up to SIDE px on the longer
side and saved as PNG (``--limit`` of them), the size of clinical X-ray files: the dev
sets are 28-224 px, so their runs never show what a full-size image costs.

Last, ``--per-image`` images (this checkout, one thread) give the CPU ms per image of each
step of the read pass: hash, decode, resize, appearance, views, signatures, inference (as
the main thread ran it before, batches of 32 on every core, and as each decoding thread
runs it now, 2 images a call on one core) and the report's thumbnail, made by reading the
file again or from the read pass's pixels.
"""

from __future__ import annotations

import argparse
import filecmp
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def header() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"# {platform.node()} | {os.cpu_count()} CPUs | python {platform.python_version()} "
        f"| {time.strftime('%Y-%m-%d %H:%M')} | load average {load}"
    )


def run_sort(checkout: Path, python: str, folder: Path, out: Path, cache: Path, *extra: str):
    """One ``medsort sort`` in a child process: wall s, CPU s and the folder's timings."""
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), MEDSORT_CACHE_DIR=str(cache))
    command = [python, "-m", "medsort", "sort", str(folder), "--out", str(out), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command + list(extra), env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run = json.loads((out / "run.json").read_text())
    audit_file = out / "audit.json"
    audit = json.loads(audit_file.read_text())["timings_s"] if audit_file.is_file() else {}
    return {"wall": wall, "cpu": cpu, "n": run["n_items"], "run": run["timings_s"], "audit": audit}


def stages(row: dict) -> str:
    run, audit = row["run"], row["audit"]
    parts = dict(run)
    parts.update({f"audit:{k}": v for k, v in audit.items()})
    parts["rest"] = row["wall"] - sum(run.values()) - sum(audit.values())
    return ", ".join(f"{k} {v:.2f}" for k, v in parts.items())


def same_outputs(a: Path, b: Path) -> str:
    if not filecmp.cmp(a / "assignments.csv", b / "assignments.csv", shallow=False):
        return "assignments.csv DIFFERS"
    if not (a / "audit.json").is_file():
        return "assignments.csv same"
    audits = [json.loads((d / "audit.json").read_text()) for d in (a, b)]
    for audit in audits:
        audit.pop("timings_s")
    differs = sorted(
        k for k in audits[0].keys() | audits[1].keys() if audits[0].get(k) != audits[1].get(k)
    )
    return (
        "assignments.csv and audit.json same" if not differs else f"audit.json differs in {differs}"
    )


def per_image(folder: Path, count: int) -> dict[str, float]:
    """CPU ms per image of each step of the read pass, one thread, this checkout."""
    sys.path.insert(0, str(REPO / "src"))
    from PIL import Image

    from medsort.embed.cache import content_hash
    from medsort.embed.registry import create_encoder
    from medsort.embed.views import compute_views
    from medsort.io import ReadOptions, appearance, scan_folder, signatures
    from medsort.io.readers import read_file
    from medsort.io.thumbnails import PREVIEW_SIZE, jpeg_bytes
    from medsort.preprocess import to_model_input, to_tensor_batch

    def cpu_ms(function) -> float:  # noqa: ANN001
        started = time.process_time()
        function()
        return (time.process_time() - started) / len(files) * 1000

    files = scan_folder(folder)[:count]
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    options = ReadOptions(draft_size=2 * encoder.config.size)
    read_file(files[0], options)
    row = {"hash": cpu_ms(lambda: [content_hash(f) for f in files])}
    images = []
    row["decode (draft)"] = cpu_ms(lambda: images.extend(read_file(f, options)[0] for f in files))
    inputs: list = []
    row["resize"] = cpu_ms(
        lambda: inputs.extend(to_model_input(i.rgb(), encoder.config) for i in images)
    )
    row["appearance"] = cpu_ms(lambda: [appearance.appearance(i) for i in images])
    row["views"] = cpu_ms(lambda: [compute_views(i.rgb()) for i in images])
    row["signatures"] = cpu_ms(lambda: [signatures.signature(i.pixels) for i in images])
    # The report's 256-px JPEG (file writes aside, the same in both): read again, as the
    # report does without a read pass, or from the pixels the read pass holds.
    row["thumbnail (read again)"] = cpu_ms(
        lambda: [jpeg_bytes(Image.fromarray(read_file(f)[0].pixels), PREVIEW_SIZE) for f in files]
    )
    row["thumbnail (read pass)"] = cpu_ms(
        lambda: [jpeg_bytes(Image.fromarray(i.pixels), PREVIEW_SIZE) for i in images]
    )
    for size, embed, name in [
        (32, encoder.embed, "inference (batch 32, all threads: before)"),
        (encoder.worker_batch, encoder.embed_one_core, "inference (worker: 2 a call, 1 core)"),
    ]:
        batches = [
            to_tensor_batch(inputs[i : i + size], encoder.config)
            for i in range(0, len(inputs), size)
        ]
        embed(batches[0])
        row[name] = cpu_ms(lambda embed=embed, batches=batches: [embed(b) for b in batches])
    return row


def upscaled(source: Path, target: Path, side: int, limit: int) -> Path:
    """PNG copies of ``source``'s images (``limit`` of them, 0: all), the longer side
    scaled to ``side`` px (bicubic)."""
    from PIL import Image

    target.mkdir(parents=True)
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix != ".csv")
    for path in files[: limit or None]:
        with Image.open(path) as image:
            scale = side / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.Resampling.BICUBIC).save(target / f"{path.stem}.png")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the old code")
    parser.add_argument(
        "--before-python", default=None, help="its interpreter (default: its .venv)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for this checkout")
    parser.add_argument("--set", default="lung-histology", help="folder of ../shared/data")
    parser.add_argument(
        "--subfolder",
        default="images",
        help="folder of the set to sort ('': the set's own folder, its labels.csv included, "
        "as a user's folder would hold a file that is no image)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repetitions (medians printed)")
    parser.add_argument(
        "--per-image", type=int, default=128, help="images for the read-pass breakdown (0: none)"
    )
    parser.add_argument(
        "--upscale", type=int, default=0, help="sort PNG copies scaled up to this side (px)"
    )
    parser.add_argument("--limit", type=int, default=0, help="images of --upscale (0: all)")
    args = parser.parse_args()
    before_python = args.before_python or str(args.before / ".venv" / "bin" / "python")
    folder = DATA / args.set / args.subfolder if args.subfolder else DATA / args.set
    versions = {"before": (args.before, before_python), "after": (REPO, args.python)}
    print(header())
    rows: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        work = Path(tmp)
        if args.upscale:
            folder = upscaled(folder, work / "upscaled", args.upscale, args.limit)
        print(
            f"# set {args.set}{f' upscaled to {args.upscale} px PNG' if args.upscale else ''}: "
            f"{sum(1 for _ in folder.iterdir())} files; before = {args.before}"
        )
        for r in range(args.rounds):
            for kind in ("cold", "cached", "cached --no-audit"):
                for name, (checkout, python) in versions.items():
                    cache = work / f"cache-{name}-{r}"
                    out = work / f"{name}-{r}-{kind.replace(' ', '')}"
                    if kind == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                    extra = ("--no-audit",) if "no-audit" in kind else ()
                    row = run_sort(checkout, python, folder, out, cache, *extra)
                    row["out"] = out
                    rows.setdefault((kind, name), []).append(row)
                    print(
                        f"{kind:18s} {name:6s} wall {row['wall']:6.2f} s  "
                        f"{row['n'] / row['wall']:6.1f} img/s  cpu {row['cpu']:6.2f} s | "
                        f"{stages(row)}",
                        flush=True,
                    )
        print(f"# load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(
            "\n| run | before s | after s | ratio | before img/s | after img/s "
            "| before CPU s | after CPU s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for kind in ("cold", "cached", "cached --no-audit"):
            b, a = rows[(kind, "before")], rows[(kind, "after")]
            wb, wa = (statistics.median(x["wall"] for x in v) for v in (b, a))
            cb, ca = (statistics.median(x["cpu"] for x in v) for v in (b, a))
            n = a[0]["n"]
            print(
                f"| {kind} | {wb:.2f} | {wa:.2f} | {wb / wa:.2f}x | {n / wb:.1f} | {n / wa:.1f} "
                f"| {cb:.2f} | {ca:.2f} |"
            )
        for kind in ("cold", "cached"):
            outs = [rows[(kind, name)][0]["out"] for name in ("before", "after")]
            print(f"# {kind}: {same_outputs(*outs)}")
        if args.per_image:
            steps = per_image(folder, args.per_image)
            print(f"# read pass, CPU ms per image ({args.per_image} images, one thread, after):")
            print("# " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))


if __name__ == "__main__":
    main()
