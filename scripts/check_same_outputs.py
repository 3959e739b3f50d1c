"""Check that a refactor left the outputs alone: sort the demo and two dev sets and compare.

Each set is sorted with ``medsort sort`` (default options, audit on) by this checkout and
compared with a reference: the stored one in ``tests/data/same_outputs/`` (made on the
development machine from main at 2934e93, 2026-12-02, after issues 12, 13, 15 and 17; the
first reference, from b02c22c before issue 15's refactor, matched every refactor commit,
and the changes since are intended: issue 12's vote on the view weighting moves 3 demo
images and breast ultrasound's groups, issue 13 measures the pixel signatures of large
JPEGs on the reduced decode, issue 17 adds ``encoder_spec`` and ``encoder_licence`` to
``run.json``; rewritten on 2026-12-03, when large non-JPEG images began to be box-reduced
to the draft size: brain-MRI's one 1920 x 1080 PNG changes its measures and the
distances, not a group or a predicted label), or, with ``--against
REV``, one sorted right now by the source of a git revision (``git archive``, no worktree).
Compared, every cell: ``assignments.csv``, ``items.csv``, ``skipped.csv``, the audit's
duplicates, near duplicates, outliers and quality tables, ``medsort suggest``'s
``to_label.csv`` and ``medsort label``'s ``predictions.csv`` (from 5 true labels a class);
``run.json``
without the timings, memory, version and input folder, and ``audit.json``'s findings.

    python scripts/check_same_outputs.py                   # against the stored reference
    python scripts/check_same_outputs.py --against b02c22c # against a revision, sorted now
    python scripts/check_same_outputs.py --write-reference [--against REV]  # store them

Exit status 0 when every set is identical, 1 otherwise (the differences are printed).
The dev sets come from ``../shared/data`` (absent: the set is reported and skipped). The
embedding cache is a private folder, shared by both sides, so the encoder runs once a set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "same_outputs"
SHARED_DATA = REPO.parent / "shared" / "data"
SETS = {
    "demo": REPO / "src" / "medsort" / "demo" / "images",
    "brain-mri": SHARED_DATA / "brain-mri" / "images",
    "breast-ultrasound-28": SHARED_DATA / "breast-ultrasound-28" / "images",
}
LABELS_PER_CLASS = 5
"""Labels given to ``medsort label`` per class (the first files by name of each class)."""
TABLES = (
    "assignments.csv",
    "items.csv",
    "skipped.csv",
    "duplicates.csv",
    "near_duplicates.csv",
    "outliers.csv",
    "quality.csv",
    "to_label.csv",
    "predictions.csv",
)
RUN_VOLATILE = ("timings_s", "peak_rss_mib", "medsort_version", "input_dir", "n_embedded_files")
"""run.json fields that differ between two runs of the same code (or the cache's state)."""


def sort(source: Path, images: Path, out: Path, cache: Path) -> None:
    """``medsort sort``, ``suggest`` and ``label`` (a few true labels) with the package
    under ``source/src``."""
    env = {**os.environ, "PYTHONPATH": str(source / "src"), "MEDSORT_CACHE_DIR": str(cache)}

    def medsort(*words: str) -> None:
        subprocess.run([sys.executable, "-m", "medsort", *words, "--quiet"], env=env, check=True)

    medsort("sort", str(images), "--out", str(out))
    medsort("suggest", str(out))
    truth = pd.read_csv(images.parent / "labels.csv").sort_values("path")
    few = truth.groupby("label", sort=True).head(LABELS_PER_CLASS)
    few.assign(path=[Path(p).name for p in few["path"]]).to_csv(out.parent / "few.csv", index=False)
    medsort("label", str(out), "--labels", str(out.parent / "few.csv"))


def comparable(folder: Path) -> dict[str, object]:
    """What must not change, read from one output folder."""
    found: dict[str, object] = {}
    for name in TABLES:
        path = folder / name
        found[name] = pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else None
    run = json.loads((folder / "run.json").read_text())
    found["run.json"] = {k: v for k, v in run.items() if k not in RUN_VOLATILE}
    audit = folder / "audit.json"
    if audit.exists():
        found["audit.json findings"] = json.loads(audit.read_text()).get("findings")
    return found


def differences(ours: dict[str, object], theirs: dict[str, object]) -> list[str]:
    out = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
            if a.shape != b.shape or list(a.columns) != list(b.columns):
                out.append(f"{key}: shape/columns {a.shape} {list(a.columns)} != {b.shape}")
            elif not a.equals(b):
                rows = (a != b).any(axis=1)
                out.append(f"{key}: {int(rows.sum())} row(s) differ, first:\n{a[rows].head(3)}"
                           f"\nvs\n{b[rows].head(3)}")  # fmt: skip
        elif isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame) or a != b:
            out.append(f"{key}: {json.dumps(a, default=str)[:300]} != "
                       f"{json.dumps(b, default=str)[:300]}")  # fmt: skip
    return out


def store(found: dict[str, object], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if isinstance(found[name], pd.DataFrame):
            found[name].to_csv(folder / name, index=False)
    extra = {k: v for k, v in found.items() if k not in TABLES}
    (folder / "outputs.json").write_text(json.dumps(extra, indent=1, sort_keys=True) + "\n")


def stored(folder: Path) -> dict[str, object]:
    found: dict[str, object] = {
        name: pd.read_csv(folder / name, dtype=str, keep_default_na=False)
        if (folder / name).exists()
        else None
        for name in TABLES
    }
    found.update(json.loads((folder / "outputs.json").read_text()))
    return found


def source_of(rev: str, into: Path) -> Path:
    """The tree of ``rev`` unpacked under ``into`` (read-only use; no worktree, no checkout)."""
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="sort with this git revision now")
    parser.add_argument("--write-reference", action="store_true", help="store this checkout's")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="medsort-same-") as tmp:
        tmp_dir = Path(tmp)
        cache = Path(os.environ.get("MEDSORT_SAME_CACHE", tmp_dir / "cache"))
        theirs_source = source_of(args.against, tmp_dir) if args.against else None
        for name in args.sets:
            images = SETS[name]
            if not images.is_dir():
                print(f"{name}: not available at {images}, skipped")
                continue
            writing_theirs = args.write_reference and theirs_source is not None
            sort(theirs_source if writing_theirs else REPO, images, tmp_dir / f"ours-{name}", cache)
            ours = comparable(tmp_dir / f"ours-{name}")
            if args.write_reference:
                store(ours, REFERENCE / name)
                print(f"{name}: reference written to {REFERENCE / name}")
                continue
            if theirs_source is not None:
                sort(theirs_source, images, tmp_dir / f"theirs-{name}", cache)
                theirs = comparable(tmp_dir / f"theirs-{name}")
            else:
                theirs = stored(REFERENCE / name)
            # through JSON both ways, so stored and live compare alike
            ours = {k: v if isinstance(v, pd.DataFrame) else json.loads(json.dumps(v))
                    for k, v in ours.items()}  # fmt: skip
            found = differences(ours, theirs)
            failed |= bool(found)
            n = len(ours["assignments.csv"])
            print(f"{name}: {'identical' if not found else 'DIFFERENT'} ({n} items)")
            for line in found:
                print("  " + line.replace("\n", "\n  "))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
