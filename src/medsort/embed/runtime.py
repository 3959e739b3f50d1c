"""In-process CPU runtime tuning for the embedding stage.

Why: a CNN forward pass on a batch of images allocates activations far larger than
glibc's dynamic mmap threshold (at most 32 MiB). Each one is ``mmap``-ed, touched page by
page (a minor page fault per 4 KiB page) and ``munmap``-ed again on free, and memory freed
at the top of the heap is trimmed back to the kernel. With EfficientNet-Lite0 at batch 32
that is ~15,000 minor faults per image and up to half the CPU time spent in the kernel.
:func:`tune_cpu_runtime` makes the process keep and reuse that memory, which is what
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736`` did from the
environment; the features are bitwise identical (only where memory comes from changes).

:func:`optimize_model` returns a faster but numerically equivalent inference module.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

import torch

__all__ = ["tune_cpu_runtime", "optimize_model"]

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
    """Stop glibc from returning and re-faulting the memory of every forward pass.

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

    Parameters
    ----------
    num_threads : int or None, optional
        If given, also ``torch.set_num_threads(num_threads)``. ``None`` leaves torch's
        default (one thread per physical core) alone.

    Returns
    -------
    dict of str to bool
        Which settings glibc accepted: keys ``"mmap_threshold"``, ``"mmap_max"``,
        ``"trim_threshold"``; empty when nothing was applied. Later calls return the
        result of the first one.
    """
    global _applied
    if num_threads is not None:
        torch.set_num_threads(num_threads)
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


class _MethodCall(torch.nn.Module):
    """Expose ``model.<method>`` as ``forward`` so that it can be traced."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


def optimize_model(
    model: torch.nn.Module,
    example: torch.Tensor,
    method: str = "forward",
    atol: float = 1e-4,
) -> torch.nn.Module:
    """Trace and freeze ``model.<method>`` for faster CPU inference.

    ``torch.jit.trace`` + ``torch.jit.freeze`` folds each BatchNorm into the preceding
    convolution, inlines the weights and removes Python dispatch per layer; for
    EfficientNet-Lite0 that is about 20-30% less CPU time per image. Outputs differ from
    eager only by float rounding (about 1.5e-5 max abs on its pooled features, 2.5e-6 of
    their range), so they are not bitwise identical to the eager model's.

    The traced module is checked against eager on ``example``; if it differs by more than
    ``atol`` (or tracing fails) a plain eager wrapper is returned instead. Either way the
    result maps a batch to what ``model.<method>(batch)`` returns; call it under
    ``torch.inference_mode()`` or ``torch.no_grad()``. Any batch size works; the first
    call at a new batch size is slower while the JIT re-specialises.

    Parameters
    ----------
    model : torch.nn.Module
        Model to optimise; it is put in eval mode, and must not change control flow with
        the input's values (shape-independent control flow, as in CNNs, is fine).
    example : torch.Tensor
        A representative input batch, e.g. ``(32, 3, 224, 224)`` float32; only its first
        two items are run.
    method : str, optional
        Name of the method to trace, e.g. ``"extract_features"``. Default ``"forward"``.
    atol : float, optional
        Largest accepted absolute difference from eager on ``example``.

    Returns
    -------
    torch.nn.Module
        A frozen ``torch.jit.ScriptModule``, or the eager wrapper as a fallback.
    """
    wrapper = _MethodCall(model.eval(), method).eval()
    with torch.inference_mode(False), torch.no_grad():
        # A normal tensor even if made in inference mode; a few items are enough to trace
        # and check, and keep this cheap (the JIT specialises on the real batches later).
        example = example[:2].detach().clone()
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, still the fastest here
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(wrapper, example, check_trace=False)
                frozen = torch.jit.freeze(traced)
            for _ in range(2):  # the profiling executor optimises after its first runs
                frozen(example)
            expected = wrapper(example)
            if torch.allclose(frozen(example), expected, rtol=0.0, atol=atol):
                return frozen
        except (RuntimeError, TypeError):
            pass
    return wrapper
