"""An int8 EfficientNet-Lite0, tried for issue 13 and not shipped (docs/benchmarks.md).

Static quantisation of the shipped fp32 graph with ONNX Runtime's tools (needs the
``onnx`` package, in the dev extras): weights int8 per output channel, activations uint8
with ranges calibrated (min/max) on the bundled demo images, read and preprocessed as a
sort reads them; the nodes of ``--float-nodes`` stay float32 (the stem: its input is the
normalised pixels, and in 8 bits a low-contrast X-ray keeps too few grey levels). The
graph is written as an adapted-encoder folder, so ``medsort sort --encoder adapted:DIR``
and the benchmarks run it like any other encoder:

    python benchmarks/int8_lite.py /tmp/lite0-int8
    python benchmarks/int8_lite.py /tmp/lite0-int8-wide --float-nodes stem,block0,head
    python benchmarks/bench_sort.py --encoder adapted:/tmp/lite0-int8
    python benchmarks/bench_onnx.py --sections sort agree \
        --reference efficientnet_lite0 --candidate adapted:/tmp/lite0-int8

It prints the CPU ms per image of both graphs (one thread, 2 images a call) and the
cosine of their features on 64 images of each dev set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_onnx import DATA, DEV_SETS, REPO  # noqa: E402

from medsort.embed.onnx_encoder import ADAPTED_CONFIG, ADAPTED_GRAPH, OnnxEncoder
from medsort.embed.registry import create_encoder
from medsort.io import scan_folder
from medsort.io.readers import ReadOptions, read_file
from medsort.preprocess import PreprocessConfig, to_model_input, to_tensor_batch

NODES = {
    "stem": ["/_conv_stem/Conv"],
    "block0": ["/_blocks.0/_depthwise_conv/Conv", "/_blocks.0/_project_conv/Conv"],
    "head": ["/_blocks.15/_project_conv/Conv", "/_conv_head/Conv"],
}
"""Short names of the Lite0 graph's nodes that ``--float-nodes`` keeps in float32."""


def calibration_batches(
    images: Sequence[Path], config: PreprocessConfig, draft_size: int = 448
) -> Iterator[np.ndarray]:
    """One ``(1, 3, S, S)`` model input per image, as the embed stage prepares it."""
    for path in images:
        image = read_file(path, ReadOptions(draft_size=draft_size))[0]
        yield to_tensor_batch([to_model_input(image.rgb(), config)], config)


def quantize_lite(
    graph: Path, out: Path, images: Sequence[Path], config: PreprocessConfig, float_nodes: list[str]
) -> Path:
    """Write the int8 version of the fp32 ``graph`` to ``out``, calibrated on ``images``."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    batches = calibration_batches(images, config)

    class Calibration(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {input_name: batch}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(graph), str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float_nodes,
        )
    return out


def cpu_ms_per_image(encoder: OnnxEncoder, batch: np.ndarray, calls: int = 30) -> float:
    """CPU ms per image of ``encoder`` on ``batch``, as a decoding thread runs it (one core)."""
    encoder.embed_one_core(batch)
    started = time.process_time()
    for _ in range(calls):
        encoder.embed_one_core(batch)
    return (time.process_time() - started) / (calls * len(batch)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for encoder.onnx and adapted.json")
    parser.add_argument("--float-nodes", default="stem", help=f"of {', '.join(NODES)}")
    args = parser.parse_args()
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    float_nodes = [node for name in args.float_nodes.split(",") if name for node in NODES[name]]
    demo = scan_folder(REPO / "src" / "medsort" / "demo" / "images")
    graph = quantize_lite(
        encoder.graph, args.out / ADAPTED_GRAPH, demo, encoder.config, float_nodes
    )
    config = {
        "preprocess": dataclasses.asdict(encoder.config),
        "dim": encoder.dim,
        "note": f"int8 efficientnet_lite0, float nodes {args.float_nodes}, calibrated on the demo",
    }
    (args.out / ADAPTED_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    print(f"# wrote {graph} ({graph.stat().st_size / 1e6:.1f} MB); float: {args.float_nodes}")
    int8 = create_encoder(f"adapted:{args.out}", device="cpu")
    two = np.concatenate(list(calibration_batches(demo[:2], encoder.config)))
    print(
        f"# CPU ms per image, one thread, 2 a call: fp32 {cpu_ms_per_image(encoder, two):.2f}"
        f", int8 {cpu_ms_per_image(int8, two):.2f}"
    )
    for name in DEV_SETS:
        files = scan_folder(DATA / name / "images")
        random.Random(2).shuffle(files)
        batch = np.concatenate(list(calibration_batches(files[:64], encoder.config)))
        a, b = encoder.embed(batch), int8.embed(batch)
        cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        print(f"{name:22s} cosine to fp32: min {cosines.min():.4f}, mean {cosines.mean():.4f}")


if __name__ == "__main__":
    main()
