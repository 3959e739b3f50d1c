"""Resize (keeping the aspect ratio), pad or crop, and normalise for an encoder."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medsort.preprocess.config import PreprocessConfig

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
    if config.resize_mode == "crop":
        return _resize_and_crop(image, config)
    if config.resize_mode == "squash":
        size = (config.size, config.size)
        return np.asarray(image.resize(size, _RESAMPLE[config.interpolation]))
    size = config.size
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(new_size, _RESAMPLE[config.interpolation])
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top = (size - new_size[1]) // 2
    left = (size - new_size[0]) // 2
    canvas[top : top + new_size[1], left : left + new_size[0]] = np.asarray(image)
    return canvas


def _resize_and_crop(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    # Same arithmetic as the CLIP family's training transforms (shorter side to size,
    # longer side truncated, centre crop offset rounded), so crop-mode encoders see
    # exactly the pixels they were trained on.
    size = config.size
    short = size if config.crop_pct == 1.0 else round(size / config.crop_pct)
    width, height = image.size
    if width <= height:
        new_size = (short, int(short * height / width))
    else:
        new_size = (int(short * width / height), short)
    image = image.resize(new_size, _RESAMPLE[config.interpolation])
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))


def to_tensor_batch(images: list[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """Stack ``(S, S, 3)`` uint8 images into a normalised ``(B, 3, S, S)`` float32 array.

    A numpy array, so the default (ONNX Runtime) encoders need no torch; torch encoders
    take it with ``torch.as_tensor``.
    """
    stacked = np.stack(images).transpose(0, 3, 1, 2)
    batch = np.empty(stacked.shape, dtype=np.float32)
    np.copyto(batch, stacked, casting="unsafe")  # one pass: transpose and convert
    batch /= 255.0
    batch -= np.asarray(config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return batch
