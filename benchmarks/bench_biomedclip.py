"""Speed and memory of the BiomedCLIP image and text towers on this CPU.

The real weights cannot be downloaded here, so the real-size architecture (ViT-B/16 at
224 px + BiomedBERT-base, 256 tokens) is built with random weights: the compute and
memory are the same as with the real checkpoint.

    python benchmarks/bench_biomedclip.py [--batch 32] [--images 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import torch

from medsort.embed.biomedclip import BiomedCLIPModel
from medsort.embed.runtime import tune_cpu_runtime


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--texts", type=int, default=64)
    args = parser.parse_args()
    tune_cpu_runtime()
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__} "
        f"| {torch.get_num_threads()} threads | {time.strftime('%Y-%m-%d')}"
    )
    started = time.perf_counter()
    model = BiomedCLIPModel().eval()
    print(
        f"build: {time.perf_counter() - started:.1f} s, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters, "
        f"peak {peak_mib():.0f} MiB"
    )
    pixels = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        model.encode_image(pixels[:2])  # warm-up
        started = time.perf_counter()
        done = 0
        while done < args.images:
            model.encode_image(pixels)
            done += args.batch
        seconds = time.perf_counter() - started
        print(
            f"image tower: {done / seconds:.1f} images/s (batch {args.batch}), "
            f"peak {peak_mib():.0f} MiB"
        )
        tokens = torch.randint(1000, 20000, (args.texts, 256))
        tokens[:, 0] = 2
        started = time.perf_counter()
        model.encode_text(tokens)
        seconds = time.perf_counter() - started
        print(
            f"text tower: {args.texts / seconds:.1f} prompts/s (256 tokens), "
            f"peak {peak_mib():.0f} MiB"
        )


if __name__ == "__main__":
    main()
