"""BiomedCLIP's architecture, read from ``open_clip_config.json`` and the checkpoint's shapes.

The same description builds the real model and the tiny test models; nothing here needs
torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# timm ViT sizes: name -> (width, depth, heads).
_TIMM_VIT_SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
_TIMM_VIT_NAME = re.compile(r"^vit_(?P<size>[a-z]+)_patch(?P<patch>\d+)_(?P<image>\d+)")
_HEAD_WIDTH = 64  # per-head width of every standard ViT and BERT


@dataclass(frozen=True)
class VisionArch:
    """Layout of the ViT image trunk (defaults: timm ``vit_base_patch16_224``)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    eps: float = 1e-6


@dataclass(frozen=True)
class TextArch:
    """Layout of the BERT text tower (defaults: BiomedBERT-base, 256-token context)."""

    vocab_size: int = 30522
    width: int = 768
    depth: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12
    pad_id: int = 0
    context_length: int = 256
    proj_type: str = "mlp"


@dataclass(frozen=True)
class BiomedCLIPArch:
    """Both towers and the shared embedding width."""

    embed_dim: int = 512
    vision: VisionArch = field(default_factory=VisionArch)
    text: TextArch = field(default_factory=TextArch)


def _heads(width: int, head_width: int | None, named: tuple[int, int] | None) -> int:
    """Pick the head count: explicit head width, else the named model's, else 64-wide heads."""
    if head_width:
        heads = width // head_width
    elif named is not None and named[0] == width:
        heads = named[1]
    else:
        heads = max(1, width // _HEAD_WIDTH)
    if heads < 1 or width % heads:
        raise ValueError(f"Width {width} cannot be split into {heads} attention heads.")
    return heads


def _count_layers(shapes: Mapping[str, Sequence[int]], pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _vision_arch(
    cfg: Mapping[str, object], shapes: Mapping[str, Sequence[int]] | None
) -> VisionArch:
    pool = cfg.get("timm_pool", "avg")
    proj = cfg.get("timm_proj", "linear")
    if pool not in ("", "token") or proj != "linear" or cfg.get("timm_proj_bias", False):
        raise NotImplementedError(
            "Only BiomedCLIP's image head is supported (class-token pooling, "
            f"bias-free linear projection); got timm_pool={pool!r}, timm_proj={proj!r}."
        )
    # A standard timm name gives the layout; explicit open_clip keys override it.
    base = VisionArch()
    named: tuple[int, int] | None = None
    width, depth, patch, image = base.width, base.depth, base.patch_size, base.image_size
    match = _TIMM_VIT_NAME.match(str(cfg.get("timm_model_name") or ""))
    if match and match["size"] in _TIMM_VIT_SIZES:
        width, depth, heads = _TIMM_VIT_SIZES[match["size"]]
        named = (width, heads)
        patch, image = int(match["patch"]), int(match["image"])
    width, depth = int(cfg.get("width", width)), int(cfg.get("layers", depth))
    patch, image = int(cfg.get("patch_size", patch)), int(cfg.get("image_size", image))
    mlp_dim = int(width * float(cfg.get("mlp_ratio", 4.0)))
    if shapes is not None:  # the checkpoint is the authority on sizes
        width = int(shapes["visual.trunk.cls_token"][-1])
        patch = int(shapes["visual.trunk.patch_embed.proj.weight"][-1])
        tokens = int(shapes["visual.trunk.pos_embed"][1]) - 1
        image = math.isqrt(tokens) * patch
        depth = _count_layers(shapes, r"visual\.trunk\.blocks\.(\d+)\.")
        mlp_dim = int(shapes["visual.trunk.blocks.0.mlp.fc1.weight"][0])
    # open_clip's head_width (default 64) only counts next to an explicit width.
    head_width = cfg.get("head_width") if "width" in cfg else None
    heads = _heads(width, int(head_width) if head_width else None, named)
    return VisionArch(image, patch, width, depth, heads, mlp_dim)


def _text_arch(cfg: Mapping[str, object], shapes: Mapping[str, Sequence[int]] | None) -> TextArch:
    pooler = cfg.get("hf_pooler_type", "mean_pooler")
    proj_type = str(cfg.get("hf_proj_type", "mlp"))
    if pooler != "cls_last_hidden_state_pooler" or proj_type not in ("mlp", "linear"):
        raise NotImplementedError(
            "Only BiomedCLIP's text head is supported ([CLS] last hidden state, mlp or linear "
            f"projection); got hf_pooler_type={pooler!r}, hf_proj_type={proj_type!r}."
        )
    base = TextArch()
    width = int(cfg.get("width", base.width))
    depth = int(cfg.get("layers", base.depth))
    vocab = int(cfg.get("vocab_size", base.vocab_size)) if "width" in cfg else base.vocab_size
    intermediate, max_positions, type_vocab = 4 * width, base.max_positions, base.type_vocab_size
    if shapes is not None:
        prefix = "text.transformer."
        vocab, width = (int(n) for n in shapes[prefix + "embeddings.word_embeddings.weight"])
        max_positions = int(shapes[prefix + "embeddings.position_embeddings.weight"][0])
        type_vocab = int(shapes[prefix + "embeddings.token_type_embeddings.weight"][0])
        depth = _count_layers(shapes, r"text\.transformer\.encoder\.layer\.(\d+)\.")
        intermediate = int(shapes[prefix + "encoder.layer.0.intermediate.dense.weight"][0])
    explicit = int(cfg["heads"]) if "heads" in cfg else None
    heads = explicit or _heads(width, None, (base.width, base.heads))
    if width % heads:
        raise ValueError(f"Text width {width} cannot be split into {heads} attention heads.")
    return TextArch(
        vocab_size=vocab,
        width=width,
        depth=depth,
        heads=heads,
        intermediate=intermediate,
        max_positions=max_positions,
        type_vocab_size=type_vocab,
        pad_id=int(cfg.get("pad_id", 0)),
        context_length=int(cfg.get("context_length", base.context_length)),
        proj_type=proj_type,
    )


def arch_from_config(
    config: Mapping[str, object], shapes: Mapping[str, Sequence[int]] | None = None
) -> BiomedCLIPArch:
    """Derive the architecture from an ``open_clip_config.json`` and, optionally, a checkpoint.

    Parameters
    ----------
    config : Mapping
        The parsed ``open_clip_config.json`` (with a ``model_cfg`` key) or its ``model_cfg``.
        Standard names (``vit_base_patch16_224``, BiomedBERT-base) fix the layout; the
        open_clip keys ``width``/``layers``/``head_width``/``patch_size``/``image_size`` (vision)
        and ``width``/``heads``/``layers``/``vocab_size`` (text) override it.
    shapes : Mapping, optional
        Checkpoint tensor shapes by name. When given they decide every size that they show
        (all but the head counts).

    Returns
    -------
    BiomedCLIPArch
    """
    model_cfg = config.get("model_cfg", config)
    assert isinstance(model_cfg, Mapping)
    vision_cfg = model_cfg.get("vision_cfg", {})
    text_cfg = model_cfg.get("text_cfg", {})
    assert isinstance(vision_cfg, Mapping) and isinstance(text_cfg, Mapping)
    if "timm_model_name" not in vision_cfg or "hf_model_name" not in text_cfg:
        raise NotImplementedError(
            "Not a BiomedCLIP-style config: expected a timm ViT image tower "
            "(vision_cfg.timm_model_name) and a HuggingFace BERT text tower "
            "(text_cfg.hf_model_name)."
        )
    embed_dim = int(model_cfg.get("embed_dim", 512))
    if shapes is not None:
        embed_dim = int(shapes["visual.head.proj.weight"][0])
    return BiomedCLIPArch(embed_dim, _vision_arch(vision_cfg, shapes), _text_arch(text_cfg, shapes))
