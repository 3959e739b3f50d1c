"""Vision foundation models from the Hugging Face hub, run offline through ``transformers``.

Each model is one :class:`~medsort.embed.registry.EncoderEntry` below (hub id, licence,
preprocessing, modality, pooling); its weights are fetched once with
``medsort models download NAME [DIR]`` and then loaded from that folder with
``local_files_only`` (``--encoder NAME`` finds the models-home folder, ``--encoder NAME:DIR``
any other). ``hf:DIR`` loads any other ``transformers`` vision backbone folder (ViT, DINOv2,
...) with class-token pooling, its licence unknown to medsort.

Preprocessing is the folder's own ``preprocessor_config.json`` (what the model's
``AutoImageProcessor`` would do: resize, centre crop, mean and std), translated into a
:class:`~medsort.preprocess.PreprocessConfig`; the entry's values are used where the folder
has none. Needs ``medsort[hub]`` (torch and transformers), imported only when a model is built.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from medsort.embed.registry import EncoderEntry, Licence, WeightsSource, register
from medsort.embed.weights import files_digest
from medsort.preprocess import PreprocessConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILE = "preprocessor_config.json"
POOLINGS = ("cls", "mean", "cls+mean")
# PIL resampling codes in transformers' processor configs
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_HUB_FILES = ("config.json", PROCESSOR_FILE, "model.safetensors", "LICENSE*", "README.md")

APACHE = Licence("Apache-2.0", commercial=True, url="https://www.apache.org/licenses/LICENSE-2.0")
MSRLA = Licence(
    "MSRLA",
    commercial=False,
    url="https://huggingface.co/microsoft/rad-dino/blob/main/LICENSE",
    note="Microsoft Research License Agreement: research only, not for clinical use",
)
OWKIN_NC = Licence(
    "Owkin-NC",
    commercial=False,
    url="https://github.com/owkin/HistoSSLscaling/blob/main/LICENSE.txt",
    note="Owkin non-commercial licence",
)
IMAGENET = PreprocessConfig(interpolation="bicubic", resize_mode="crop")


class HubFilesError(FileNotFoundError):
    """A model folder lacks a file that a hub encoder needs."""


def check_hub_dir(directory: Path, name: str = "hf") -> None:
    """Raise :class:`HubFilesError` naming what ``directory`` lacks (and how to get it)."""
    directory = Path(directory)
    how = f"download it with `medsort models download {name} {directory}`"
    if not directory.is_dir():
        raise HubFilesError(f"Model folder {directory} of encoder {name} not found: {how}.")
    if not (directory / "config.json").is_file():
        raise HubFilesError(f"Model folder {directory} lacks config.json: {how}.")
    if not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise HubFilesError(
            f"Model folder {directory} lacks its weights ({' or '.join(WEIGHT_FILES)}): {how}."
        )


def preprocess_from_processor(
    processor: dict[str, Any], default: PreprocessConfig
) -> PreprocessConfig:
    """The :class:`PreprocessConfig` equal to a ``preprocessor_config.json``'s transform.

    ``size={"shortest_edge": S}`` with a centre crop ``C`` is ``resize_mode="crop"`` at
    ``C`` with ``crop_pct=C/S`` (DINOv2: 256 -> 224); ``size={"height": H, "width": H}``
    without a crop is ``"squash"`` (ViT); anything the file does not give is ``default``'s.
    """
    mean, std = (
        _three(processor.get(key), fallback)
        for key, fallback in (("image_mean", default.mean), ("image_std", default.std))
    )
    interpolation = _RESAMPLE.get(processor.get("resample", -1), default.interpolation)
    size, mode, crop_pct = default.size, default.resize_mode, default.crop_pct
    resize = processor.get("size")
    if isinstance(resize, int):
        resize = {"shortest_edge": resize}
    crop = processor.get("crop_size") if processor.get("do_center_crop", False) else None
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if isinstance(resize, dict) and "shortest_edge" in resize:
        short = int(resize["shortest_edge"])
        size = int(crop["height"]) if crop else short
        mode, crop_pct = "crop", size / short
    elif isinstance(resize, dict) and "height" in resize:
        size, mode, crop_pct = int(resize["height"]), "squash", 1.0
        if crop:
            raise NotImplementedError("A fixed resize followed by a centre crop is not supported.")
    return PreprocessConfig(
        size=size,
        mean=mean,
        std=std,
        interpolation=interpolation,
        resize_mode=mode,
        crop_pct=round(crop_pct, 6),
    )


def _three(values: Any, fallback: tuple[float, ...]) -> tuple[float, float, float]:
    """Per-channel values as three floats (one value, as grey models give, is repeated)."""
    if values is None:
        values = fallback
    if isinstance(values, (int, float)):
        values = [values]
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"Expected 1 or 3 channel values in the image processor, got {values}.")
    return (values[0], values[1], values[2])


def folder_preprocess(directory: Path, default: PreprocessConfig) -> PreprocessConfig:
    """``directory``'s ``preprocessor_config.json`` as a :class:`PreprocessConfig`, else
    ``default``."""
    path = Path(directory) / PROCESSOR_FILE
    if not path.is_file():
        return default
    return preprocess_from_processor(json.loads(path.read_text(encoding="utf-8")), default)


class HubEncoder:
    """A ``transformers`` vision backbone loaded from a local folder (an :class:`Encoder`).

    Parameters
    ----------
    path : str or Path
        The model folder (``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
        optionally ``preprocessor_config.json``).
    entry : str
        The registry name it was built as (the start of :attr:`name`).
    pooling : {"cls", "mean", "cls+mean"}
        One vector per image: the class token of the last hidden state, the mean of the
        patch tokens (register tokens left out), or both concatenated.
    preprocess : PreprocessConfig, optional
        Used where the folder has no ``preprocessor_config.json``.
    device : str
        ``auto`` (CUDA when torch sees one), ``cpu`` or ``cuda``.

    Attributes
    ----------
    name : str
        ``<entry>-<digest>``: the digest covers the weights, the preprocessing and the
        pooling, so the embedding cache never mixes two of them.
    config : PreprocessConfig
        What the images are prepared with.
    dim : int
        Feature length (hidden size, twice that for ``cls+mean``).
    """

    def __init__(
        self,
        path: str | Path,
        entry: str = "hf",
        pooling: str = "cls",
        preprocess: PreprocessConfig | None = None,
        device: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        from medsort.embed.runtime import choose_torch_device, inference_threads, tune_malloc

        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}.")
        directory = Path(path).expanduser()
        check_hub_dir(directory, entry)
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # e.g. "pooler weights newly initialised": unused
        hf_logging.disable_progress_bar()  # a bar per load, in every run
        try:
            model = AutoModel.from_pretrained(str(directory), local_files_only=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.pooling = pooling
        self.config = folder_preprocess(directory, preprocess or IMAGENET)
        hidden = int(model.config.hidden_size)
        self.dim = 2 * hidden if pooling == "cls+mean" else hidden
        self.n_prefix_tokens = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        weights = next(directory / f for f in WEIGHT_FILES if (directory / f).is_file())
        token = hashlib.sha1(f"{self.config}|{pooling}".encode()).hexdigest()[:6]
        self.name = f"{entry}-{files_digest([directory / 'config.json', weights])}{token}"
        tune_malloc()
        torch.set_num_threads(inference_threads())
        self.device = torch.device(choose_torch_device(device, torch.cuda.is_available()))
        self.model = model.eval().to(self.device)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Pooled last hidden state ``(B, dim)`` of a normalised ``(B, 3, S, S)`` batch."""
        import torch

        size = self.config.size
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, size, size):
            raise ValueError(f"Expected a (B, 3, {size}, {size}) batch, got {tuple(batch.shape)}.")
        with torch.inference_mode():
            pixels = torch.as_tensor(np.ascontiguousarray(batch, dtype=np.float32))
            hidden = self.model(pixel_values=pixels.to(self.device)).last_hidden_state
            cls = hidden[:, 0]
            patches = hidden[:, self.n_prefix_tokens :].mean(dim=1)
            if self.pooling == "cls":
                features = cls
            elif self.pooling == "mean":
                features = patches
            else:
                features = torch.cat([cls, patches], dim=1)
        return features.float().cpu().numpy()


def hub_entry(
    name: str,
    hub_id: str,
    licence: Licence,
    modality: str,
    summary: str,
    preprocess: PreprocessConfig = IMAGENET,
    pooling: str = "cls",
) -> EncoderEntry:
    """Register the hub model ``hub_id`` as encoder ``name``."""

    def create(path: str = "", device: str = "auto") -> HubEncoder:
        return HubEncoder(path, entry=name, pooling=pooling, preprocess=preprocess, device=device)

    return register(
        EncoderEntry(
            name=name,
            factory=create,
            preprocess=preprocess,
            weights=WeightsSource(hub_id, files=_HUB_FILES),
            licence=licence,
            modality=modality,
            pooling=pooling,
            needs="medsort[hub]",
            summary=f"{summary} (Hugging Face {hub_id})",
            argument="DIR",
            check=lambda folder: check_hub_dir(folder, name),
        )
    )


DINOV2_CROP = PreprocessConfig(interpolation="bicubic", resize_mode="crop", crop_pct=0.875)
hub_entry(
    "dinov2-small",
    "facebook/dinov2-small",
    APACHE,
    "general",
    "DINOv2 ViT-S/14, self-supervised on 142M natural images; 384-d",
    DINOV2_CROP,
)
hub_entry(
    "dinov2-base",
    "facebook/dinov2-base",
    APACHE,
    "general",
    "DINOv2 ViT-B/14, self-supervised on 142M natural images; 768-d",
    DINOV2_CROP,
)
hub_entry(
    "rad-dino",
    "microsoft/rad-dino",
    MSRLA,
    "xray",
    "RAD-DINO ViT-B/14, DINOv2 continued on chest X-rays; 768-d",
    PreprocessConfig(size=518, interpolation="bicubic", resize_mode="crop"),
)
hub_entry(
    "phikon",
    "owkin/phikon",
    OWKIN_NC,
    "histology",
    "Phikon ViT-B/16, iBOT on 40M H&E histology tiles (TCGA); 768-d",
    PreprocessConfig(interpolation="bicubic", resize_mode="squash"),
)


def _create_any(path: str = "", device: str = "auto") -> HubEncoder:
    if not path:
        raise ValueError("hf needs a model folder: --encoder hf:DIR (a transformers vision model).")
    return HubEncoder(path, entry="hf", device=device)


register(
    EncoderEntry(
        name="hf",
        factory=_create_any,
        preprocess=IMAGENET,
        modality="any",
        pooling="cls",
        needs="medsort[hub]",
        summary="any transformers vision backbone folder (class token); licence: the folder's",
        argument="DIR",
    )
)
