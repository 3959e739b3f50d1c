"""Benchmark the report on 10,000 images: build time, size, and open + interactive time in
headless Chromium.

The output folder is made directly (no encoder): ``--n`` generated 64x64 PNG images,
random 1280-d embeddings in ``--groups`` clusters over two modality groups, and a map.
It then times

* ``write_report`` the first time (every image read once for its thumbnail) and again
  (thumbnails reused, as after ``medsort label`` or ``medsort audit``);
* in Chromium: from navigation until the page's script has drawn the gallery and the
  map (``window.medsortReadyAt``, the page is then interactive), and the first paging
  click and large view after that.

Usage::

    python benchmarks/bench_report.py [--n 10000] [--work DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from medsort.report import write_report  # noqa: E402
from medsort.results import ASSIGNMENT_COLUMNS, SortResult, skipped_table  # noqa: E402


def make_folder(work: Path, n: int, n_groups: int) -> Path:
    """Generated images and an output folder as a sort of them would leave it."""
    rng = np.random.default_rng(0)
    images, out = work / "images", work / "out"
    images.mkdir(parents=True, exist_ok=True)
    groups = rng.integers(0, n_groups, n)
    centres = rng.normal(size=(n_groups, 1280)).astype(np.float32)
    embeddings = centres[groups] + 0.6 * rng.normal(size=(n, 1280)).astype(np.float32)
    paths = [f"case_{i // 100:03d}/img_{i:05d}.png" for i in range(n)]
    for i, path in enumerate(paths):
        target = images / path
        if target.is_file():
            continue
        target.parent.mkdir(exist_ok=True)
        base = np.linspace(0, 255, 64)[None, :] * (groups[i] + 1) / n_groups
        noise = rng.normal(0, 30, (64, 64))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(target)
    angle = groups / n_groups * 2 * np.pi
    distance = np.linalg.norm(embeddings - centres[groups], axis=1) / 40
    assignments = pd.DataFrame(
        {
            "path": paths,
            "item": "",
            "modality_group": (groups >= n_groups // 2).astype(int),
            "group": groups,
            "distance": distance,
            "representative": False,
            "map_x": np.cos(angle) * 5 + rng.normal(0, 0.8, n),
            "map_y": np.sin(angle) * 5 + rng.normal(0, 0.8, n),
        },
        columns=ASSIGNMENT_COLUMNS,
    )
    items = pd.DataFrame({"path": paths, "item": "", "format": "PNG", "width": 64, "height": 64})
    run = {
        "input_dir": str(images.resolve()),
        "encoder": "generated",
        "n_items": n,
        "n_groups": n_groups,
        "n_modality_groups": 2,
    }
    SortResult(assignments, items, embeddings, skipped_table([]), run).save(out)
    return out


def time_page(out: Path, runs: int) -> dict[str, float]:
    from browser import console_errors, start_chromium
    from selenium.webdriver.common.by import By

    ready, paging, viewer = [], [], []
    driver = start_chromium()
    try:
        for _ in range(runs):
            driver.get("about:blank")
            driver.get((out / "report.html").as_uri())
            while driver.execute_script("return window.medsortReadyAt") is None:
                time.sleep(0.01)
            ready.append(driver.execute_script("return window.medsortReadyAt") / 1000)
            paging.append(
                driver.execute_script(
                    "var t=performance.now();"
                    "document.querySelector('.group [data-act=\"next\"]').click();"
                    "return performance.now()-t;"
                )
                / 1000
            )
            viewer.append(
                driver.execute_script(
                    "var t=performance.now();"
                    "document.querySelector('#gallery figure').click();"
                    "return performance.now()-t;"
                )
                / 1000
            )
            assert driver.find_element(By.ID, "viewer").is_displayed()
        errors = console_errors(driver)
    finally:
        driver.quit()
    if errors:
        raise SystemExit(f"console errors: {errors}")
    return {
        "ready": statistics.median(ready),
        "ready_max": max(ready),
        "paging": statistics.median(paging),
        "viewer": statistics.median(viewer),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_report_"))
    out = make_folder(work, args.n, args.groups)
    (out / "thumbs").exists() and [p.unlink() for p in (out / "thumbs").glob("*.jpg")]
    start = time.perf_counter()
    write_report(out)
    first = time.perf_counter() - start
    start = time.perf_counter()
    write_report(out)
    again = time.perf_counter() - start
    html_mb = (out / "report.html").stat().st_size / 2**20
    thumbs = list((out / "thumbs").glob("*.jpg"))
    thumbs_mb = sum(p.stat().st_size for p in thumbs) / 2**20
    page = time_page(out, args.runs)
    print(f"report of {args.n} images ({args.groups} groups), folder {out}")
    print(
        f"  first build {first:.1f} s ({first / args.n * 1000:.2f} ms per image, "
        f"thumbnails included); rebuild with cached thumbnails {again:.1f} s"
    )
    print(
        f"  report.html {html_mb:.1f} MiB; thumbs/ {len(thumbs)} files, {thumbs_mb:.1f} MiB "
        f"({thumbs_mb * 1024 / max(len(thumbs), 1):.1f} KiB each)"
    )
    print(
        f"  Chromium: open + interactive {page['ready']:.2f} s median of {args.runs} "
        f"(max {page['ready_max']:.2f} s); next page {page['paging'] * 1000:.0f} ms; "
        f"large view {page['viewer'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
