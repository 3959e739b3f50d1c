"""The audit's stability reruns in a forked child: the same result as in this process, and
a child that fails or dies costs only the time of doing it here."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from medsort.audit import forked
from medsort.audit.stability import group_stability

needs_fork = pytest.mark.skipif(not forked.can_fork(), reason="fork only on Linux, one thread")


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (3, 16))
    truth = np.repeat(np.arange(3), 60)
    return (centres[truth] + rng.normal(0, 1, (180, 16))).astype(np.float32), truth


@needs_fork
def test_the_call_runs_in_a_child_and_gives_what_it_gives_here() -> None:
    X, groups = _blobs()
    here = group_stability(X, groups, n_runs=3)
    result = forked.start(lambda: (os.getpid(), group_stability(X, groups, n_runs=3)))
    pid, there = result()
    assert pid != os.getpid()
    assert there == here and there["overall"] > 0.9


@needs_fork
def test_a_child_that_raises_or_dies_is_replaced_by_a_call_here() -> None:
    calls_here = []

    def failing() -> str:
        if os.getpid() != parent:
            raise RuntimeError("broken in the child")
        calls_here.append(1)
        return "done here"

    def dying() -> str:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        calls_here.append(1)
        return "done here"

    parent = os.getpid()
    assert forked.start(failing)() == "done here"
    assert forked.start(dying)() == "done here"
    assert len(calls_here) == 2


def test_no_fork_while_another_thread_runs() -> None:
    """A thread could hold a lock at the fork: then the call runs here, when asked."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not forked.can_fork()
        result = forked.start(os.getpid)
        assert result() == os.getpid()
    finally:
        stop.set()
        other.join()


@needs_fork
def test_the_audit_is_the_same_with_its_reruns_in_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsort.audit.run import audit_folder
    from medsort.cli import main
    from medsort.demo import demo_folder

    out = tmp_path / "out"  # the 160 demo images: enough rows for the reruns
    assert main(["sort", str(demo_folder()), "--out", str(out), "--quiet", "--no-audit"]) == 0
    in_child = audit_folder(out)
    monkeypatch.setattr(forked, "can_fork", lambda: False)
    here = audit_folder(out)
    assert in_child.stability == here.stability and here.stability["n_runs"] > 0
    assert in_child.findings == here.findings
