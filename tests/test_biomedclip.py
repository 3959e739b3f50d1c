"""BiomedCLIP: medsort's own towers against features computed by the real open_clip.

The fixture ``tests/fixtures/biomedclip_tiny`` is a tiny random BiomedCLIP (same layout and
parameter names as the real one) with open_clip's outputs; ``scripts/make_biomedclip_fixture.py``
regenerates it in a throwaway environment that has open_clip. Nothing here downloads anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="BiomedCLIP needs medsort[hub] (torch)")
pytest.importorskip("transformers")

from medsort.embed import biomedclip  # noqa: E402
from medsort.embed.registry import TextEncoder, create_encoder  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "biomedclip_tiny"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def encoder() -> biomedclip.BiomedCLIPEncoder:
    return biomedclip.BiomedCLIPEncoder(FIXTURE)


def test_protocol_and_registry(encoder: biomedclip.BiomedCLIPEncoder) -> None:
    assert isinstance(encoder, TextEncoder)
    assert encoder.name.startswith("biomedclip-")
    assert encoder.dim == 32
    assert encoder.config.size == 64
    # open_clip's OPENAI_DATASET_MEAN / _STD, which BiomedCLIP was trained with (written out
    # here: comparing with the module's own constants could not fail)
    assert encoder.config.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert encoder.config.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert encoder.config.interpolation == "bicubic"
    assert encoder.config.resize_mode == "crop"
    built = create_encoder(f"biomedclip:{FIXTURE}", resize_mode="pad")
    assert isinstance(built, biomedclip.BiomedCLIPEncoder)
    assert built.name == encoder.name + "-pad"
    assert built.config.resize_mode == "pad"


def test_tokens_match_open_clip(encoder: biomedclip.BiomedCLIPEncoder, expected: dict) -> None:
    tokens = encoder.tokenize(expected["texts"])
    assert tokens.tolist() == expected["token_ids"]


def test_image_features_match_open_clip(encoder: biomedclip.BiomedCLIPEncoder) -> None:
    pixels = torch.from_numpy(np.load(FIXTURE / "pixels.npy"))
    features = encoder.embed(pixels)
    reference = np.load(FIXTURE / "image_features.npy")
    assert features.dtype == np.float32 and features.shape == reference.shape
    assert np.abs(features - reference).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_text_features_match_open_clip(
    encoder: biomedclip.BiomedCLIPEncoder, expected: dict
) -> None:
    features = encoder.embed_text(expected["texts"])
    reference = np.load(FIXTURE / "text_features.npy")
    assert features.dtype == np.float32 and features.shape == reference.shape
    assert np.abs(features - reference).max() <= TOLERANCE
    assert encoder.logit_scale == pytest.approx(expected["logit_scale"], rel=1e-6)
    assert encoder.embed_text([]).shape == (0, 32)


def test_tokenizer_from_vocab_txt_alone(tmp_path: Path, expected: dict) -> None:
    for name in ("open_clip_config.json", "open_clip_pytorch_model.bin", "vocab.txt"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    encoder = biomedclip.BiomedCLIPEncoder(tmp_path)
    assert encoder.tokenize(expected["texts"]).tolist() == expected["token_ids"]


@pytest.mark.parametrize(
    "index",
    [
        0,  # 80 x 100
        1,  # 100 x 72
        2,  # 64 x 64
    ],
)
def test_preprocessing_matches_open_clip(encoder: biomedclip.BiomedCLIPEncoder, index: int) -> None:
    from medsort.preprocess.transforms import to_model_input, to_tensor_batch

    image = np.load(FIXTURE / "images_uint8.npz")[f"arr_{index}"]
    pixels = to_tensor_batch([to_model_input(image, encoder.config)], encoder.config)
    reference = np.load(FIXTURE / "pixels.npy")[index]
    assert np.abs(pixels[0] - reference).max() <= 1e-5


def test_wrong_image_size_is_refused(encoder: biomedclip.BiomedCLIPEncoder) -> None:
    with pytest.raises(ValueError, match="64, 64"):
        encoder.embed(torch.zeros(1, 3, 224, 224))


def test_real_size_layout_matches_open_clip() -> None:
    config = json.loads((FIXTURE / "real_open_clip_config.json").read_text(encoding="utf-8"))
    expected = json.loads((FIXTURE / "real_state_shapes.json").read_text(encoding="utf-8"))
    arch = biomedclip.arch_from_config(config)
    assert arch == biomedclip.BiomedCLIPArch()
    with torch.device("meta"):
        model = biomedclip.BiomedCLIPModel(arch)
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert list(shapes) == list(expected)
    assert shapes == expected
    # The checkpoint's shapes alone give the same architecture.
    assert biomedclip.arch_from_config(config, expected) == arch


@pytest.mark.parametrize("missing", ["open_clip_pytorch_model.bin", "open_clip_config.json"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    for item in FIXTURE.iterdir():
        if item.name != missing:
            shutil.copy(item, tmp_path / item.name)
    with pytest.raises(biomedclip.BiomedCLIPFilesError, match=missing) as info:
        create_encoder(f"biomedclip:{tmp_path}")
    assert "medsort models download biomedclip" in str(info.value)


def test_missing_tokenizer_is_named(tmp_path: Path) -> None:
    for name in ("open_clip_config.json", "open_clip_pytorch_model.bin"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        biomedclip.BiomedCLIPEncoder(tmp_path)


def test_without_a_folder_the_models_home_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSORT_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="medsort models download biomedclip"):
        create_encoder("biomedclip")
    shutil.copytree(FIXTURE, tmp_path / "biomedclip")
    assert create_encoder("biomedclip").name == biomedclip.BiomedCLIPEncoder(FIXTURE).name


def test_pad_and_crop_features_have_their_own_cache_names() -> None:
    crop = biomedclip.BiomedCLIPEncoder(FIXTURE)
    pad = biomedclip.BiomedCLIPEncoder(FIXTURE, resize_mode="pad")
    assert crop.name != pad.name and pad.name.startswith(crop.name)
