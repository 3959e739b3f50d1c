"""Export the torch EfficientNet-Lite models to the ONNX graphs the default encoders run.

Needs ``medsort[torch]``. ``scripts/export_onnx.py`` regenerates the shipped graphs with it;
:mod:`medsort.embed.onnx_encoder` calls :func:`export_lite` on first use of a variant whose
graph is not shipped (lite1, lite2), writing it into the user's model cache.

A graph maps ``pixels`` ``(B, 3, H, W)`` float32, normalised with the ImageNet mean and
std, to ``features`` ``(B, 1280)``, the global average of the last convolution's output
(what :class:`~medsort.embed.efficientnet.EfficientNetLiteEncoder` computes). Batch and
spatial axes are dynamic; the convolutions' "same" padding is fixed at the native size,
as in the torch model, so both give the same features at any size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from medsort.embed.efficientnet import load_lite_model

NATIVE_SIZE = {0: 224, 1: 240, 2: 260}
OPSET = 17
MAX_ABS_ERROR = 1e-3


class PooledFeatures(torch.nn.Module):
    """``extract_features`` followed by the global average pool, as one graph."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(pixels).mean(dim=(2, 3))


def export_lite(number: int, target: Path) -> Path:
    """Export EfficientNet-Lite``number`` to ``target``, checked against torch first.

    The graph is written next to ``target`` and renamed into place, so a half-written
    file never sits at ``target``. Raises RuntimeError if ONNX Runtime's features differ
    from torch's by more than ``MAX_ABS_ERROR`` at the native size or twice it.
    """
    model = load_lite_model(f"efficientnet_lite{number}")
    return export_pooled(model, target, NATIVE_SIZE[number], f"lite{number}")


def export_pooled(model: torch.nn.Module, target: Path, size: int, what: str = "model") -> Path:
    """Export ``model.extract_features`` + global average pool to ``target`` (see
    :func:`export_lite`); also used for the adapted encoders of :mod:`medsort.adapt`."""
    wrapper = PooledFeatures(model.eval()).eval()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            wrapper,
            (example,),
            str(partial),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={
                "pixels": {0: "batch", 2: "height", 3: "width"},
                "features": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        for side in (size, 2 * size):
            error = max_difference(wrapper, partial, side)
            if error > MAX_ABS_ERROR:
                raise RuntimeError(
                    f"exported {what} differs from torch by {error:.2e} at {side} px"
                )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def max_difference(wrapper: torch.nn.Module, graph: Path, side: int) -> float:
    """Largest absolute difference between torch and ONNX Runtime features on random input."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    pixels = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(side))
    with torch.no_grad():
        expected = wrapper(pixels).numpy()
    got = session.run(None, {"pixels": pixels.numpy()})[0]
    return float(np.abs(got - expected).max())
