"""The zero-shot text prior of ``medsort label``: class names to prompts, and the
real BiomedCLIP code path end to end on the tiny checkpoint (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_result

from medsort.name.text import label_embeddings
from medsort.name.vocabulary import load_vocabulary
from medsort.refine.label import few_labels, label_folder
from medsort.refine.text_prior import class_labels, text_prior

TINY_BIOMEDCLIP = Path(__file__).parent / "fixtures" / "biomedclip_tiny"


def test_class_names_find_their_vocabulary_labels() -> None:
    labels = class_labels(
        ["squamous_cell_carcinoma", "Pneumonia", "MEL", "adenocarcinoma", "my_own-class"],
        load_vocabulary(),
    )
    names = [label.name for label in labels]
    assert names == [
        "lung squamous cell carcinoma",  # the words of exactly one condition
        "pneumonia",  # exact, ignoring case
        "melanoma",  # an alias
        "adenocarcinoma",  # lung and colon: ambiguous, kept as given
        "my own-class",
    ]
    assert all(label.descriptions for label in labels[:3])
    assert labels[3].descriptions == () and labels[4].descriptions == ()


def test_few_labels_counts_the_median_class() -> None:
    assert few_labels(np.array(["a"] * 5 + ["b"] * 2))
    assert not few_labels(np.array(["a"] * 6 + ["b"] * 6 + ["c"]))


@pytest.fixture(scope="module")
def tiny_biomedclip():  # noqa: ANN201
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from medsort.embed.registry import create_encoder

    return create_encoder(f"biomedclip:{TINY_BIOMEDCLIP}")


def _saved_result(out: Path, embeddings: np.ndarray, groups: np.ndarray, encoder: str) -> None:
    paths = [f"img{i:02d}.png" for i in range(len(embeddings))]
    make_result(embeddings, groups=groups, paths=paths, input_dir=out, encoder=encoder).save(out)


def test_label_with_biomedclip_text_prior(tiny_biomedclip, tmp_path: Path) -> None:  # noqa: ANN001
    classes = ["pneumonia", "normal"]
    prior = text_prior(np.eye(tiny_biomedclip.dim)[:6], tiny_biomedclip, classes)
    assert prior.shape == (6, 2)
    np.testing.assert_allclose(prior.sum(axis=1), 1.0, atol=1e-9)
    # the images: near each class's text vector, so the prior is right about them
    texts = label_embeddings(
        tiny_biomedclip, class_labels(classes, load_vocabulary()), load_vocabulary().templates
    )
    # images on either side of the line between the two (nearly equal) random text
    # vectors, so the zero-shot prior is right about every one of them
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 20)
    direction = (texts[0] - texts[1]) / np.linalg.norm(texts[0] - texts[1])
    side = np.where(truth == 0, 1.0, -1.0)[:, None]
    embeddings = texts.mean(axis=0) + 0.5 * side * direction
    embeddings += 0.01 * rng.normal(size=embeddings.shape)
    out = tmp_path / "out"
    _saved_result(out, embeddings, truth, f"biomedclip:{TINY_BIOMEDCLIP}")
    labels_csv = tmp_path / "few.csv"
    pd.DataFrame({"path": ["img00.png", "img20.png"], "label": classes}).to_csv(
        labels_csv, index=False
    )
    table = label_folder(out, labels_csv, text_prior="on")
    run = json.loads((out / "refine.json").read_text())
    assert run["text_prior"] == "on"
    assert run["text_prior_weight"] > 0  # both labelled images named right: fallback weight
    assert len(table) == 40 and table["probability"].between(0, 1).all()
    assert (table["label"].to_numpy() == np.array(classes)[truth]).mean() > 0.9
