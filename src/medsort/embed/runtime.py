"""In-process runtime choices for the embedding stage: threads, devices, malloc tuning.

Threads: :func:`inference_threads` is how many intra-op threads an encoder's runtime
(ONNX Runtime or torch) gets; :func:`tune_cpu_runtime` can set it, as each Ray actor does
for its CPU share.

Devices: :func:`choose_providers` and :func:`choose_torch_device` turn ``--device``
(``cpu``, ``cuda``, ``auto``) into an ONNX Runtime provider list or a torch device.

Malloc, for torch only: a CNN forward pass on a batch of images allocates activations far
larger than glibc's dynamic mmap threshold (at most 32 MiB). Each one is ``mmap``-ed,
touched page by page (a minor page fault per 4 KiB page) and ``munmap``-ed again on free,
and memory freed at the top of the heap is trimmed back to the kernel. With
EfficientNet-Lite0 at batch 32 that is ~15,000 minor faults per image and up to half the
CPU time spent in the kernel. :func:`tune_malloc` makes the process keep and reuse that
memory, which is what ``MALLOC_MMAP_THRESHOLD_=4294967296
MALLOC_TRIM_THRESHOLD_=68719476736`` did from the environment; the features are bitwise
identical (only where memory comes from changes). ONNX Runtime does not need it: its CPU
arena allocator keeps and reuses activation memory itself (measured on EfficientNet-Lite0,
batch 32: under one minor page fault per image with or without the tuning, and the same
CPU time), so :func:`tune_cpu_runtime` applies it only where torch is loaded.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence

__all__ = [
    "tune_cpu_runtime",
    "tune_malloc",
    "inference_threads",
    "choose_providers",
    "choose_torch_device",
]

DEVICES = ("auto", "cpu", "cuda")

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# Largest value mallopt's ``int`` argument can carry. glibc 2.36 (tested) accepts it for
# M_MMAP_THRESHOLD; older releases may reject anything above HEAP_MAX_SIZE / 2 (32 MiB),
# too low for batch activations, so M_MMAP_MAX = 0 (no mmap for ordinary allocations,
# measured equally effective) is the fallback. mallopt returns 1 on success, 0 on error.
_INT_MAX = 2**31 - 1

_applied: dict[str, bool] | None = None
_threads: int | None = None


def _glibc() -> ctypes.CDLL | None:
    """Return the C library if it is glibc, else ``None`` (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _user_tuned_malloc() -> bool:
    """Whether the user already tuned glibc malloc from the environment (respect it)."""
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_")
    if any(name in os.environ for name in names):
        return True
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(f"glibc.malloc.{name}" in tunables for name in ("mmap_", "trim_"))


def tune_cpu_runtime(num_threads: int | None = None) -> dict[str, bool]:
    """Set the encoders' intra-op thread count and, where torch is loaded, tune malloc.

    Parameters
    ----------
    num_threads : int or None, optional
        Threads for encoders built from now on (:func:`inference_threads`), and
        ``torch.set_num_threads`` if torch is already imported. ``None`` keeps the default.

    Returns
    -------
    dict of str to bool
        What :func:`tune_malloc` applied (empty when torch is not loaded).
    """
    global _threads
    if num_threads is not None:
        _threads = max(1, int(num_threads))
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(_threads)
    if "torch" in sys.modules:
        return tune_malloc()
    return {}


def inference_threads() -> int:
    """Intra-op threads for an encoder: as set by :func:`tune_cpu_runtime`, else every CPU
    this process may run on (``$MEDSORT_THREADS`` overrides)."""
    if _threads is not None:
        return _threads
    if os.environ.get("MEDSORT_THREADS", "").isdigit():
        return max(1, int(os.environ["MEDSORT_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_device(device: str) -> str:
    """Return ``device`` if it is one of ``auto``, ``cpu``, ``cuda``; else raise ValueError."""
    if device not in DEVICES:
        raise ValueError(f"Unknown device {device!r}: use one of {', '.join(DEVICES)}.")
    return device


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime execution providers for ``device``, given the ``available`` ones.

    ``auto`` takes CUDA where ``onnxruntime-gpu`` offers it, else the CPU; ``cuda`` insists
    on it (ValueError naming the fix otherwise); ``cpu`` never uses a GPU. The CPU provider
    is always last, for any operator CUDA does not implement.
    """
    check_device(device)
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ValueError(
            "--device cuda needs ONNX Runtime's CUDA provider: pip install onnxruntime-gpu "
            f"(available here: {', '.join(available) or 'none'})."
        )
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def choose_torch_device(device: str, cuda_available: bool) -> str:
    """``"cuda"`` or ``"cpu"`` for a torch encoder, by the rules of :func:`choose_providers`."""
    check_device(device)
    if device == "cuda" and not cuda_available:
        raise ValueError("--device cuda: torch sees no CUDA device here.")
    return "cuda" if device != "cpu" and cuda_available else "cpu"


def tune_malloc() -> dict[str, bool]:
    """Stop glibc from returning and re-faulting the memory of every torch forward pass.

    Sets, through ``mallopt(3)``:

    * ``M_MMAP_THRESHOLD`` to 2 GiB - 1, so large tensors come from the heap, not from a
      fresh ``mmap`` each time; if glibc rejects it (glibc < 2.35 caps it at 32 MiB),
      ``M_MMAP_MAX = 0`` instead, which disables ``mmap`` for allocations altogether
      (a 32 MiB threshold alone is not enough: batch-32 activations reach ~150 MiB);
    * ``M_TRIM_THRESHOLD`` to ``-1`` (never trim), so freed memory at the top of the heap
      is kept for the next batch instead of being handed back to the kernel.

    The cost is that the process keeps its peak heap (that of one batch's forward
    pass) until it exits. The call is idempotent, does nothing if the user already set
    ``MALLOC_*_`` variables or ``glibc.malloc`` tunables, and is a silent no-op on
    platforms without glibc.

    Returns
    -------
    dict of str to bool
        Which settings glibc accepted: keys ``"mmap_threshold"``, ``"mmap_max"``,
        ``"trim_threshold"``; empty when nothing was applied. Later calls return the
        result of the first one.
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    applied: dict[str, bool] = {}
    libc = _glibc()
    if libc is not None and not _user_tuned_malloc():
        applied["mmap_threshold"] = libc.mallopt(_M_MMAP_THRESHOLD, _INT_MAX) == 1
        if not applied["mmap_threshold"]:
            applied["mmap_max"] = libc.mallopt(_M_MMAP_MAX, 0) == 1
        applied["trim_threshold"] = libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    _applied = applied
    return dict(applied)
