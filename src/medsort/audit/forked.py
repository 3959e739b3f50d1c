"""One call run in a forked child process while this one goes on (the audit's stability reruns).

The stability reruns and the attribute tests are independent, and each is many small
scikit-learn fits that hold the GIL: in two threads they took as long as one after the
other. A forked child has its own interpreter and gets the data without copying.

Forking is only safe where nothing else is running: a thread holding a lock at the fork
would leave it locked in the child forever. So :func:`start` forks only on Linux, from a
process with no other live thread; anywhere else, and if the child fails in any way, the
call simply runs here when its result is asked for. The result is the same either way.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable
from typing import Any


def can_fork() -> bool:
    """Whether :func:`start` may fork now: Linux, fork available, no other live thread."""
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
    )


def _stop_tqdm_monitor() -> None:
    """Stop the thread tqdm keeps to watch its bars (tqdm starts it again with its next
    bar); it is the one thread a sort leaves running."""
    monitor = sys.modules.get("tqdm._monitor")
    if monitor is None:
        return
    for thread in threading.enumerate():
        if isinstance(thread, monitor.TMonitor) and thread.is_alive():
            thread.exit()


def start(function: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``function()`` in a forked child; returns a call that waits for its result.

    The result comes back pickled through a pipe, so it must be picklable (a dict of
    numbers here). Where :func:`can_fork` is false, or the child dies or raises, the
    returned call runs ``function()`` in this process instead.
    """
    _stop_tqdm_monitor()
    if not can_fork():
        return function
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send((True, function()))
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which retries
            send.send((False, repr(error)))

    process = context.Process(target=child, daemon=True)
    process.start()
    send.close()

    def result() -> Any:
        try:
            ok, value = receive.recv()
        except (EOFError, OSError):  # the child died before sending (killed, out of memory)
            ok, value = False, None
        finally:
            receive.close()
            process.join()
        return value if ok else function()

    return result
