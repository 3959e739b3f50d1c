"""Cheap hand-crafted views of an image, computed next to the encoder's vector.

A *view* is a short float32 vector describing one aspect of an image's pixels. The
grouper weighs them in next to the CNN vector (see :class:`medsort.group.TwoLevelGrouper`):
ImageNet features miss stain colour and fine texture, which separate some conditions
(blood cells, X-ray sharpness) better. Each view is computed in the decode threads on a
``VIEW_SIZE`` px copy of the display pixels, well under a millisecond per image.

Views are registered by name, timm-style: :func:`register_view` adds one and
:func:`compute_views` computes every registered view of an image.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from PIL import Image

VIEW_SIZE = 32
"""Side of the square copy every view is computed on."""
VIEWS_VERSION = "2"
"""Part of the cache key: bump when a view's definition changes."""

QUANTILES = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
ViewFunction = Callable[[np.ndarray], np.ndarray]
_VIEWS: dict[str, ViewFunction] = {}


def register_view(name: str) -> Callable[[ViewFunction], ViewFunction]:
    """Decorator registering ``function(small_rgb_float) -> vector`` under ``name``."""

    def add(function: ViewFunction) -> ViewFunction:
        _VIEWS[name] = function
        return function

    return add


def view_names() -> list[str]:
    """Names of the registered views, in registration order."""
    return list(_VIEWS)


def views_token() -> str:
    """Cache-key part naming the views and their version."""
    return f"views={','.join(_VIEWS)}@{VIEWS_VERSION}"


def small_copy(rgb: np.ndarray, size: int = VIEW_SIZE) -> np.ndarray:
    """``(size, size, 3)`` float32 copy in ``[0, 1]`` (area-averaged; bilinear when upsampling)."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    smaller = min(image.size) >= size
    resized = image.resize((size, size), Image.BOX if smaller else Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32) * (1.0 / 255.0)


def compute_views(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Every registered view of one ``(H, W, 3)`` uint8 image, name -> float32 vector."""
    small = small_copy(rgb)
    return {name: function(small).astype(np.float32) for name, function in _VIEWS.items()}


def _histograms(rows: np.ndarray, bins: int, low: float, high: float) -> np.ndarray:
    """Normalised histogram of each row of ``rows`` (values clipped into ``[low, high]``),
    ``(n_rows, bins)``, from one ``bincount``."""
    scaled = (rows - low) * (bins / (high - low))
    index = np.clip(scaled.astype(np.int32), 0, bins - 1)
    index += (np.arange(len(rows), dtype=np.int32) * bins)[:, None]
    counts = np.bincount(index.ravel(), minlength=len(rows) * bins)
    return counts.reshape(len(rows), bins) / float(rows.shape[1])


def _moments(rows: np.ndarray) -> np.ndarray:
    """Mean, standard deviation, skewness and the 5/25/50/75/95 % quantiles of each row,
    ``(n_rows, 8)``."""
    mean = rows.mean(axis=1, keepdims=True)
    centred = rows - mean
    std = np.sqrt((centred * centred).mean(axis=1, keepdims=True))
    skew = (centred * centred * centred).mean(axis=1, keepdims=True) / np.maximum(std, 1e-6) ** 3
    ranks = (QUANTILES * (rows.shape[1] - 1)).astype(np.intp)
    quantiles = np.partition(rows, ranks, axis=1)[:, ranks]  # lower quantiles, cheap
    return np.hstack([mean, std, skew, quantiles])


@register_view("colour")
def colour_view(small: np.ndarray) -> np.ndarray:
    """Per-channel intensity histograms and moments, optical-density histograms and
    chromaticity histograms (136 values).

    Optical density ``-log(I)`` is the space stains add up in (Beer-Lambert), so it
    separates stain amounts that look alike in RGB; chromaticity ``c / (r + g + b)``
    ignores brightness. Grey images give equal channels, i.e. a windowed intensity
    histogram.
    """
    channels = np.ascontiguousarray(small.reshape(-1, 3).T)  # (3, pixels)
    density = -np.log(np.clip(channels, 1.0 / 255.0, 1.0))
    per_channel = np.hstack(
        [
            _histograms(channels, 16, 0.0, 1.0),
            _moments(channels),
            _histograms(density, 8, 0.0, 3.0),
        ]
    )
    chroma = _histograms(channels[:2] / (channels.sum(axis=0) + 1e-3), 16, 0.15, 0.55)
    grey = _moments(channels.mean(axis=0, keepdims=True))
    return np.concatenate([per_channel.ravel(), chroma.ravel(), grey.ravel()])


def _lbp_histogram(grey: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform local binary patterns (8 neighbours, radius 1), 10 bins."""
    centre = grey[1:-1, 1:-1]
    height, width = grey.shape
    offsets = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    bits = [grey[dy : dy + height - 2, dx : dx + width - 2] >= centre for dy, dx in offsets]
    transitions = sum((bits[i] != bits[(i + 1) % 8]).astype(np.int32) for i in range(8))
    ones = sum(bit.astype(np.int32) for bit in bits)
    codes = np.where(transitions <= 2, ones, 9)
    return np.bincount(codes.ravel(), minlength=10) / float(codes.size)


@register_view("texture")
def texture_view(small: np.ndarray) -> np.ndarray:
    """Local binary patterns at full and half size, gradient-magnitude histogram and
    moments, Laplacian energy (42 values): sharpness and fine structure, not colour."""
    grey = small.mean(axis=-1)
    half = 0.25 * (grey[0::2, 0::2] + grey[1::2, 0::2] + grey[0::2, 1::2] + grey[1::2, 1::2])
    grad_y, grad_x = np.gradient(grey)
    magnitude = np.hypot(grad_x, grad_y)
    laplace = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    )
    return np.concatenate(
        [
            _lbp_histogram(grey),
            _lbp_histogram(half),
            _histograms(magnitude.reshape(1, -1), 12, 0.0, 0.25)[0],
            _moments(magnitude.reshape(1, -1))[0],
            [np.abs(laplace).mean(), laplace.std()],
        ]
    )


def pack_views(views: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """``(JSON {name: dim}, float32 bytes of the arrays side by side)``, for Ray blocks."""
    if not views:
        return "{}", b""
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in views.values()]
    dims = {name: int(a.shape[1]) for name, a in zip(views, arrays, strict=True)}
    return json.dumps(dims), np.hstack(arrays).tobytes()


def unpack_views(dims_json: str | None, blob: bytes | None) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_views`."""
    dims = json.loads(dims_json or "{}")
    if not dims:
        return {}
    matrix = np.frombuffer(blob, dtype=np.float32).reshape(-1, sum(dims.values()))
    out, start = {}, 0
    for name, dim in dims.items():
        out[name] = matrix[:, start : start + dim]
        start += dim
    return out
