"""Hub encoders (DINOv2, RAD-DINO, Phikon, hf:DIR) on tiny random checkpoints made here.

Nothing is downloaded: each test model is a ``transformers`` config with tiny sizes, saved
with ``save_pretrained`` next to the image processor the real model ships with, so the
features medsort computes from an image file can be checked against the model and its
processor run by hand.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="hub encoders need medsort[hub] (torch)")
transformers = pytest.importorskip("transformers", reason="hub encoders need medsort[hub]")

from medsort.cli import main  # noqa: E402
from medsort.embed import hub  # noqa: E402
from medsort.embed.cache import EmbeddingCache  # noqa: E402
from medsort.embed.registry import (  # noqa: E402
    LicenceWarning,
    create_encoder,
    get_entry,
)
from medsort.embed.stream import embed_files  # noqa: E402
from medsort.embed.weights import SOURCE_FILE  # noqa: E402
from medsort.preprocess import PreprocessConfig  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide DINOv2 with DINOv2's own processor (shorter side 40, crop 32)."""
    torch.manual_seed(seed)
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
    )
    transformers.Dinov2Model(config).save_pretrained(folder)
    transformers.BitImageProcessor(
        size={"shortest_edge": 40},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    ).save_pretrained(folder)
    return folder


def tiny_vit(folder: Path) -> Path:
    """A 2-layer ViT (Phikon's architecture) with a fixed 32 x 32 bilinear resize."""
    torch.manual_seed(1)
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
    )
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32},
        resample=2,
        image_mean=[0.5, 0.4, 0.3],
        image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dinov2(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Non-square RGB images whose resize and crop offsets are whole pixels."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for index, (height, width) in enumerate([(60, 75), (75, 60), (48, 48), (80, 100)]):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        pixels[: height // 2] //= 2  # some structure, not only noise
        path = folder / f"image{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def by_hand(folder: Path, paths: list[Path], pooling: str = "cls") -> np.ndarray:
    """The model and its own image processor, as transformers runs them."""
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**pixels).last_hidden_state
    if pooling == "mean":
        return hidden[:, 1:].mean(dim=1).numpy()
    return hidden[:, 0].numpy()


def test_dinov2_preprocessing_comes_from_the_folder(dinov2_dir: Path) -> None:
    encoder = create_encoder(f"dinov2-small:{dinov2_dir}", device="cpu")
    assert encoder.config == PreprocessConfig(
        size=32,
        mean=tuple(IMAGENET_MEAN),
        std=tuple(IMAGENET_STD),
        interpolation="bicubic",
        resize_mode="crop",
        crop_pct=0.8,
    )
    assert encoder.dim == 32 and encoder.name.startswith("dinov2-small-")


def test_dinov2_features_equal_the_model_run_by_hand(dinov2_dir: Path, images: list[Path]) -> None:
    encoder = create_encoder(f"dinov2-small:{dinov2_dir}", device="cpu")
    embedded = embed_files(images, encoder, EmbeddingCache(None), batch_size=3, progress=False)
    expected = by_hand(dinov2_dir, images)
    assert embedded.vectors.shape == expected.shape == (4, 32)
    np.testing.assert_allclose(embedded.vectors, expected, atol=2e-4, rtol=1e-4)
    # the same image, prepared differently (padded), gives other features: the check bites
    padded = hub.HubEncoder(dinov2_dir, preprocess=PreprocessConfig(size=32))
    padded.config = PreprocessConfig(size=32)
    other = embed_files(images[:1], padded, EmbeddingCache(None), progress=False)
    assert np.abs(other.vectors[0] - expected[0]).max() > 1e-2


def test_vit_squash_resize_and_its_mean_and_std(vit_dir: Path, images: list[Path]) -> None:
    with pytest.warns(LicenceWarning, match="Owkin-NC"):
        encoder = create_encoder(f"phikon:{vit_dir}", device="cpu")
    assert encoder.config.resize_mode == "squash"
    assert encoder.config.interpolation == "bilinear"
    assert encoder.config.mean == (0.5, 0.4, 0.3)
    embedded = embed_files(images, encoder, EmbeddingCache(None), progress=False)
    np.testing.assert_allclose(embedded.vectors, by_hand(vit_dir, images), atol=2e-4, rtol=1e-4)


def test_mean_pooling_and_distinct_cache_names(dinov2_dir: Path, images: list[Path]) -> None:
    cls = hub.HubEncoder(dinov2_dir, entry="dinov2-small", pooling="cls")
    mean = hub.HubEncoder(dinov2_dir, entry="dinov2-small", pooling="mean")
    both = hub.HubEncoder(dinov2_dir, entry="dinov2-small", pooling="cls+mean")
    assert len({cls.name, mean.name, both.name}) == 3
    vectors = embed_files(images, mean, EmbeddingCache(None), progress=False).vectors
    np.testing.assert_allclose(vectors, by_hand(dinov2_dir, images, "mean"), atol=2e-4, rtol=1e-4)
    assert both.dim == 64
    with pytest.raises(ValueError, match="pooling"):
        hub.HubEncoder(dinov2_dir, pooling="max")


def test_other_weights_other_name(tmp_path: Path, dinov2_dir: Path) -> None:
    other = tiny_dinov2(tmp_path / "other", seed=5)
    assert hub.HubEncoder(other).name != hub.HubEncoder(dinov2_dir).name


def test_non_commercial_licence_warns(dinov2_dir: Path) -> None:
    with pytest.warns(LicenceWarning, match="MSRLA.*not for commercial use"):
        encoder = create_encoder(f"rad-dino:{dinov2_dir}", device="cpu")
    assert encoder.licence.commercial is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", LicenceWarning)
        create_encoder(f"dinov2-base:{dinov2_dir}", device="cpu")  # Apache-2.0: no warning


def test_sort_records_the_licence_and_warns(
    dinov2_dir: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = images[0].parent
    for index in range(8):  # a few more images, so grouping has rows to work with
        Image.open(images[index % 4]).rotate(90 * (index // 4 + 1)).save(folder / f"r{index}.png")
    out = tmp_path / "out"
    code = main(
        ["sort", str(folder), "--out", str(out), "--encoder", f"phikon:{dinov2_dir}",
         "--no-cache", "--no-audit", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "medsort: warning: the weights of encoder phikon are licensed Owkin-NC" in (
        capsys.readouterr().err
    )
    run = json.loads((out / "run.json").read_text())
    assert run["encoder"].startswith("phikon-")
    assert run["encoder_licence"]["spdx"] == "Owkin-NC"
    assert run["encoder_licence"]["commercial"] is False
    assert "not for commercial use" in run["encoder_licence"]["warning"]
    assert "Owkin-NC" in (out / "report.html").read_text()
    # later commands rebuild the same encoder from run.json's spec (not from its name)
    assert run["encoder_spec"] == f"phikon:{dinov2_dir.resolve()}"
    refs = tmp_path / "refs"
    for label, image in (("dark", images[0]), ("bright", images[1])):
        (refs / label).mkdir(parents=True)
        Image.open(image).save(refs / label / image.name)
    assert main(["name", str(out), "--reference", str(refs), "--no-cache", "--quiet"]) == 0
    assert "group_name" in (out / "assignments.csv").read_text().splitlines()[0]


def test_missing_folder_says_how_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSORT_MODELS_DIR", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="medsort models download rad-dino"):
        create_encoder("rad-dino")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    with pytest.raises(hub.HubFilesError, match="lacks its weights"):
        create_encoder(f"dinov2-small:{tmp_path / 'partial'}")


def fake_snapshot(dinov2_dir: Path, calls: list[dict]):  # noqa: ANN201
    """A ``snapshot_download`` that copies the tiny model instead of fetching anything."""

    def snapshot_download(**kwargs: object) -> str:
        calls.append(kwargs)
        target = Path(str(kwargs["local_dir"]))
        target.mkdir(parents=True, exist_ok=True)
        for item in dinov2_dir.iterdir():
            (target / item.name).write_bytes(item.read_bytes())
        return str(target)

    return snapshot_download


def test_models_download_then_offline_use(
    dinov2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import huggingface_hub

    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot(dinov2_dir, calls))
    monkeypatch.setenv("MEDSORT_MODELS_DIR", str(tmp_path / "home"))
    assert main(["models", "download", "rad-dino"]) == 0
    captured = capsys.readouterr()
    assert "research only" in captured.err  # the licence is said before anything is fetched
    assert calls[0]["repo_id"] == "microsoft/rad-dino"
    assert "model.safetensors" in calls[0]["allow_patterns"]
    home = tmp_path / "home" / "rad-dino"
    assert captured.out.strip() == str(home)
    record = json.loads((home / SOURCE_FILE).read_text())
    assert record["hub_id"] == "microsoft/rad-dino" and record["licence"]["spdx"] == "MSRLA"
    with pytest.warns(LicenceWarning):
        encoder = create_encoder("rad-dino", device="cpu")  # found in the models home
    assert encoder.name.startswith("rad-dino-")
    assert main(["models", "download", "dinov2-small", str(tmp_path / "mine"), "--quiet"]) == 0
    assert calls[1]["repo_id"] == "facebook/dinov2-small"
    assert create_encoder(f"dinov2-small:{tmp_path / 'mine'}").dim == 32
    listing = capsys.readouterr()
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    rad = next(line for line in table.splitlines() if line.startswith("rad-dino"))
    assert "MSRLA" in rad and "NO" in rad and "xray" in rad and "downloaded" in rad
    phikon = next(line for line in table.splitlines() if line.startswith("phikon"))
    assert "Owkin-NC" in phikon and "histology" in phikon and " download " in phikon
    assert "Loading weights" not in listing.err  # no progress bar per model load


def test_download_refuses_an_encoder_without_hub_weights() -> None:
    assert get_entry("efficientnet_lite0").weights is None
    assert main(["models", "download", "efficientnet_lite0", "/nonexistent/x"]) == 1


def test_hub_entries_carry_their_facts() -> None:
    facts = {
        name: (get_entry(name).licence.spdx, get_entry(name).licence.commercial,
               get_entry(name).modality, get_entry(name).weights.hub_id)
        for name in ("dinov2-small", "dinov2-base", "rad-dino", "phikon", "biomedclip")
    }  # fmt: skip
    assert facts["dinov2-small"] == ("Apache-2.0", True, "general", "facebook/dinov2-small")
    assert facts["rad-dino"] == ("MSRLA", False, "xray", "microsoft/rad-dino")
    assert facts["phikon"] == ("Owkin-NC", False, "histology", "owkin/phikon")
    assert facts["biomedclip"][:2] == ("MIT", True)
    assert get_entry("biomedclip").text and not get_entry("rad-dino").text


def test_encoder_for_a_group_records_and_shows_its_licence(
    dinov2_dir: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = images[0].parent
    for index in range(8):
        Image.open(images[index % 4]).rotate(90 * (index // 4 + 1)).save(folder / f"r{index}.png")
    out = tmp_path / "out"
    code = main(
        ["sort", str(folder), "--out", str(out), "--encoder-for", f"0=rad-dino:{dinov2_dir}",
         "--no-cache", "--no-audit"]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "medsort: warning: the weights of encoder rad-dino are licensed MSRLA" in captured.err
    assert "Licence: the weights of encoder rad-dino" in captured.out  # the closing summary
    run = json.loads((out / "run.json").read_text())
    assert run["encoder_licence"]["spdx"] == "Apache-2.0"  # the main encoder's
    info = run["encoder_for"]["0"]
    assert info["encoder"].startswith("rad-dino-") and info["dim"] == 32
    assert info["licence"]["spdx"] == "MSRLA" and info["licence"]["commercial"] is False
    assert "MSRLA" in (out / "report.html").read_text()


def test_processor_translation_without_a_crop_and_with_grey_statistics() -> None:
    config = hub.preprocess_from_processor(
        {"size": {"shortest_edge": 518}, "image_mean": [0.53], "image_std": 0.25, "resample": 2},
        hub.IMAGENET,
    )
    assert config == PreprocessConfig(
        size=518, mean=(0.53,) * 3, std=(0.25,) * 3, interpolation="bilinear", resize_mode="crop"
    )
    assert hub.preprocess_from_processor({}, hub.IMAGENET) == hub.IMAGENET
