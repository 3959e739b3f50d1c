"""Adapt stage: self-supervised adaptation of the encoder to one folder (``medsort adapt``).

Needs torch (``medsort[torch]``), imported only when an adaptation runs. The result is a
folder that the embed stage loads with ``--encoder adapted:MODEL_DIR`` on ONNX Runtime,
without torch and without importing this package (data flows one way).
"""

from __future__ import annotations

from medsort.lazy import lazy_exports

_EXPORTS = {
    "Adapter": "medsort.adapt.train",
    "adapt_folder": "medsort.adapt.train",
    "decode_folder": "medsort.adapt.data",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
