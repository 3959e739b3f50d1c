"""The encoder registry: entries register themselves; the registry names none of them."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medsort.embed import registry
from medsort.embed.registry import (
    EncoderEntry,
    Licence,
    LicenceWarning,
    WeightsSource,
    create_encoder,
    describe_encoder,
    encoder_has_text,
    get_entry,
    list_encoders,
    register,
)
from medsort.preprocess import PreprocessConfig

REGISTRY_FILE = Path(registry.__file__)


class Probe:
    config = PreprocessConfig(size=8)
    dim = 2

    def __init__(self, folder: str = "", device: str = "auto") -> None:
        self.folder = folder
        self.name = f"probe-{folder}"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), self.dim), np.float32)


@pytest.fixture
def probe_entry() -> Iterator[EncoderEntry]:
    entry = register(
        EncoderEntry(
            name="probe",
            factory=Probe,
            licence=Licence("CC-BY-NC-4.0", commercial=False, note="a test licence"),
            modality="xray",
            argument="DIR",
        )
    )
    yield entry
    del registry._REGISTRY["probe"]


def test_registry_imports_and_names_no_plugin() -> None:
    tree = ast.parse(REGISTRY_FILE.read_text(encoding="utf-8"))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    plugins = {"medsort.embed.onnx_encoder", "medsort.embed.efficientnet",
               "medsort.embed.biomedclip", "medsort.embed.hub"}  # fmt: skip
    assert not imported & plugins
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    for name in ("biomedclip", "efficientnet_lite0", "rad-dino", "dinov2"):
        assert not any(s == name or s.startswith(name + ":") for s in strings), name


def test_a_prefix_resolver_is_one_registration(probe_entry: EncoderEntry) -> None:
    """What ``adapted:DIR`` needs: the part after the colon reaches the factory."""
    assert "probe" in list_encoders()
    with pytest.warns(LicenceWarning, match="CC-BY-NC-4.0 \\(a test licence\\)"):
        encoder = create_encoder("probe:/some/folder:with:colons", device="cpu")
    assert isinstance(encoder, Probe) and encoder.folder == "/some/folder:with:colons"
    assert encoder.licence is probe_entry.licence  # the entry's licence travels with it
    described = describe_encoder(encoder, "probe:/some/folder")
    assert described["entry"] == "probe" and described["modality"] == "xray"
    assert described["commercial"] is False and "not for commercial use" in described["warning"]


def test_unknown_encoder_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Unknown encoder 'nope'.*efficientnet_lite0"):
        create_encoder("nope")


def test_text_capability_is_known_without_building() -> None:
    assert encoder_has_text("biomedclip:/anywhere")
    assert not encoder_has_text("efficientnet_lite0")
    assert not encoder_has_text("nope")


def test_own_encoder_objects_have_an_unknown_licence_and_no_warning() -> None:
    described = describe_encoder(Probe(), None)
    assert described["spdx"] == "unknown" and described["warning"] is None


def test_models_home_entry_without_weights_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSORT_MODELS_DIR", str(tmp_path))
    register(EncoderEntry("probe-hub", Probe, weights=WeightsSource("org/probe")))
    try:
        with pytest.raises(FileNotFoundError, match="medsort models download probe-hub"):
            create_encoder("probe-hub")
        (tmp_path / "probe-hub").mkdir()
        assert create_encoder("probe-hub").folder == str(tmp_path / "probe-hub")
    finally:
        del registry._REGISTRY["probe-hub"]


def test_missing_extra_is_named() -> None:
    def needs_torch(*args: object, **kwargs: object) -> Probe:
        raise ImportError("No module named 'torch'")

    register(EncoderEntry("probe-torch", needs_torch, needs="medsort[hub]"))
    try:
        with pytest.raises(ImportError, match=r"pip install 'medsort\[hub\]'"):
            create_encoder("probe-torch")
    finally:
        del registry._REGISTRY["probe-torch"]


def test_default_encoder_is_permissive() -> None:
    entry = get_entry("efficientnet_lite0")
    assert entry.licence.spdx == "Apache-2.0" and entry.licence.commercial
    with warnings.catch_warnings():
        warnings.simplefilter("error", LicenceWarning)
        create_encoder("efficientnet_lite0", device="cpu")
