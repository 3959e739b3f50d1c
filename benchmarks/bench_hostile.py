"""The hostile-input corpus of ``tests/hostile.py``: per-case read time, and the whole
``medsort sort`` run's wall time and peak memory (in its own process).

    PYTHONPATH=src python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hostile import build_corpus  # noqa: E402

from medsort.embed.cache import content_hash  # noqa: E402
from medsort.io.readers import ReadError, ReadOptions, iter_images  # noqa: E402

WRAPPER = (
    "import sys\n"
    "from medsort.cli import main\n"
    "from medsort.sorter import peak_rss_mib\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_KIB', int(peak_rss_mib() * 1024), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def read_times(folder: Path, names: list[str]) -> list[tuple[float, str, str]]:
    rows = []
    for name in names:
        started = time.perf_counter()
        try:
            content_hash(folder / name)
            n = sum(1 for _ in iter_images(folder / name, ReadOptions()))
            outcome = f"{n} item(s)"
        except (OSError, ReadError) as error:
            outcome = f"skipped: {str(error)[:70]}"
        rows.append((time.perf_counter() - started, name, outcome))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        root = Path(tmp)
        expect = build_corpus(root / "input", root / "outside")
        rows = read_times(root / "input", list(expect))
        for seconds, name, outcome in sorted(rows, reverse=True)[:8]:
            print(f"{seconds:7.3f} s  {name!a:28s} {outcome}")
        print(f"{len(rows)} cases, slowest read {max(r[0] for r in rows):.2f} s")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", WRAPPER, "sort", str(root / "input"), "--out",
             str(root / "out"), "--cache-dir", str(root / "cache"), "--quiet"],
            capture_output=True, text=True, errors="backslashreplace", env=env,
        )  # fmt: skip
        wall = time.perf_counter() - started
        peak = int(done.stderr.rsplit("PEAK_KIB", 1)[1].split()[0]) / 1024
        print(f"medsort sort: exit {done.returncode}, {wall:.1f} s, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
