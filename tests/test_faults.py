"""Crashes, kills, concurrency and a damaged cache: what medsort promises under faults.

See docs/reliability.md. The kill tests use real ``kill -9`` on real ``medsort sort``
processes; the save test stops a sort at every file it replaces (what a kill at that
moment leaves on disk) and checks that no such folder is accepted by the next stages.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsort.cli import main
from medsort.demo import demo_folder
from medsort.embed.cache import CACHE_NAME, CachedFile, EmbeddingCache
from medsort.results import IncompleteOutputError, SortResult

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int) -> Path:
    """``n`` real demo images (with flipped copies past the 160 bundled ones)."""
    folder.mkdir(parents=True)
    sources = sorted(demo_folder().glob("*.png"))
    for index in range(n):
        source = sources[index % len(sources)]
        if index < len(sources):
            shutil.copy2(source, folder / source.name)
        else:
            pixels = np.asarray(Image.open(source))[:: -1 if index // len(sources) % 2 else 1]
            Image.fromarray(np.rot90(pixels, index // len(sources)).copy()).save(
                folder / f"variant_{index}.png"
            )
    return folder


def _sort_process(input_dir: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    command = [sys.executable, "-m", "medsort", "sort", str(input_dir), "--out", str(out)]
    command += ["--cache-dir", str(cache), "--quiet", "--no-audit"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _committed(cache: Path) -> int:
    """Entries another process has committed (WAL: readable while it writes)."""
    try:
        with sqlite3.connect(f"file:{cache / CACHE_NAME}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_two_sorts_on_one_cold_cache(tmp_path: Path) -> None:
    input_dir = _images(tmp_path / "input", 48)
    cache = tmp_path / "cache"
    runs = [_sort_process(input_dir, tmp_path / f"out{n}", cache) for n in (1, 2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr.decode(errors="replace")[-2000:]
    first, second = (SortResult.load(tmp_path / f"out{n}") for n in (1, 2))
    pd.testing.assert_frame_equal(first.assignments, second.assignments)
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    assert len(EmbeddingCache(cache)) == 48


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    n_images = 160
    input_dir = _images(tmp_path / "input", n_images)
    cache, out = tmp_path / "cache", tmp_path / "out"
    run = _sort_process(input_dir, out, cache)
    deadline = time.monotonic() + 240
    while _committed(cache) == 0 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = _committed(cache)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert 0 < seen < n_images, "the run ended before it could be killed halfway"
    kept = _committed(cache)
    assert kept >= seen  # nothing committed is lost
    with pytest.raises(IncompleteOutputError):
        SortResult.load(out)

    assert main(["sort", str(input_dir), "--out", str(out), "--cache-dir", str(cache),
                 "--quiet", "--no-audit"]) == 0  # fmt: skip
    rerun = SortResult.load(out)
    assert rerun.run["n_embedded_files"] == n_images - kept
    assert len(rerun.assignments) == n_images


def _stop_at_every_write(monkeypatch: pytest.MonkeyPatch, out: Path, shots: Path) -> list[Path]:
    """Copy ``out`` just before each file in it is replaced: what a kill leaves there."""
    real_replace = os.replace
    taken: list[Path] = []

    def replace(source: str | Path, target: str | Path) -> None:
        if Path(target).parent == out:
            shot = shots / f"{len(taken):02d}-{Path(target).name}"
            shutil.copytree(out, shot)
            taken.append(shot)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    return taken


@pytest.mark.slow
def test_no_interrupted_save_is_accepted(
    tmp_path: Path, demo_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["sort", str(demo_images), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(args) == 0  # a complete previous run in the folder
    shots = tmp_path / "shots"
    taken = _stop_at_every_write(monkeypatch, out, shots)
    assert main([*args, "--k", "3"]) == 0
    monkeypatch.undo()
    names = [shot.name.split("-", 1)[1] for shot in taken]
    assert names[0] == ".medsort-incomplete"  # the mark comes first
    assert {"assignments.csv", "run.json", "audit.json"} <= set(names)
    # Killed before the mark was written: the previous run, complete and untouched.
    assert SortResult.load(taken[0]).run["n_clusters"] is None
    for shot in taken[1:]:
        with pytest.raises((IncompleteOutputError, FileNotFoundError)):
            SortResult.load(shot)
        assert main(["audit", str(shot), "--quiet"]) == 1, shot.name
    assert SortResult.load(out).run["n_clusters"] == 3  # the finished folder is accepted


@pytest.mark.parametrize(
    "damage", ["garbage", pytest.param("overwritten pages", marks=pytest.mark.slow)]
)
def test_damaged_cache_is_set_aside(
    tmp_path: Path, demo_images: Path, damage: str, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "cache"
    store = EmbeddingCache(cache)
    for index in range(300):
        vectors = np.full((1, 1280), index, np.float32)
        store.put(f"key-{index}", CachedFile([{"item": "", "meta": {}}], vectors))
    store.close()
    path = cache / CACHE_NAME
    if damage == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        data = bytearray(path.read_bytes())
        data[0:4096] = os.urandom(4096)  # the header and schema page
        path.write_bytes(bytes(data))
    out = tmp_path / "out"
    args = ["sort", str(demo_images), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main([*args, "--no-audit"]) == 0
    warning = capsys.readouterr().err
    aside = [p for p in cache.iterdir() if ".corrupt-" in p.name]
    assert aside and aside[0].name in warning and "damaged" in warning
    assert len(EmbeddingCache(cache)) == len(SortResult.load(out).assignments)
