"""Resize (keeping the aspect ratio), pad or crop, and normalise for an encoder."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from medsort.embed.registry import PreprocessConfig

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def to_model_input(rgb: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Return a ``(size, size, 3)`` uint8 image laid out as the encoder expects.

    Small images are upsampled, never cropped; with ``resize_mode="pad"`` the longer side
    is scaled to ``config.size`` and the rest padded with black.
    """
    image = Image.fromarray(rgb)
    size = config.size
    width, height = image.size
    if config.resize_mode == "crop":
        scale = size / min(width, height)
    else:
        scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(new_size, _RESAMPLE[config.interpolation])
    if config.resize_mode == "crop":
        left = (new_size[0] - size) // 2
        top = (new_size[1] - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top = (size - new_size[1]) // 2
    left = (size - new_size[0]) // 2
    canvas[top : top + new_size[1], left : left + new_size[0]] = np.asarray(image)
    return canvas


def to_tensor_batch(images: list[np.ndarray], config: PreprocessConfig) -> torch.Tensor:
    """Stack ``(S, S, 3)`` uint8 images into a normalised ``(B, 3, S, S)`` float tensor."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std)
