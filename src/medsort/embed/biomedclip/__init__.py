"""BiomedCLIP (Zhang et al., arXiv 2303.00915) image and text encoder, without open_clip.

The Hugging Face repo ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` holds an
open_clip ``CustomTextCLIP``: a timm ViT-B/16 image tower with a bias-free projection
(:mod:`.vision`), a BiomedBERT text tower with an MLP projection (:mod:`.text`, tokens from
:mod:`.tokenizer`) and ``logit_scale``. medsort rebuilds both towers in torch and
``transformers`` with the checkpoint's parameter names (:mod:`.model`), so
``open_clip_pytorch_model.bin`` loads with ``strict=True``; the architecture comes from
``open_clip_config.json`` and the checkpoint's shapes (:mod:`.arch`), so the same code builds
the real model and tiny test models. :mod:`.files` checks a model folder; :mod:`.encoder` is
the encoder itself.

Preprocessing follows open_clip's evaluation transform: 224 px, bicubic, CLIP mean and std,
scaling the shorter side and centre-cropping (``resize_mode="crop"``); ``resize_mode="pad"``
keeps image borders, at some cost in fidelity to training.

This file registers the ``biomedclip`` entry only (no torch is imported until it is built);
the weights are fetched once with ``medsort models download biomedclip [DIR]``.
"""

from __future__ import annotations

from typing import Any

from medsort.embed.biomedclip.config import LICENCE, PREPROCESS, WEIGHTS
from medsort.embed.biomedclip.files import check_model_dir
from medsort.embed.registry import EncoderEntry, register
from medsort.lazy import lazy_exports


def create_biomedclip(path: str = "", **kwargs: Any) -> Any:
    """``create_encoder("biomedclip:/dir")``: BiomedCLIP loaded from a local directory."""
    if not path:
        raise ValueError(
            "BiomedCLIP needs its model directory: use `biomedclip:/path/to/dir` (get the files "
            "with `medsort models download biomedclip DIR`)."
        )
    from medsort.embed.biomedclip.encoder import BiomedCLIPEncoder  # torch, transformers

    return BiomedCLIPEncoder(path, **kwargs)


ENTRY = register(
    EncoderEntry(
        name="biomedclip",
        factory=create_biomedclip,
        preprocess=PREPROCESS,
        text=True,
        weights=WEIGHTS,
        licence=LICENCE,
        modality="biomedical",
        pooling="cls",
        needs="medsort[hub]",
        summary="BiomedCLIP ViT-B/16 + PubMedBERT (image and text, names groups zero-shot)",
        argument="DIR",
        check=check_model_dir,
    )
)

_EXPORTS = {
    **dict.fromkeys(
        ["CHECKPOINT_FILE", "CLIP_MEAN", "CLIP_STD", "CONFIG_FILE", "HF_REPO_ID",
         "TOKENIZER_FILES"],
        "medsort.embed.biomedclip.config",
    ),
    **dict.fromkeys(
        ["BiomedCLIPArch", "TextArch", "VisionArch", "arch_from_config"],
        "medsort.embed.biomedclip.arch",
    ),
    **dict.fromkeys(
        ["BiomedCLIPFilesError", "weights_digest"], "medsort.embed.biomedclip.files"
    ),
    **dict.fromkeys(["BiomedCLIPModel", "load_weights"], "medsort.embed.biomedclip.model"),
    **dict.fromkeys(["VisionTower", "VisionTransformer"], "medsort.embed.biomedclip.vision"),
    **dict.fromkeys(["TextTower", "bert_config"], "medsort.embed.biomedclip.text"),
    **dict.fromkeys(["Tokenizer", "clean_text"], "medsort.embed.biomedclip.tokenizer"),
    "BiomedCLIPEncoder": "medsort.embed.biomedclip.encoder",
}  # fmt: skip
__all__ = sorted([*_EXPORTS, "ENTRY", "check_model_dir", "create_biomedclip"])

__getattr__ = lazy_exports(__name__, _EXPORTS)
