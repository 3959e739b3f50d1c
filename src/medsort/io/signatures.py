"""Pixel signatures of an image for the audit's hygiene checks, measured in the read pass.

Per item: grey-level ``mean``, ``std`` and ``entropy`` (quality flags), a 16×16 content
descriptor (content correlation of near duplicates) and the 64-bit perceptual hashes of
its 8 flips / quarter-turns. The embed stage computes them in its decoding threads and
stores them with the embedding (:class:`medsort.embed.cache.CachedFile`), so the audit
of a cached run decodes no image at all; :mod:`medsort.audit.hygiene` uses the same
functions when it has to re-read a folder sorted before they were recorded.

About 1.3 ms per 224-px colour image on a loaded 2-core VM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import fft, ndimage

from medsort.io.appearance import downsample, grey

VERSION = 1
"""Bumped whenever a value changes meaning; part of the embedding cache key."""
QUALITY_SIDE = 64
DESCRIPTOR_SIDE = 16
HASH_SIDE = 32
N_ORIENTATIONS = 8


@dataclass
class Signature:
    """The hygiene measurements of one item.

    Attributes
    ----------
    stats : tuple of float
        ``mean``, ``std`` (grey levels 0-255) and ``entropy`` (bits) of a greyscale copy.
    descriptor : ndarray of shape (DESCRIPTOR_SIDE**2,)
        :func:`content_descriptor` (zeros when the image has no content left).
    hashes : ndarray of shape (8,) of uint64
        :func:`dihedral_phashes`.
    """

    stats: tuple[float, float, float]
    descriptor: np.ndarray
    hashes: np.ndarray


def signature(pixels: np.ndarray) -> Signature:
    """:class:`Signature` of display pixels (``(h, w)`` or ``(h, w, 3)``, uint8)."""
    small = downsample(pixels, QUALITY_SIDE)
    gray = grey(small) if small.ndim == 3 else small
    levels = np.clip(np.round(gray), 0, 255).astype(np.int64)
    p = np.bincount(levels.ravel(), minlength=256) / levels.size
    p = p[p > 0]
    stats = (float(gray.mean()), float(gray.std()), float(-(p * np.log2(p)).sum()))
    content = content_image(gray)
    return Signature(stats, content_descriptor(content), dihedral_phashes(content))


def content_image(gray: np.ndarray) -> np.ndarray:
    """What is left of a greyscale image once its frame and lighting are taken away.

    On a ``QUALITY_SIDE``² copy, the slow illumination (vignette, exposure, the fall-off
    to a black surround) is subtracted with a wide Gaussian and the near-black surround is
    zeroed: two fundus or dermoscopy photographs of different eyes or lesions then no
    longer match through their common black frame.
    """
    square = np.asarray(
        Image.fromarray(gray.astype(np.float32)).resize((QUALITY_SIDE, QUALITY_SIDE), Image.BOX)
    )
    top = float(np.percentile(square, 99))
    field = square > max(0.1 * top, 2.0)
    detail = square - ndimage.gaussian_filter(square, 8.0)
    return np.where(ndimage.minimum_filter(field, size=5), detail, 0.0).astype(np.float32)


def content_descriptor(content: np.ndarray) -> np.ndarray:
    """:func:`content_image` smoothed, at ``DESCRIPTOR_SIDE``², zero mean, unit norm.

    The smoothing (sigma 2 of 64 pixels) keeps a copy that was also shifted or cropped by
    a few pixels correlated (LC25000's augmented copies).
    """
    smooth = ndimage.gaussian_filter(content, 2.0)
    side = DESCRIPTOR_SIDE
    small = smooth.reshape(side, smooth.shape[0] // side, side, -1).mean(axis=(1, 3)).ravel()
    small = small - small.mean()
    norm = float(np.linalg.norm(small))
    return (small / norm if norm > 1e-3 else np.zeros_like(small)).astype(np.float32)


def dihedral_phashes(content: np.ndarray) -> np.ndarray:
    """64-bit DCT hash (Zauner's pHash) of the 8 flips / quarter-turns of an image.

    Taken of :func:`content_image`, so a shared black frame or vignette does not make two
    different photographs hash alike.
    """
    square = np.asarray(
        Image.fromarray(content.astype(np.float32)).resize((HASH_SIDE, HASH_SIDE), Image.BOX),
        dtype=np.float64,
    )
    # One batched transform of the 8 orientations (the same values as one at a time).
    low = fft.dctn(np.stack(dihedral(square)), axes=(1, 2), norm="ortho")[:, :8, :8]
    low = low.reshape(N_ORIENTATIONS, 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    return np.bitwise_or.reduce(np.where(bits, weights, np.uint64(0)), axis=1)


def dihedral(square: np.ndarray) -> list[np.ndarray]:
    """The 8 flips / quarter-turns of a square array."""
    turns = [np.rot90(square, k) for k in range(4)]
    return turns + [t[:, ::-1] for t in turns]


# --- storage: float32 arrays (the embedding cache keeps float32 only) -------------------


def pack(signatures: list[Signature]) -> dict[str, np.ndarray]:
    """Signatures of ``n`` items as float32 arrays that hold them exactly.

    ``stats``: ``(n, 6)``, each float64 value as a float32 pair (high part, remainder);
    ``descriptors``: ``(n, 256)``; ``hashes``: ``(n, 32)``, each uint64 as four uint16.
    """
    stats = np.array([s.stats for s in signatures], dtype=np.float64).reshape(-1, 3)
    high = stats.astype(np.float32)
    low = (stats - high.astype(np.float64)).astype(np.float32)
    descriptors = np.array([s.descriptor for s in signatures], dtype=np.float32)
    hashes = np.array([s.hashes for s in signatures], dtype="<u8").reshape(-1, N_ORIENTATIONS)
    return {
        "stats": np.concatenate([high, low], axis=1),
        "descriptors": descriptors.reshape(len(signatures), DESCRIPTOR_SIDE**2),
        "hashes": hashes.view("<u2").astype(np.float32),
    }


def unpack(packed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stats (n, 3) float64, descriptors (n, 256) float32, hashes (n, 8) uint64)``."""
    pair = np.asarray(packed["stats"])
    high, low = pair[:, :3].astype(np.float64), pair[:, 3:].astype(np.float64)
    stats = np.where(low == 0, high, high + low)  # keeps the sign of -0.0
    descriptors = np.ascontiguousarray(packed["descriptors"], dtype=np.float32)
    words = np.ascontiguousarray(packed["hashes"]).astype("<u2")
    hashes = words.view("<u8").astype(np.uint64).reshape(-1, N_ORIENTATIONS)
    return stats, descriptors, hashes


NAMES = ("stats", "descriptors", "hashes")
