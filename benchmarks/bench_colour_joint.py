"""A joint colour histogram view, and flip-averaged CNN vectors, on the real dev sets (issue 12).

Same cached features and cases as ``bench_views.py`` (labels only score). Two ideas, both
measured through the real grouper (:class:`medsort.group.TwoLevelGrouper`):

- **Joint colour histogram**: an ``8 x 8 x 8`` RGB histogram (square-rooted, 512 values) of
  the 32 px copy, computed here from each file with Pillow (box reduction). Stain colours
  are joint (purple nucleus, pink cytoplasm), which per-channel marginals, the present
  ``colour`` view, cannot tell apart. Scored alone (spectral clustering at the true ``k``),
  beside the CNN at a fixed weight, and in the default vote as a third view (``add``), as
  the colour view (``replace``) or appended to it (``concat``).
- **Flip-averaged CNN vectors** (test-time augmentation): the mean of the vectors of each
  image and of its mirror image, the views unchanged.

    python benchmarks/bench_colour_joint.py [--cache-dir scratch/bench-cache]
        [--flip-dir scratch/flipped]

Figures: docs/benchmarks.md, "Tried for issue 12 and dropped".
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_views as bv  # noqa: E402

from medsort.embed.cache import EmbeddingCache  # noqa: E402
from medsort.embed.registry import create_encoder  # noqa: E402
from medsort.embed.stream import embed_files  # noqa: E402
from medsort.group import SpectralAutoK, TwoLevelGrouper, score_grouping  # noqa: E402
from medsort.group.reduce import FeatureReducer  # noqa: E402

BINS = 8
SIDE = 32


def small_rgb(path: Path, side: int = SIDE) -> np.ndarray:
    """``(side, side, 3)`` float copy in ``[0, 1]``, box-reduced."""
    with Image.open(path) as image:
        small = image.convert("RGB").resize((side, side), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def joint_histogram(small: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Square-rooted joint RGB histogram, ``bins ** 3`` values summing (squared) to one."""
    q = np.clip((small * bins).astype(np.int64), 0, bins - 1).reshape(-1, 3)
    index = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    counts = np.bincount(index, minlength=bins**3)
    return np.sqrt(counts / len(index)).astype(np.float32)


def unit_block(X: np.ndarray) -> np.ndarray:
    """Standardised, PCA 32, scaled to unit mean row norm (as the grouper's view blocks)."""
    Z = PCA(min(32, X.shape[1]), random_state=0).fit_transform(StandardScaler().fit_transform(X))
    return Z / np.linalg.norm(Z, axis=1).mean()


def flipped_vectors(name: str, cache: EmbeddingCache, encoder: object, out: Path) -> np.ndarray:
    """CNN vectors of the mirror image of every file (lossless PNG copies under ``out``)."""
    files = []
    for path in pd.read_csv(bv.DATA / name / "labels.csv")["path"]:
        target = out / name / f"{path}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(bv.DATA / name / path) as image:
                ImageOps.mirror(image).save(target)
        files.append(target)
    embedded = embed_files(files, encoder, cache, progress=False, views=False)
    return embedded.vectors


def grouped(label: str, case: str, data: dict[str, object], k: int | None) -> None:
    grouper = TwoLevelGrouper(n_clusters=k, random_state=0).fit(data["X"], views=data["views"])
    score = score_grouping(data["y"], grouper.labels_)
    chosen = [used["weights"] for used in grouper.views_used_]
    print(
        f"{label:22s} {case:38s} k={len(np.unique(grouper.labels_)):2d} "
        f"ACC {score['acc']:.3f} NMI {score['nmi']:.3f} {chosen}",
        flush=True,
    )


def fixed_weights(name: str, data: dict[str, object]) -> None:
    """The joint histogram alone and beside the CNN at fixed weights, true ``k``."""
    k = len(np.unique(data["y"]))
    cnn = unit_block(FeatureReducer(random_state=0).fit_transform(data["X"]))
    joint = unit_block(data["views"]["joint"])
    for label, Z in (
        ("joint alone", joint),
        ("CNN + 0.5 joint", np.hstack([cnn, 0.5 * joint])),
        ("CNN + 1.0 joint", np.hstack([cnn, joint])),
    ):
        labels = SpectralAutoK(n_clusters=k, random_state=0).fit(Z).labels_
        score = score_grouping(data["y"], labels)
        print(f"{label:22s} {name:38s} k={k:2d} ACC {score['acc']:.3f} NMI {score['nmi']:.3f}")


def with_views(sets: dict[str, dict[str, object]], mode: str) -> dict[str, dict[str, object]]:
    out = {}
    for name, data in sets.items():
        views = {key: value for key, value in data["views"].items() if key != "joint"}
        if mode == "add":
            views["joint"] = data["views"]["joint"]
        elif mode == "replace":
            views["colour"] = data["views"]["joint"]
        elif mode == "concat":
            views["colour"] = np.hstack([views["colour"], data["views"]["joint"]])
        X = 0.5 * (data["X"] + data["X_flipped"]) if mode == "flip-averaged" else data["X"]
        out[name] = {**data, "X": X, "views": views}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("scratch/bench-cache"))
    parser.add_argument("--flip-dir", type=Path, default=Path("scratch/flipped"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    encoder = create_encoder("efficientnet_lite0")
    cache = EmbeddingCache(args.cache_dir)
    sets = {}
    for name in bv.SETS:
        data = bv.load_set(name, cache, encoder)
        files = pd.read_csv(bv.DATA / name / "labels.csv")["path"]
        data["views"]["joint"] = np.stack(
            [joint_histogram(small_rgb(bv.DATA / name / p)) for p in files]
        )
        data["X_flipped"] = flipped_vectors(name, cache, encoder, args.flip_dir)
        sets[name] = data
        fixed_weights(name, data)
    for mode in ("default", "add", "replace", "concat", "flip-averaged"):
        for case, (data, k) in bv.cases(with_views(sets, mode)).items():
            if case != "chest-xray-28":  # the same as its --k 2 case
                grouped(mode, case, data, k)


if __name__ == "__main__":
    main()
