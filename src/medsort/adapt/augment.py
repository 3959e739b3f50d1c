"""Augmentations for self-supervised adaptation that respect medical images (numpy + PIL).

Each image gets the augmentations of its kind, guessed from its pixels (:func:`is_grey`):

* **grey** (X-ray, CT, MRI, ultrasound): random resized crop (scale 0.5-1, so the anatomy
  stays recognisable), rotation within ±10°, an intensity window (black point 0-10 %,
  white point 90-100 % of the range) and a gamma between 0.7 and 1.4, as a reader's window
  and level would change them, and a mild blur. **No flips**: left and right carry
  meaning in chest X-rays and brain scans (laterality, the heart's side).
* **colour** (histology, blood smears, dermoscopy): random resized crop (scale 0.35-1),
  horizontal and vertical flips and 90° rotations (a slide or a skin lesion has no
  canonical orientation), a mild stain jitter in optical-density space (each channel's
  optical density scaled by 1 ± 5 % and shifted by ± 0.02, after Tellez et al. 2018's
  H&E jitter) and brightness ± 10 %, and a mild blur. **No hue jitter and no grey
  conversion**: stain colour is what tells eosinophils from neutrophils and many tissue
  types apart.

All randomness comes from the ``numpy.random.Generator`` passed in, so a view is fixed
by its seed.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

GREY_TOLERANCE = 4.0
"""Mean absolute channel difference (0-255) below which an RGB image counts as grey."""

SETTINGS: dict[str, dict[str, object]] = {
    "grey": {
        "crop_scale": (0.5, 1.0),
        "rotate_degrees": 10.0,
        "flips": False,
        "window_low": (0.0, 0.10),
        "window_high": (0.90, 1.0),
        "gamma": (0.7, 1.4),
        "blur": 0.3,
    },
    "colour": {
        "crop_scale": (0.35, 1.0),
        "flips": True,
        "od_scale": 0.05,
        "od_shift": 0.02,
        "brightness": 0.10,
        "blur": 0.3,
    },
}
"""What each kind of image gets (recorded in the adapted encoder's config)."""


def is_grey(rgb: np.ndarray) -> bool:
    """Whether an ``(H, W, 3)`` uint8 image is grey (its channels agree)."""
    if rgb.ndim == 2:
        return True
    pixels = rgb[::4, ::4].astype(np.int16)
    spread = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    return float(spread.mean()) < GREY_TOLERANCE


def augment(rgb: np.ndarray, grey: bool, rng: np.random.Generator) -> np.ndarray:
    """One random view of an ``(S, S, 3)`` uint8 image, the same size."""
    settings = SETTINGS["grey" if grey else "colour"]
    size = rgb.shape[0]
    image = Image.fromarray(rgb)
    image = _resized_crop(image, size, settings["crop_scale"], rng)  # type: ignore[arg-type]
    if grey:
        degrees = float(settings["rotate_degrees"])  # type: ignore[arg-type]
        if rng.random() < 0.5:
            image = image.rotate(rng.uniform(-degrees, degrees), Image.Resampling.BILINEAR)
    else:
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        turns = int(rng.integers(4))
        if turns:
            image = image.rotate(90 * turns)
    if rng.random() < float(settings["blur"]):  # type: ignore[arg-type]
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 1.2)))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = _intensity(pixels, settings, rng) if grey else _stain(pixels, settings, rng)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def _resized_crop(
    image: Image.Image, size: int, scale: tuple[float, float], rng: np.random.Generator
) -> Image.Image:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(width - w + 1))
            top = int(rng.integers(height - h + 1))
            box = (left, top, left + w, top + h)
            return image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _intensity(pixels: np.ndarray, settings: dict, rng: np.random.Generator) -> np.ndarray:
    low = rng.uniform(*settings["window_low"])
    high = rng.uniform(*settings["window_high"])
    pixels = np.clip((pixels - low) / (high - low), 0.0, 1.0)
    gamma = math.exp(rng.uniform(*np.log(settings["gamma"])))
    return pixels**gamma


def _stain(pixels: np.ndarray, settings: dict, rng: np.random.Generator) -> np.ndarray:
    density = -np.log((pixels * 255.0 + 1.0) / 256.0)
    scale = 1.0 + rng.uniform(-settings["od_scale"], settings["od_scale"], size=3)
    shift = rng.uniform(-settings["od_shift"], settings["od_shift"], size=3)
    density = np.maximum(density * scale + shift, 0.0)
    pixels = (np.exp(-density) * 256.0 - 1.0) / 255.0
    return pixels * (1.0 + rng.uniform(-settings["brightness"], settings["brightness"]))
