"""Save an adapted encoder: an ONNX graph plus its JSON config, loadable without torch.

``MODEL_DIR/encoder.onnx`` maps normalised ``(B, 3, H, W)`` pixels to the 1280-d pooled
features, exactly like the shipped ``efficientnet_lite0`` graph (same exporter,
:func:`medsort.embed.export.export_pooled`, checked against torch before it is kept);
``MODEL_DIR/adapted.json`` says how images are prepared for it, what it was adapted on and
how (see :meth:`medsort.adapt.Adapter.fit`). ``--encoder adapted:MODEL_DIR`` loads both
through :func:`medsort.embed.onnx_encoder.create_adapted_encoder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medsort.embed.export import export_pooled
from medsort.embed.onnx_encoder import ADAPTED_CONFIG, ADAPTED_GRAPH
from medsort.io.outputs import write_text


def save_encoder(model: torch.nn.Module, model_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``model``'s graph and ``config`` into ``model_dir`` (config last, atomically:
    a folder with a config always has its graph)."""
    model_dir = Path(model_dir)
    (model_dir / ADAPTED_CONFIG).unlink(missing_ok=True)
    export_pooled(model.eval(), model_dir / ADAPTED_GRAPH, config["preprocess"]["size"], "adapted")
    write_text(model_dir / ADAPTED_CONFIG, json.dumps(config, indent=2) + "\n")
    return model_dir
