"""--encoder-for: modality groups embedded again, and re-grouped, with their own encoder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from medsort.cli import main
from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import Embedded, EmbeddedItem, decode_options, embed_files
from medsort.group import TwoLevelGrouper
from medsort.modality_encoders import (
    PerModalityGrouper,
    match_keys,
    modality_group_names,
    parse_encoder_for,
)
from medsort.sorter import Sorter


def test_parse_encoder_for() -> None:
    assert parse_encoder_for("XRay=efficientnet_lite0, 1=biomedclip:/models/b") == {
        "xray": "efficientnet_lite0",
        "1": "biomedclip:/models/b",
    }
    assert parse_encoder_for(None) == {} and parse_encoder_for({"0": "hf:/x"}) == {"0": "hf:/x"}
    with pytest.raises(ValueError, match="KEY=ENCODER"):
        parse_encoder_for("xray")
    with pytest.raises(ValueError, match="Unknown encoder 'nope'"):
        parse_encoder_for("xray=nope")
    with pytest.raises(ValueError, match="twice"):
        parse_encoder_for("0=efficientnet_lite0,0=efficientnet_lite1")


def test_modality_group_names_from_metadata() -> None:
    metas = [{"format": "DICOM", "modality": "CR"}] * 3 + [{"format": "DICOM", "modality": "DX"}]
    metas += [{"format": "slide (aperio)"}] * 2 + [{"format": "PNG"}]
    metas += [{"format": "PNG"}] * 2 + [{"modality": "US"}]
    items = [EmbeddedItem(item="", meta=meta) for meta in metas]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert modality_group_names(items, labels) == {0: "xray", 1: "histology", 2: None}


def test_match_keys_by_index_or_name() -> None:
    names = {0: "xray", 1: None, 2: "xray"}
    chosen, notes = match_keys({"xray": "a", "1": "b", "2": "c", "ct": "d", "7": "e"}, names)
    assert chosen == {0: ("xray", "a"), 1: ("1", "b"), 2: ("2", "c")}  # the index wins
    assert len(notes) == 2 and "no modality group ct" in notes[0] and "1 (unnamed)" in notes[0]


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two far-apart blobs of 40 rows (two modality groups), each without inner structure."""
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(size=(80, 64))).astype(np.float32)
    X[40:, :32] += 8.0
    X[:40, 32:] += 8.0
    return X, np.repeat([0, 1], 40)


class Fake:
    """A second encoder whose vectors split rows by parity (what the first one never saw)."""

    name = "fake-parity"
    dim = 16


def test_regrouped_modality_follows_its_own_encoder() -> None:
    X, _ = blobs()
    base = TwoLevelGrouper(random_state=0).fit(X)
    assert base.n_modalities_ == 2
    files = [Path(f"/data/{i}.png") for i in range(80)]
    items = [EmbeddedItem(item="", meta={"format": "PNG"}) for _ in range(80)]
    embedded = Embedded(files=files, items=items, hashes=[""] * 80, vectors=X)
    target = int(base.modality_labels_[0])
    rows = np.flatnonzero(base.modality_labels_ == target)
    seen: list[list[Path]] = []

    def embed_with(paths: list[Path], encoder: object) -> Embedded:
        seen.append(paths)
        rng = np.random.default_rng(1)
        # another order: rows must be matched by file, not by position
        index = [int(p.stem) for p in paths]
        index = [index[j] for j in rng.permutation(len(index))]
        vectors = np.abs(rng.normal(size=(len(paths), 16))).astype(np.float32)
        vectors[np.array(index) % 2 == 0, :8] += 30.0
        return Embedded(
            files=[files[i] for i in index],
            items=[items[i] for i in index],
            hashes=[""] * len(paths),
            vectors=vectors,
        )

    grouper = PerModalityGrouper(base, {str(target): "efficientnet_lite0"}).fit(
        embedded, embed_with
    )
    assert sorted(map(str, seen[0])) == sorted(str(files[r]) for r in rows)
    parity_of_row = {r: int(files[r].stem) % 2 for r in rows}
    # vectors came back shuffled: the parity split must follow the file, not the position
    assert adjusted_rand_score([parity_of_row[r] for r in rows], grouper.labels_[rows]) == 1.0
    other = np.flatnonzero(base.modality_labels_ != target)
    assert adjusted_rand_score(base.labels_[other], grouper.labels_[other]) == 1.0
    assert grouper.n_groups_ == len(np.unique(grouper.labels_))
    assert set(grouper.labels_[rows]).isdisjoint(grouper.labels_[other])
    info = grouper.run_info()["encoder_for"][str(target)]
    assert info["spec"] == "efficientnet_lite0" and info["licence"]["spdx"] == "Apache-2.0"
    with pytest.raises(NotImplementedError):
        grouper.predict(X)


def test_sort_with_an_encoder_for_one_modality_group(two_modalities: Path, tmp_path: Path) -> None:
    first = Sorter(cache=False, progress=False).fit(two_modalities)
    paths = first.result_.assignments["path"].tolist()
    stain = np.array([p.startswith("stain") for p in paths])
    (group,) = set(first.modality_labels_[stain])
    out = tmp_path / "out"
    code = main(
        ["sort", str(two_modalities), "--out", str(out), "--encoder-for",
         f"{group}=efficientnet_lite0_448", "--no-cache", "--no-audit", "--quiet"]
    )  # fmt: skip
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["encoder"] == "efficientnet_lite0"
    assert run["encoder_for"][str(group)]["encoder"] == "efficientnet_lite0_448"
    assert run["encoder_for"][str(group)]["n_items"] == int(stain.sum())
    assert run["modality_group_names"] == {"0": None, "1": None}
    assert run["views_per_modality_group"][group]["encoder"] == "efficientnet_lite0_448"
    with open(out / "assignments.csv", newline="") as f:
        table = {row["path"]: row for row in csv.DictReader(f)}
    labels = np.array([int(table[p]["group"]) for p in paths])
    # the X-ray group is the main encoder's; the stained group is what lite0_448 makes of it
    assert adjusted_rand_score(first.labels_[~stain], labels[~stain]) == 1.0
    encoder = create_encoder("efficientnet_lite0_448")
    files = [two_modalities / p for p in np.array(paths)[stain]]
    again = embed_files(files, encoder, EmbeddingCache(None), decode_options(None, encoder))
    by_hand = TwoLevelGrouper(modality_tol=0.0, modality_gap_tol=0.0).fit(
        again.vectors, views=again.views
    )
    assert adjusted_rand_score(by_hand.labels_, labels[stain]) == 1.0
    assert np.load(out / "embeddings.npy").shape[1] == 1280  # the main encoder's space


def test_bad_encoder_for_is_a_clear_error(
    two_modalities: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["sort", str(two_modalities), "--out", str(tmp_path / "o"), "--encoder-for", "xray",
         "--no-cache", "--quiet"]
    )  # fmt: skip
    assert code == 1 and "KEY=ENCODER" in capsys.readouterr().err
