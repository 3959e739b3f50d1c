"""Encoder speed of the hub architectures against the default encoder, in one run.

The hub models are built with their real architectures (DINOv2-S/14 and -B/14 at 224 px,
RAD-DINO's ViT-B/14 at 518 px, Phikon's ViT-B/16 at 224 px) and random weights: speed does
not depend on the weights, and nothing is downloaded. Each is timed through medsort's
``HubEncoder.embed`` on the same normalised batches as ``efficientnet_lite0`` (ONNX Runtime).

    python benchmarks/bench_hub.py [--images 32] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import transformers

from medsort.embed.hub import HubEncoder
from medsort.embed.registry import create_encoder
from medsort.preprocess import PreprocessConfig

ARCHITECTURES = {
    "dinov2-small (224)": (transformers.Dinov2Config(hidden_size=384, num_attention_heads=6,
                           intermediate_size=1536, patch_size=14, image_size=518), 224),
    "dinov2-base (224)": (transformers.Dinov2Config(patch_size=14, image_size=518), 224),
    "phikon ViT-B/16 (224)": (transformers.ViTConfig(patch_size=16, image_size=224), 224),
    "rad-dino ViT-B/14 (518)": (transformers.Dinov2Config(patch_size=14, image_size=518), 518),
}  # fmt: skip


def images_per_second(encoder: object, size: int, n_images: int, batch: int) -> float:
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
    encoder.embed(pixels[:2])  # warm-up
    started = time.perf_counter()
    done = 0
    while done < n_images:
        encoder.embed(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    default = create_encoder("efficientnet_lite0", device="cpu")
    base = images_per_second(default, 224, args.images, args.batch)
    print(f"efficientnet_lite0 (224, ONNX): {base:.1f} images/s")
    for label, (config, size) in ARCHITECTURES.items():
        with tempfile.TemporaryDirectory() as folder:
            model = transformers.AutoModel.from_config(config)
            model.save_pretrained(folder)
            encoder = HubEncoder(
                Path(folder), preprocess=PreprocessConfig(size=size, resize_mode="crop"),
                device="cpu",
            )  # fmt: skip
            n = max(args.batch, args.images // (4 if size > 300 else 1))
            speed = images_per_second(encoder, size, n, args.batch)
        print(f"{label}: {speed:.1f} images/s, {base / speed:.1f}x slower than the default")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
