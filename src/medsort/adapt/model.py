"""EfficientNet-Lite0 split for adaptation: a frozen trunk, trainable last stages, a head.

The trunk (stem and MBConv blocks 0-13, everything up to the last 192-channel block) keeps
its ImageNet weights; its output for each view is computed once and cached
(``(192, 7, 7)`` per view at 224 px), so an epoch only runs the trainable part: blocks 14
and 15 and the 1280-channel head convolution (about 1.5 M parameters), whose pooled output
is the encoder's feature, then a projection head used only for the training loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

FROZEN_BLOCKS = 14
"""MBConv blocks kept frozen (of 16 in EfficientNet-Lite0)."""


class Trunk(nn.Module):
    """Stem and the first ``FROZEN_BLOCKS`` blocks (frozen, always in eval mode)."""

    def __init__(self, model: nn.Module, split: int = FROZEN_BLOCKS) -> None:
        super().__init__()
        self.model = model
        self.split = split

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(pixels)))
        for block in m._blocks[: self.split]:
            x = block(x)
        return x


class Top(nn.Module):
    """The trainable blocks and head convolution; ``forward`` returns pooled features."""

    def __init__(self, model: nn.Module, split: int = FROZEN_BLOCKS) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(model._blocks[split:])
        self.conv_head = model._conv_head
        self.bn1 = model._bn1
        self.swish = model._swish
        self.split = split
        self.n_blocks = len(model._blocks)
        self.drop_connect_rate = model._global_params.drop_connect_rate or 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for offset, block in enumerate(self.blocks):
            # The stochastic depth of the original training (extract_features' schedule).
            rate = self.drop_connect_rate * (self.split + offset) / self.n_blocks
            x = block(x, drop_connect_rate=rate)
        return self.swish(self.bn1(self.conv_head(x))).mean(dim=(2, 3))


class ProjectionHead(nn.Module):
    """SimCLR's MLP (1280 → 512 → 128); only the training loss sees its output."""

    def __init__(self, dim: int = 1280, hidden: int = 512, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy for the pairs ``(a[i], b[i])``."""
    z = functional.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return functional.cross_entropy(logits, targets)


def view_matching(
    a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1
) -> tuple[float, float]:
    """Label-free criterion on two views of the same images: (loss, top-1 accuracy).

    The cross-entropy of picking view ``b[i]`` for ``a[i]`` among all ``b`` (and back)
    by cosine similarity of the encoder's features: low when each image's features
    survive the augmentations and still tell it from the others.
    """
    a, b = functional.normalize(a, dim=1), functional.normalize(b, dim=1)
    logits = a @ b.T / temperature
    targets = torch.arange(len(a), device=a.device)
    loss = 0.5 * (
        functional.cross_entropy(logits, targets) + functional.cross_entropy(logits.T, targets)
    )
    accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return float(loss), float(accuracy)


def frozen_trunk(
    model: nn.Module, example: torch.Tensor, work_dir: Path | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The trunk for inference: on the CPU an ONNX Runtime session of its graph (exported
    into ``work_dir``; about twice torch's speed there), on a GPU torch traced and frozen."""
    # Run under no_grad only: Trunk wraps the whole model, so freezing its parameters here
    # would freeze the trainable blocks too.
    trunk = Trunk(model).eval()
    if example.device.type == "cpu" and work_dir is not None:
        try:
            return _onnx_trunk(trunk, example, work_dir)
        except (ImportError, RuntimeError, OSError):
            pass
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(trunk, example[:2], check_trace=False))
    except (RuntimeError, TypeError):
        return trunk


def _onnx_trunk(
    trunk: nn.Module, example: torch.Tensor, work_dir: Path
) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort

    from medsort.embed.runtime import inference_threads

    work_dir.mkdir(parents=True, exist_ok=True)
    graph = work_dir / "trunk.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            trunk, (example[:2],), str(graph), input_names=["pixels"], output_names=["maps"],
            dynamic_axes={"pixels": {0: "batch"}, "maps": {0: "batch"}}, opset_version=17,
            do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = inference_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    probe = example[:2].cpu()
    with torch.no_grad():
        expected = trunk(probe).numpy()
    got = session.run(None, {"pixels": probe.numpy()})[0]
    if float(abs(got - expected).max()) > 1e-3:
        raise RuntimeError("the trunk's ONNX graph differs from torch")

    def run(pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"pixels": pixels.cpu().numpy()})[0])

    return run
