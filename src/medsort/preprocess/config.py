"""What an encoder asks of the preprocessing: input size, normalisation, pad or crop."""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images must be prepared for an encoder.

    ``resize_mode="pad"`` scales the longer side to ``size`` and pads the rest with
    black, so no image border is cropped away; ``"crop"`` scales the shorter side to
    ``size / crop_pct`` and centre-crops ``size`` (timm's ``crop_pct``: 0.875 is the
    256 -> 224 of DINOv2's processor); ``"squash"`` resizes to ``size x size`` without
    keeping the aspect ratio (transformers' ``ViTImageProcessor``).
    """

    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    resize_mode: str = "pad"
    crop_pct: float = 1.0
