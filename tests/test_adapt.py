"""Self-supervised adaptation (medsort adapt): augmentations, saving, reloading, resuming."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsort.adapt.augment import augment, is_grey
from medsort.demo import demo_folder
from medsort.embed.registry import create_encoder
from tests.conftest import shared_set

# Small and quick: two views, two epochs of a few steps.
FAST = {"views": 2, "batch_size": 8, "epochs": 2, "patience": 5, "device": "cpu", "quiet": True}


def _copy(sources: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for source in sources:
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """20 real demo images (28x28 chest X-ray and breast ultrasound, and colour ones)."""
    files = sorted(demo_folder().glob("*.png"))
    return _copy(files[:: max(1, len(files) // 20)][:20], tmp_path / "input")


def _pattern(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)


def test_augment_is_fixed_by_its_seed_and_keeps_size() -> None:
    image = _pattern(0)
    a = augment(image, False, np.random.default_rng(1))
    b = augment(image, False, np.random.default_rng(1))
    c = augment(image, False, np.random.default_rng(2))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_grey_images_stay_grey_and_colour_keeps_its_colour() -> None:
    grey = np.repeat(_pattern(3)[:, :, :1], 3, axis=2)
    assert is_grey(grey)
    for seed in range(5):
        view = augment(grey, True, np.random.default_rng(seed))
        assert np.array_equal(view[..., 0], view[..., 1])
        assert np.array_equal(view[..., 1], view[..., 2])
    pink = np.zeros((224, 224, 3), np.uint8)
    pink[...] = (200, 120, 170)  # an eosin-like colour: stain jitter is mild, no hue shift
    assert not is_grey(pink)
    for seed in range(5):
        mean = augment(pink, False, np.random.default_rng(seed)).reshape(-1, 3).mean(0)
        assert mean[0] > mean[2] > mean[1]
        assert np.abs(mean - (200, 120, 170)).max() < 40


def test_grey_images_are_never_flipped() -> None:
    # A bright left half (the heart's side matters in a chest X-ray): no view mirrors it.
    image = np.zeros((224, 224, 3), np.uint8)
    image[:, :112] = 220
    for seed in range(20):
        view = augment(image, True, np.random.default_rng(seed)).astype(float)
        assert view[:, :40].mean() > view[:, -40:].mean()


def test_the_folder_is_read_as_the_sorts_read_pass_reads_it(tmp_path: Path) -> None:
    """At the draft size (a 2000-px PNG box-reduced by 4): the inputs the adapted encoder
    is later given by ``medsort sort``."""
    from PIL import Image

    from medsort.adapt.data import decode_folder
    from medsort.embed.stream import decode_options
    from medsort.io.readers import read_file
    from medsort.preprocess import to_model_input

    source = sorted(demo_folder().glob("*.png"))[0]
    path = tmp_path / "images" / "large.png"
    path.parent.mkdir()
    Image.open(source).convert("RGB").resize((2000, 1800), Image.Resampling.BICUBIC).save(path)
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    decoded = decode_folder(path.parent, encoder.config, quiet=True)
    as_sorted = read_file(path, decode_options(None, encoder))[0]
    assert as_sorted.drafted
    np.testing.assert_array_equal(
        decoded.pixels[0], to_model_input(as_sorted.rgb(), encoder.config)
    )


def test_adapted_encoder_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="adapted:MODEL_DIR"):
        create_encoder("adapted")
    with pytest.raises(FileNotFoundError, match="medsort adapt"):
        create_encoder(f"adapted:{tmp_path}")
    (tmp_path / "encoder.onnx").write_bytes(b"")
    (tmp_path / "adapted.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapted.json"):
        create_encoder(f"adapted:{tmp_path}")


def test_adapt_help_imports_no_torch() -> None:
    code = (
        "import sys; from medsort.cli import main\n"
        "try:\n    main(['adapt', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from medsort.embed.registry import create_encoder, list_encoders\n"
        "assert 'adapted' in list_encoders() and 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--epochs" in done.stdout and "--seed" in done.stdout


def _features(model_dir: Path, pixels: np.ndarray) -> np.ndarray:
    return create_encoder(f"adapted:{model_dir}", device="cpu").embed(pixels)


@pytest.mark.slow
def test_saved_encoder_reloads_to_the_same_features(small_folder: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from medsort.adapt import Adapter
    from medsort.embed.export import PooledFeatures

    adapter = Adapter(**FAST, seed=3).fit(small_folder, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "adapted.json").read_text())
    assert config["trained_on"]["n_files"] == 20
    assert config["training"]["params"]["seed"] == 3
    assert config["licence"].startswith("Apache-2.0")
    assert not (tmp_path / "model" / "checkpoint.pt").exists()  # only the encoder is kept
    pixels = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    onnx = _features(tmp_path / "model", pixels)
    with torch.no_grad():
        reference = PooledFeatures(adapter.model_).eval()(torch.from_numpy(pixels)).numpy()
    cosine = (
        (onnx * reference).sum(1) / np.linalg.norm(onnx, axis=1) / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.9999
    assert np.array_equal(onnx, _features(tmp_path / "model", pixels))
    # The last blocks and the head were trained; the frozen trunk was not touched.
    from medsort.embed.efficientnet import load_lite_model

    base_model, adapted = load_lite_model("efficientnet_lite0"), adapter.model_
    assert not torch.allclose(base_model._conv_head.weight, adapted._conv_head.weight)
    assert not torch.allclose(
        base_model._blocks[15]._project_conv.weight, adapted._blocks[15]._project_conv.weight
    )
    for name, value in base_model._blocks[:14].state_dict().items():
        assert torch.equal(value, adapted._blocks[:14].state_dict()[name]), name
    assert torch.equal(base_model._conv_stem.weight, adapted._conv_stem.weight)
    # Adapted, not the ImageNet weights: different features, and a name of its own.
    base = create_encoder("efficientnet_lite0", device="cpu")
    assert not np.allclose(base.embed(pixels), onnx, atol=1e-3)
    assert create_encoder(f"adapted:{tmp_path / 'model'}").name.startswith("adapted-")
    # A second fit on the same images with the same parameters keeps the encoder.
    again = Adapter(**FAST, seed=3).fit(small_folder, tmp_path / "model")
    assert again.model_ is None and again.history_ == adapter.history_


@pytest.mark.slow
def test_resume_after_interruption_continues_from_the_saved_epoch(
    small_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from medsort.adapt import Adapter

    whole = Adapter(**FAST, seed=1).fit(small_folder, tmp_path / "whole")

    def interrupt(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Adapter(**FAST, seed=1).fit(small_folder, tmp_path / "resumed", on_epoch=interrupt)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "resumed" / "adapted.json").exists()
    seen: list[int] = []
    resumed = Adapter(**FAST, seed=1).fit(
        small_folder, tmp_path / "resumed", on_epoch=lambda epoch, record: seen.append(epoch)
    )
    assert seen == [2]  # epoch 1 was kept, not redone

    # The same steps as the uninterrupted run: equal up to the float rounding of
    # multi-threaded CPU kernels (the last digit of the rounded criterion may differ).
    def criteria(history: list[dict]) -> np.ndarray:
        return np.array([[h["criterion"], h["train_loss"] or 0.0] for h in history])

    assert [h["epoch"] for h in resumed.history_] == [0, 1, 2]
    assert np.allclose(criteria(resumed.history_), criteria(whole.history_), atol=1e-3)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    a, b = _features(tmp_path / "whole", pixels), _features(tmp_path / "resumed", pixels)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()
    # Another seed is another run; other images in a used folder need --overwrite.
    other = Adapter(**FAST, seed=2).fit(small_folder, tmp_path / "other")
    assert not np.allclose(criteria(other.history_), criteria(whole.history_), atol=1e-3)
    with pytest.raises(ValueError, match="overwrite"):
        Adapter(**FAST, seed=2).fit(small_folder, tmp_path / "whole")


@pytest.mark.slow
def test_adaptation_improves_the_label_free_criterion_on_real_histology(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from medsort.adapt import Adapter

    images = sorted((shared_set("lung-histology") / "images").glob("*"))
    folder = _copy(images[::20], tmp_path / "lung")  # 60 real H&E tiles, labels never read
    params = {**FAST, "epochs": 4, "batch_size": 16, "views": 3}
    adapter = Adapter(**params, seed=0).fit(folder, tmp_path / "model")
    criterion = [h["criterion"] for h in adapter.history_]
    assert adapter.best_epoch_ > 0
    assert min(criterion[1:]) < criterion[0]


@pytest.mark.slow
def test_sort_adapt_sorts_with_the_adapted_encoder(small_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from medsort.cli import main

    out = tmp_path / "out"
    argv = ["sort", str(small_folder), "--out", str(out), "--adapt", "--no-audit", "--quiet"]
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["encoder"].startswith("adapted-")
    assert (out / "adapted" / "adapted.json").is_file()
    assert len((out / "assignments.csv").read_text().splitlines()) == 21
    assert all(used["k_from"] in ("reference", "cnn") for used in run["views_per_modality_group"])


def test_adapted_encoder_groups_are_counted_on_its_base_encoder(tmp_path: Path) -> None:
    from medsort.sorter import Sorter

    config = {"base_encoder": "efficientnet_lite0", "trained_on": {"n_images": 10, "n_grey": 3}}
    (tmp_path / "adapted.json").write_text(json.dumps(config))
    adapted = Sorter(encoder=f"adapted:{tmp_path}")
    assert adapted._reference_spec() == "efficientnet_lite0"
    assert not adapted._groups_on_reference()  # mostly colour: groups in the adapted space
    assert Sorter()._reference_spec() is None and not Sorter()._groups_on_reference()
    assert Sorter(encoder=f"adapted:{tmp_path}", reference_encoder=None)._reference_spec() is None

    config["trained_on"]["n_grey"] = 8  # mostly grey: the ImageNet features group
    (tmp_path / "adapted.json").write_text(json.dumps(config))
    assert Sorter(encoder=f"adapted:{tmp_path}")._groups_on_reference()


@pytest.mark.slow
def test_grey_folder_adapted_keeps_the_imagenet_groups(tmp_path: Path) -> None:
    """On grey images adapting made every dev set's groups worse, so an encoder adapted on
    a grey folder groups in the ImageNet features (same groups as without adapting, new
    images too) while its own vectors stay the embeddings; ``reference_encoder=None``
    groups in the adapted vectors (so the test can tell the two apart)."""
    pytest.importorskip("torch")
    from medsort.adapt import Adapter
    from medsort.sorter import Sorter

    images = sorted((shared_set("breast-ultrasound-28") / "images").glob("*"))
    folder = _copy(images[::10], tmp_path / "breast")  # 55 real grey ultrasound images
    Adapter(**{**FAST, "epochs": 3}, seed=0).fit(folder, tmp_path / "model")
    spec = f"adapted:{tmp_path / 'model'}"
    kwargs = {"cache": False, "progress": False}

    imagenet = Sorter(**kwargs).fit(folder)
    adapted = Sorter(encoder=spec, **kwargs).fit(folder)
    alone = Sorter(encoder=spec, reference_encoder=None, **kwargs).fit(folder)

    assert adapted.groups_on_reference_
    assert np.array_equal(adapted.labels_, imagenet.labels_)
    assert not np.allclose(adapted.result_.embeddings, imagenet.result_.embeddings)
    assert np.allclose(alone.result_.embeddings, adapted.result_.embeddings)
    assert not alone.groups_on_reference_
    assert "grouped_on" not in alone.result_.run.views_per_modality_group[0]
    new = sorted(folder.glob("*"))[:5]
    assert list(adapted.predict(new)["group"]) == list(imagenet.predict(new)["group"])
    run = adapted.result_.run
    assert all(used["grouped_on"] == "efficientnet_lite0" for used in run.views_per_modality_group)
