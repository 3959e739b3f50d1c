"""The BiomedCLIP encoder: a model folder loaded into both towers, behind medsort's protocol."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from medsort.embed.biomedclip.arch import arch_from_config
from medsort.embed.biomedclip.config import (
    CHECKPOINT_FILE,
    CLIP_MEAN,
    CLIP_STD,
    CONFIG_FILE,
    LICENCE,
)
from medsort.embed.biomedclip.files import check_model_dir, weights_digest
from medsort.embed.biomedclip.model import BiomedCLIPModel, load_weights
from medsort.embed.biomedclip.tokenizer import Tokenizer
from medsort.embed.runtime import DEVICES, choose_torch_device
from medsort.preprocess import PreprocessConfig


class BiomedCLIPEncoder:
    """BiomedCLIP image and text encoder in one 512-d space (a ``TextEncoder``).

    Parameters
    ----------
    path : str or Path
        A local copy of the Hugging Face repo ``microsoft/BiomedCLIP-PubMedBERT_256-
        vit_base_patch16_224``: ``open_clip_config.json``, ``open_clip_pytorch_model.bin``
        and ``vocab.txt`` (or ``tokenizer.json``).
    resize_mode : str
        ``"crop"`` (default) matches open_clip's preprocessing (shorter side to 224, centre
        crop); ``"pad"`` keeps the whole image.
    device : str or torch.device
        Where the model runs; ``"auto"`` (default) is CUDA when torch sees one, else CPU.

    Attributes
    ----------
    logit_scale : float
        The trained temperature, already exponentiated (open_clip's
        ``model.logit_scale.exp()``): multiply cosine similarities by it to get logits.
    """

    def __init__(
        self, path: str | Path, resize_mode: str = "crop", device: str | torch.device = "auto"
    ) -> None:
        directory = Path(path).expanduser()
        check_model_dir(directory)
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        state = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        if "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        try:
            arch = arch_from_config(config, {k: tuple(v.shape) for k, v in state.items()})
        except KeyError as error:
            raise ValueError(
                f"{directory / CHECKPOINT_FILE} is not a BiomedCLIP checkpoint: no {error}."
            ) from error
        model = BiomedCLIPModel(arch)
        load_weights(model, state)
        del state
        if isinstance(device, str) and device in DEVICES:
            device = choose_torch_device(device, torch.cuda.is_available())
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.arch = arch
        self.dim = arch.embed_dim
        self.context_length = arch.text.context_length
        self.logit_scale = float(model.logit_scale.detach().exp())
        # crop (open_clip's transform) keeps the historical name; pad features differ
        suffix = "" if resize_mode == "crop" else f"-{resize_mode}"
        self.name = f"biomedclip-{weights_digest(directory)}{suffix}"
        preprocess = config.get("preprocess_cfg", {})
        self.config = PreprocessConfig(
            size=arch.vision.image_size,
            mean=tuple(preprocess.get("mean", CLIP_MEAN)),
            std=tuple(preprocess.get("std", CLIP_STD)),
            interpolation=preprocess.get("interpolation", "bicubic"),
            resize_mode=resize_mode,
        )
        self.tokenizer = Tokenizer(directory, self.context_length)
        self.licence = LICENCE

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(len(texts), context_length)``, padded and truncated like open_clip."""
        return self.tokenizer(list(texts))

    @torch.inference_mode()
    def embed(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """L2-normalised image features ``(B, dim)`` of a normalised ``(B, 3, S, S)`` batch."""
        batch = torch.as_tensor(batch)
        size = self.config.size
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, size, size):
            raise ValueError(f"Expected a (B, 3, {size}, {size}) batch, got {tuple(batch.shape)}.")
        features = self.model.encode_image(batch.to(self.device, torch.float32))
        return features.float().cpu().numpy()

    @torch.inference_mode()
    def embed_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised text features ``(len(texts), dim)``."""
        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(texts), batch_size):
            ids = self.tokenize(list(texts[start : start + batch_size])).to(self.device)
            out.append(self.model.encode_text(ids).float().cpu().numpy())
        return np.concatenate(out)
