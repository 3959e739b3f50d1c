"""The one image abstraction every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class MedImage:
    """One 2D item ready for display and embedding.

    A file can yield several items (DICOM frames, NIfTI slices, slide tiles); ``item``
    tells them apart and is ``""`` for a file that yields a single image.

    Parameters
    ----------
    pixels : np.ndarray
        ``uint8`` array, ``(H, W)`` for grayscale or ``(H, W, 3)`` for RGB, already in display
        intensities (windowed, inverted where MONOCHROME1, 16-bit scaled). See
        :mod:`medsort.io.intensity`.
    path : Path
        The source file.
    item : str
        Which part of the file this is, e.g. ``"frame=3"``, ``"axis=2,slice=40"``,
        ``"tile=1024,2048"``; empty for single-image files.
    meta : dict
        Non-identifying attributes (format, size, bit depth, modality, manufacturer, ...)
        kept for auditing. Never patient identifiers.
    drafted : bool
        Decoded at a reduced JPEG scale (``ReadOptions.draft_size``): not the pixels a
        full-size read gives.
    """

    pixels: np.ndarray
    path: Path
    item: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    drafted: bool = False

    @property
    def is_gray(self) -> bool:
        return self.pixels.ndim == 2

    def reduced(self, factor: int) -> MedImage:
        """This item box-reduced by a whole ``factor`` (1: itself), marked ``drafted``;
        meta keeps the size it was read at."""
        if factor == 1:
            return self
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(self.pixels)).reduce(factor))
        return replace(self, pixels=pixels, drafted=True)

    def rgb(self) -> np.ndarray:
        """Pixels as ``(H, W, 3)`` uint8; gray is repeated over three channels."""
        if self.pixels.ndim == 2:
            return np.repeat(self.pixels[:, :, None], 3, axis=2)
        return self.pixels
