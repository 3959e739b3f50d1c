"""Naming stage: vocabulary, prompt ensembles, reference naming on real images, CLI, report."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_result, shared_set

from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder
from medsort.embed.stream import embed_files
from medsort.io.scan import relative_key
from medsort.name import add_commands, load_vocabulary, name_groups
from medsort.name.reference import read_reference_list, reference_probabilities
from medsort.name.scores import name_group, top_k_strings
from medsort.name.text import label_embeddings, prompt_texts
from medsort.name.vocabulary import Label
from medsort.preprocess import PreprocessConfig
from medsort.report import write_report
from medsort.results import SortResult

REPO = Path(__file__).resolve().parents[1]
TINY_BIOMEDCLIP = REPO / "tests" / "fixtures" / "biomedclip_tiny"
TOP3 = re.compile(r"^[^:;]+:\d\.\d\d(;[^:;]+:\d\.\d\d){0,2}$")


# --------------------------------------------------------------------------- helpers


class KeywordTextEncoder:
    """A deterministic CLIP-like encoder for unit tests: each keyword is one axis.

    A text's vector is the sum of the axes of the keywords it contains; images are
    given directly as vectors, so the expected names are known exactly.
    """

    name = "keyword-test"
    config = PreprocessConfig(size=8)
    logit_scale = 20.0

    def __init__(self, keywords: list[str]) -> None:
        self.keywords = keywords
        self.dim = len(keywords) + 1
        self.calls: list[list[str]] = []

    def axis(self, *words: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in words:
            vector[self.keywords.index(word)] += 1.0
        return vector / np.linalg.norm(vector)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), self.dim), dtype=np.float32)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for column, word in enumerate(self.keywords):
                out[row, column] = text.lower().count(word.lower())
            out[row, -1] = 0.1  # shared "image of" direction, as real prompts have
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def write_vocabulary(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- vocabulary


def test_builtin_vocabulary_covers_the_modalities_and_conditions() -> None:
    vocab = load_vocabulary()
    names = {m.name for m in vocab.modalities}
    for modality in ["chest X-ray", "brain MRI", "dermoscopy", "fundus photograph",
                     "breast ultrasound", "blood smear", "chest CT"]:  # fmt: skip
        assert modality in names
    assert any(name.startswith("H&E histopathology") for name in names)
    chest = {c.name for c in vocab.modality("chest x-ray").conditions}
    assert {"normal", "pneumonia", "covid-19", "tuberculosis", "cardiomegaly"} <= chest
    derm = {c.name for c in vocab.modality("dermoscopy").conditions}
    assert len(derm) == 7 and "melanoma" in derm
    assert vocab.templates == (
        "this is an image of {}",
        "{} presented in image",
        "a photo of {}",
    )


def test_user_vocabulary_extends_the_builtin(tmp_path: Path) -> None:
    path = write_vocabulary(
        tmp_path / "v.json",
        {
            "modalities": [
                {"name": "Chest X-ray", "conditions": ["rib fracture", "pneumonia"]},
                {"name": "OCT", "conditions": [{"name": "drusen", "descriptions": "bumps"}]},
            ]
        },
    )
    vocab = load_vocabulary(path)
    chest = [c.name for c in vocab.modality("chest X-ray").conditions]
    assert "rib fracture" in chest and "cardiomegaly" in chest
    assert chest.count("pneumonia") == 1
    assert vocab.modality("oct").conditions[0].descriptions == ("bumps",)
    assert len(vocab.modalities) == len(load_vocabulary().modalities) + 1


def test_user_vocabulary_replaces_the_builtin(tmp_path: Path) -> None:
    path = write_vocabulary(
        tmp_path / "v.json",
        {
            "mode": "replace",
            "templates": ["an image of {}"],
            "modalities": [{"name": "OCT", "conditions": ["drusen", "normal"]}],
        },
    )
    vocab = load_vocabulary(path)
    assert [m.name for m in vocab.modalities] == ["OCT"]
    assert vocab.templates == ("an image of {}",)


@pytest.mark.parametrize(
    "data",
    [
        {"modalities": [{"name": "a;b"}]},
        {"modalities": [{"conditions": ["x"]}]},
        {"templates": ["no placeholder"], "modalities": [{"name": "x"}]},
        {"mode": "merge", "modalities": [{"name": "x"}]},
        {"modalities": [{"name": "x", "conditions": ["a", "A"]}]},
    ],
)
def test_malformed_vocabulary_is_refused(tmp_path: Path, data: dict) -> None:
    with pytest.raises(ValueError):
        load_vocabulary(write_vocabulary(tmp_path / "v.json", data))


# --------------------------------------------------------------------------- scoring logic


def test_prompt_ensemble_averages_templates_and_descriptions() -> None:
    encoder = KeywordTextEncoder(["pneumonia", "normal", "consolidation"])
    templates = ["this is an image of {}", "a photo of {}"]
    plain = Label("pneumonia")
    described = Label("pneumonia", ("patchy consolidation",))
    vectors = label_embeddings(encoder, [plain, described, Label("normal")], templates)
    assert vectors.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # one call: 3 labels x 2 templates, then the 1 description
    assert encoder.calls[-1][:2] == ["this is an image of pneumonia", "a photo of pneumonia"]
    assert len(encoder.calls[-1]) == 7 and encoder.calls[-1][-1] == "patchy consolidation"
    assert vectors[1, 2] > 0 and vectors[0, 2] == 0  # the description moved the label
    assert prompt_texts(plain, ["{} presented in image"], "chest X-ray") == [
        "pneumonia, chest X-ray presented in image"
    ]


def test_group_name_needs_min_confidence() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    name = name_group(4, ["a", "b", "c"], probabilities, min_confidence=0.5)
    assert (name.name, name.runner_up, name.confidence) == ("a", "b", 0.6)
    unsure = name_group(4, ["a", "b", "c"], probabilities, min_confidence=0.61)
    assert unsure.name == "unnamed" and unsure.candidate == "a"
    assert top_k_strings(["a", "b", "c"], probabilities) == [
        "a:0.70;b:0.20;c:0.10",
        "a:0.50;b:0.30;c:0.20",
    ]


def _two_modality_case() -> tuple[KeywordTextEncoder, SortResult]:
    encoder = KeywordTextEncoder(["chest x-ray", "dermoscopy", "pneumonia", "normal",
                                  "melanoma", "nevus"])  # fmt: skip
    rng = np.random.default_rng(0)
    centres = [
        encoder.axis("chest x-ray", "pneumonia"),
        encoder.axis("chest x-ray", "normal"),
        encoder.axis("dermoscopy", "melanoma"),
    ]
    groups = np.repeat([0, 1, 2], 10)
    embeddings = np.stack([centres[g] for g in groups]) + rng.normal(0, 0.05, (30, encoder.dim))
    return encoder, make_result(embeddings, np.array([0] * 20 + [1] * 10), groups)


def test_text_naming_names_modalities_then_their_conditions(tmp_path: Path) -> None:
    encoder, result = _two_modality_case()
    vocab = write_vocabulary(
        tmp_path / "v.json",
        {
            "mode": "replace",
            "modalities": [
                {"name": "chest x-ray", "conditions": ["normal", "pneumonia"]},
                {"name": "dermoscopy", "conditions": ["melanoma", "melanocytic nevus"]},
            ],
        },
    )
    named = name_groups(result, encoder, vocabulary=vocab)
    table = named.assignments
    assert list(table.groupby("group")["group_name"].first()) == [
        "pneumonia", "normal", "melanoma"]  # fmt: skip
    assert list(table.groupby("modality_group")["modality_name"].first()) == [
        "chest x-ray", "dermoscopy"]  # fmt: skip
    assert (table["name_confidence"] > 0.5).all()
    assert table["top3"].str.match(TOP3).all()
    # a chest group only competes among chest conditions
    assert not table.loc[table["group"] == 0, "top3"].str.contains("melanoma").any()
    record = named.run["naming"]
    assert record["method"] == "text" and record["groups"][0]["runner_up"] == "normal"
    assert "group_name" not in result.assignments.columns  # the input is not modified


def test_text_naming_threshold_leaves_groups_unnamed() -> None:
    encoder, result = _two_modality_case()
    named = name_groups(result, encoder, min_confidence=1.01)
    assert set(named.assignments["group_name"]) == {"unnamed"}
    assert set(named.assignments["modality_name"]) == {"unnamed"}
    # unnamed modality: conditions come from every modality of the vocabulary
    top3 = named.assignments["top3"]
    assert top3.str.match(TOP3).all()
    assert [g["candidate"] for g in named.run["naming"]["groups"]] == [
        "pneumonia", "normal", "melanoma"]  # fmt: skip


def test_references_name_groups_and_text_names_modalities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """References without a modality part name the groups; the text model the modalities."""
    from medsort.name import naming
    from medsort.name.reference import References

    encoder, result = _two_modality_case()
    refs = References(
        labels=np.array(["left", "right", "spot"], dtype=object),
        vectors=result.embeddings[[0, 10, 20]],
        skipped=[],
    )
    monkeypatch.setattr(naming, "embed_references", lambda *args, **kwargs: refs)
    named = name_groups(result, encoder, reference=Path("refs"))
    table = named.assignments
    assert list(table.groupby("group")["group_name"].first()) == ["left", "right", "spot"]
    assert list(table.groupby("modality_group")["modality_name"].first()) == [
        "chest X-ray", "dermoscopy"]  # fmt: skip
    assert named.run["naming"]["method"] == "reference"


def test_modality_without_conditions_falls_back_to_all(tmp_path: Path) -> None:
    encoder, result = _two_modality_case()
    vocab = write_vocabulary(
        tmp_path / "v.json",
        {
            "mode": "replace",
            "modalities": [
                {"name": "chest x-ray"},
                {"name": "dermoscopy", "conditions": ["melanoma", "pneumonia", "normal"]},
            ],
        },
    )
    named = name_groups(result, encoder, vocabulary=vocab)
    assert named.assignments.loc[0, "modality_name"] == "chest x-ray"
    assert list(named.assignments.groupby("group")["group_name"].first()) == [
        "pneumonia", "normal", "melanoma"]  # fmt: skip


def test_no_text_and_no_reference_gives_unnamed_columns() -> None:
    result = make_result(np.eye(4), np.zeros(4, int), np.array([0, 0, 1, 1]))
    named = name_groups(result, encoder=None)
    table = named.assignments
    assert set(table["group_name"]) == {"unnamed"} and set(table["modality_name"]) == {"unnamed"}
    assert (table["name_confidence"] == 0).all() and (table["top3"] == "").all()
    assert named.run["naming"]["method"] == "none"
    assert len(table) == 4 and list(table["group"]) == [0, 0, 1, 1]


def test_reference_probabilities_prefer_the_nearest_label() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=16), rng.normal(size=16)
    images = np.stack([a + rng.normal(0, 0.1, 16) for _ in range(5)]
                      + [b + rng.normal(0, 0.1, 16) for _ in range(5)])  # fmt: skip
    refs = np.stack([a, a + 0.05, b])
    labels, probabilities = reference_probabilities(images, refs, np.array(["x", "x", "y"]))
    assert labels == ["x", "y"]
    assert (probabilities[:5, 0] > 0.9).all() and (probabilities[5:, 1] > 0.9).all()


# --------------------------------------------------------------------------- references


def test_reference_list_from_folder_and_csv(tmp_path: Path) -> None:
    (tmp_path / "refs" / "chest X-ray" / "normal").mkdir(parents=True)
    (tmp_path / "refs" / "skin").mkdir(parents=True)
    (tmp_path / "refs" / "chest X-ray" / "normal" / "a.png").write_bytes(b"x")
    (tmp_path / "refs" / "skin" / "b.png").write_bytes(b"x")
    (tmp_path / "refs" / "loose.png").write_bytes(b"x")
    table = read_reference_list(tmp_path / "refs")
    assert sorted(table["label"]) == ["chest X-ray/normal", "skin"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    csv = tmp_path / "refs.csv"
    csv.write_text("path,label\nsub/c.png,pneumonia\n,ignored\n")
    table = read_reference_list(csv)
    assert list(table["label"]) == ["pneumonia"]
    assert table["path"][0] == tmp_path / "sub" / "c.png"
    with pytest.raises(ValueError):
        read_reference_list(tmp_path / "sub")  # no sub-folder: no label
    with pytest.raises(FileNotFoundError):
        read_reference_list(tmp_path / "missing")


def _embed(paths: list[Path], encoder, cache: Path) -> np.ndarray:  # noqa: ANN001
    store = EmbeddingCache(cache)
    try:
        embedded = embed_files(paths, encoder, store, progress=False)
    finally:
        store.close()
    assert len(embedded.files) == len(paths), embedded.skipped
    return embedded.vectors


def _split_real_set(name: str, per_class: int, n_refs: int, seed: int = 0):  # noqa: ANN202
    folder = shared_set(name)
    labels = pd.read_csv(folder / "labels.csv")
    rng = np.random.default_rng(seed)
    items, refs = [], []
    for label, rows in labels.groupby("label"):
        chosen = rows.iloc[rng.permutation(len(rows))[: per_class + n_refs]]
        refs += [(folder / p, label) for p in chosen["path"][:n_refs]]
        items += [(folder / p, label) for p in chosen["path"][n_refs:]]
    return folder, items, refs


def _real_groups(embeddings: np.ndarray, k: int) -> np.ndarray:
    """The project's grouper with ``k`` groups when it exists, else k-means on unit vectors."""
    try:
        from medsort.group import TwoLevelGrouper

        return TwoLevelGrouper(n_clusters=k, random_state=0).fit(embeddings).labels_
    except ImportError:
        from sklearn.cluster import KMeans

        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        return KMeans(k, n_init=4, random_state=0).fit_predict(unit)


def _write_reference_csv(path: Path, refs: list[tuple[Path, str]], prefix: str = "") -> Path:
    pd.DataFrame(
        [(str(p), f"{prefix}{label}") for p, label in refs], columns=["path", "label"]
    ).to_csv(path, index=False)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lung-histology", "chest-xray-28"])
def test_five_references_name_real_groups(name: str, tmp_path: Path) -> None:
    """5 labelled images per class name the groups of a real set by their majority label."""
    folder, items, refs = _split_real_set(name, per_class=20, n_refs=5)
    encoder = create_encoder("efficientnet_lite0")
    paths = [path for path, _ in items]
    truth = np.array([label for _, label in items])
    embeddings = _embed(paths, encoder, tmp_path / "cache")
    groups = _real_groups(embeddings, len(set(truth)))
    result = make_result(
        embeddings,
        np.zeros(len(paths), int),
        groups,
        paths=[relative_key(p, folder) for p in paths],
        input_dir=folder,
        encoder=encoder.name,
    )
    reference = _write_reference_csv(tmp_path / "refs.csv", refs)
    named = name_groups(result, encoder, reference=reference, cache=tmp_path / "cache")
    table = named.assignments.assign(truth=truth)
    for group, members in table.groupby("group"):
        majority = members["truth"].mode()[0]
        assert members["group_name"].iloc[0] == majority, (group, members["top3"].iloc[0])
    assert table["top3"].str.match(TOP3).all()
    assert named.run["naming"]["n_references"] == len(refs)


@pytest.mark.slow
def test_two_level_reference_labels_name_modalities(tmp_path: Path) -> None:
    """``modality/condition`` labels name the modality groups of a mixed real folder."""
    parts = [_split_real_set(name, per_class=12, n_refs=3, seed=1)
             for name in ["lung-histology", "chest-xray-28"]]  # fmt: skip
    encoder = create_encoder("efficientnet_lite0")
    paths, truth, modality_truth, refs = [], [], [], []
    for modality, (_, items, set_refs) in zip(["histology", "x-ray"], parts, strict=True):
        paths += [p for p, _ in items]
        truth += [label for _, label in items]
        modality_truth += [modality] * len(items)
        refs += [(p, f"{modality}/{label}") for p, label in set_refs]
    embeddings = _embed(paths, encoder, tmp_path / "cache")
    modality_groups = np.array([0 if m == "histology" else 1 for m in modality_truth])
    groups = np.array([["adenocarcinoma", "benign", "squamous_cell_carcinoma", "normal",
                        "pneumonia"].index(t) for t in truth])  # fmt: skip
    root = paths[0].parents[2]
    result = make_result(embeddings, modality_groups, groups,
                         paths=[relative_key(p, root) for p in paths], input_dir=root,
                         encoder=encoder.name)  # fmt: skip
    reference = _write_reference_csv(tmp_path / "refs.csv", refs)
    named = name_groups(result, encoder, reference=reference, cache=tmp_path / "cache")
    table = named.assignments
    assert list(table.groupby("modality_group")["modality_name"].first()) == [
        "histology", "x-ray"]  # fmt: skip
    # conditions of a named modality never come from the other modality's references
    assert not table.loc[modality_groups == 1, "top3"].str.contains("benign").any()
    correct = (table["group_name"] == pd.Series(truth)).mean()
    assert correct >= 0.8


# --------------------------------------------------------------------------- CLI and report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsort")
    add_commands(parser.add_subparsers())
    return parser


def test_cli_names_a_saved_sort_and_renders_the_report(
    demo_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medsort.demo import demo_labels

    labels = pd.read_csv(demo_labels()).set_index("path")["label"]
    files = sorted(demo_images.glob("*.png"))
    truth = np.array([labels[f.name] for f in files])
    encoder = create_encoder("efficientnet_lite0")
    embeddings = _embed(files, encoder, tmp_path / "cache")
    classes = sorted(set(truth))
    result = make_result(
        embeddings,
        np.zeros(len(files), int),
        np.array([classes.index(t) for t in truth]),
        paths=[f.name for f in files],
        input_dir=demo_images,
        encoder=encoder.name,
    )
    result.run.reading = {}
    out = tmp_path / "out"
    result.save(out)
    refs = tmp_path / "refs"
    for path, label in zip(files[:12], truth[:12], strict=True):
        (refs / label.replace("/", "_")).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, refs / label.replace("/", "_") / path.name)
    args = _parser().parse_args(
        ["name", str(out), "--reference", str(refs), "--cache-dir", str(tmp_path / "cache")]
    )
    assert args.run(args) == 0
    saved = SortResult.load(out)
    assert {"modality_name", "group_name", "name_confidence", "top3"} <= set(
        saved.assignments.columns
    )
    assert "group 0:" in capsys.readouterr().out
    report = (out / "report.html").read_text()
    assert "<h2>Names</h2>" in report and "runner-up" in report
    named = saved.assignments[saved.assignments["group_name"] != "unnamed"]
    assert len(named) > 0
    assert set(named["group_name"]) <= {c.replace("/", "_") for c in classes}


def test_report_without_naming_has_no_names_section(tmp_path: Path) -> None:
    result = make_result(np.eye(3), np.zeros(3, int), np.array([0, 1, 2]), input_dir=tmp_path)
    result.save(tmp_path / "out")
    write_report(tmp_path / "out")
    assert "<h2>Names</h2>" not in (tmp_path / "out" / "report.html").read_text()


# --------------------------------------------------------------------------- tiny BiomedCLIP


@pytest.fixture(scope="module")
def tiny_biomedclip():  # noqa: ANN201
    if not (TINY_BIOMEDCLIP / "open_clip_config.json").is_file():
        pytest.skip("tiny BiomedCLIP fixture not available")
    try:
        return create_encoder(f"biomedclip:{TINY_BIOMEDCLIP}")
    except (ImportError, ValueError) as error:
        pytest.skip(f"BiomedCLIP encoder not available: {error}")


def test_tiny_biomedclip_prompt_ensemble_shapes(tiny_biomedclip) -> None:  # noqa: ANN001
    vocab = load_vocabulary()
    conditions = vocab.modality("chest X-ray").conditions
    vectors = label_embeddings(tiny_biomedclip, conditions, vocab.templates)
    assert vectors.shape == (len(conditions), tiny_biomedclip.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(vectors.round(5), axis=0)) == len(conditions)


def test_tiny_biomedclip_naming_columns_and_thresholds(
    tiny_biomedclip,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(12, tiny_biomedclip.dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    result = make_result(embeddings, np.array([0] * 6 + [1] * 6), np.repeat([0, 1, 2], 4))
    always = name_groups(result, tiny_biomedclip, min_confidence=0.0, min_margin=0.0)
    never = name_groups(result, tiny_biomedclip, min_confidence=1.01)
    vocab = load_vocabulary()
    modality_names = {m.name for m in vocab.modalities}
    condition_names = {c.name for _, c in vocab.all_conditions()}
    assert set(always.assignments["modality_name"]) <= modality_names
    assert set(always.assignments["group_name"]) <= condition_names
    assert always.assignments["top3"].str.match(TOP3).all()
    assert set(never.assignments["group_name"]) == {"unnamed"}
    assert set(never.assignments["modality_name"]) == {"unnamed"}
    # the same modality scores either way; only the threshold differs
    confidences = [[m["confidence"] for m in named.run["naming"]["modalities"]]
                   for named in (always, never)]  # fmt: skip
    assert confidences[0] == confidences[1]
    # an unnamed modality lets conditions of every modality compete
    guesses = {g["candidate"] for g in never.run["naming"]["groups"]}
    assert guesses <= condition_names
    replaced = write_vocabulary(
        tmp_path / "v.json",
        {"mode": "replace", "modalities": [{"name": "OCT", "conditions": ["drusen", "edema"]}]},
    )
    only = name_groups(
        result, tiny_biomedclip, vocabulary=replaced, min_confidence=0.0, min_margin=0.0
    )
    assert set(only.assignments["modality_name"]) == {"OCT"}
    assert set(only.assignments["group_name"]) <= {"drusen", "edema"}
