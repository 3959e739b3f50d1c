"""Grouping quality on the real dev sets: fails if a figure drops by more than 0.03.

Every set goes through the real pipeline (``embed_files``: reader, CNN, hand-crafted views)
into a cache under pytest's cache folder (or ``$MEDSORT_QUALITY_CACHE``, e.g. the
``--cache-dir`` of ``benchmarks/bench_views.py``), so the first run embeds about 5,500
images (several minutes) and later runs only group (under a minute). The figures are those of
``benchmarks/bench_views.py`` (docs/benchmarks.md, "Several views").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_set

from medsort.embed.cache import EmbeddingCache
from medsort.embed.stream import Embedded, embed_files
from medsort.group import TwoLevelGrouper, score_grouping

pytestmark = pytest.mark.slow

TOLERANCE = 0.03
FIGURES: dict[str, tuple[list[str], int | None, dict[str, float]]] = {
    # case: (sets, k, measured figures)
    "chest-xray-28 --k 2": (["chest-xray-28"], 2, {"acc": 0.901, "nmi": 0.541}),
    "lung-histology": (["lung-histology"], None, {"acc": 0.925, "nmi": 0.777}),
    "blood-cells-128": (["blood-cells-128"], None, {"acc": 0.466, "nmi": 0.437}),
    "breast-ultrasound-28": (["breast-ultrasound-28"], None, {"acc": 0.679}),
    "brain-mri": (["brain-mri"], None, {"acc": 0.613}),
    "dermoscopy": (["dermoscopy"], None, {"acc": 0.403, "nmi": 0.109}),
    "blood-cells 3-class imbalanced": (["blood-cells-128"], None, {"acc": 0.861, "nmi": 0.687}),
    "mixed": (["chest-xray-28", "lung-histology"], None, {"acc": 0.913, "purity": 1.0}),
}
SUBSETS = {"blood-cells 3-class imbalanced": {"neutrophil": 234, "lymphocyte": 85, "platelet": 40}}
"""Cases on part of a set: the first rows of each class, in file order (bench_views.py)."""


@pytest.fixture(scope="module")
def embedded_sets(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Embedded, np.ndarray]]:
    from medsort.embed.registry import create_encoder

    pytest_cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    folder = os.environ.get("MEDSORT_QUALITY_CACHE") or (
        pytest_cache.mkdir("medsort-quality")
        if pytest_cache is not None
        else tmp_path_factory.mktemp("medsort-quality")
    )
    cache = EmbeddingCache(Path(folder))
    encoder = create_encoder("efficientnet_lite0")
    out = {}
    for name in sorted({s for sets, _, _ in FIGURES.values() for s in sets}):
        folder = shared_set(name)
        labels = pd.read_csv(folder / "labels.csv")
        embedded = embed_files([folder / p for p in labels["path"]], encoder, cache, progress=False)
        assert len(embedded.vectors) == len(labels) and set(embedded.views) == {"colour", "texture"}
        out[name] = (embedded, labels["label"].to_numpy())
    return out


@pytest.mark.parametrize("case", list(FIGURES))
def test_dev_figure_holds(case: str, embedded_sets: dict[str, tuple[Embedded, np.ndarray]]) -> None:
    sets, k, expected = FIGURES[case]
    parts = [embedded_sets[name] for name in sets]
    X = np.vstack([e.vectors for e, _ in parts])
    views = {v: np.vstack([e.views[v] for e, _ in parts]) for v in parts[0][0].views}
    y = np.concatenate(
        [[f"{name}/{v}" for v in y] for name, (_, y) in zip(sets, parts, strict=True)]
    )
    modality = np.concatenate([[name] * len(y) for name, (_, y) in zip(sets, parts, strict=True)])
    if case in SUBSETS:
        rows = np.sort(
            np.concatenate(
                [np.flatnonzero(y == f"{sets[0]}/{c}")[:n] for c, n in SUBSETS[case].items()]
            )
        )
        X, y, modality = X[rows], y[rows], modality[rows]
        views = {name: array[rows] for name, array in views.items()}

    grouper = TwoLevelGrouper(n_clusters=k, random_state=0).fit(X, views=views)

    score = score_grouping(y, grouper.labels_)
    score["purity"] = score_grouping(modality, grouper.modality_labels_)["acc"]
    for metric, figure in expected.items():
        assert score[metric] >= figure - TOLERANCE, (case, metric, score)
    assert [used["views"] for used in grouper.views_used_ if "agreement" in used]
