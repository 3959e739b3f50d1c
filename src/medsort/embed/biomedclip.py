"""BiomedCLIP (Zhang et al., arXiv 2303.00915) image and text encoder, without open_clip.

The Hugging Face repo ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` holds an
open_clip ``CustomTextCLIP``:

* image tower ``visual``: a timm ``vit_base_patch16_224`` trunk (pre-norm ViT-B/16, class
  token, learned position embeddings, final LayerNorm, the class token's output as the
  pooled feature, no classifier head) followed by ``head.proj``, a bias-free linear
  projection 768 -> 512;
* text tower ``text``: a HuggingFace BERT (BiomedBERT-base, without its pooler) whose last
  hidden state at the ``[CLS]`` position goes through ``proj``, a bias-free two-layer MLP
  768 -> 640 -> 512 with a GELU in between; padding tokens are masked out;
* ``logit_scale``, the log of the temperature that multiplies cosine similarities.

This module rebuilds both towers in plain torch (the ViT) and ``transformers`` (the BERT),
with parameter names that match the checkpoint, so ``open_clip_pytorch_model.bin`` loads
with ``strict=True``. The architecture comes from ``open_clip_config.json`` and from the
shapes in the checkpoint, so the same code builds the real model and small test models.

Preprocessing follows open_clip's evaluation transform: 224 px, bicubic, CLIP mean and std,
scaling the shorter side and centre-cropping (``resize_mode="crop"``). Pass
``resize_mode="pad"`` to keep image borders instead, at some cost in fidelity to training.

Needs ``transformers`` (``pip install medsort[biomedclip]``); the weights are fetched once
with ``medsort models download biomedclip DIR`` (see :func:`download_biomedclip`).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from transformers import BertConfig, BertModel, BertTokenizer

from medsort.embed.registry import register_encoder
from medsort.embed.runtime import DEVICES, choose_torch_device
from medsort.preprocess import PreprocessConfig

HF_REPO_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
CONFIG_FILE = "open_clip_config.json"
CHECKPOINT_FILE = "open_clip_pytorch_model.bin"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Buffers that older ``transformers`` versions saved with BERT and newer ones do not register.
_STALE_BUFFERS = (
    "text.transformer.embeddings.position_ids",
    "text.transformer.embeddings.token_type_ids",
)
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


class BiomedCLIPFilesError(FileNotFoundError):
    """A BiomedCLIP model directory lacks a file that the encoder needs."""


# --------------------------------------------------------------------------------------
# Architecture description
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Image tower: a timm-compatible ViT in plain torch
# --------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches, linearly embedded by a strided convolution."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, width)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_width)
        out = functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU between them."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, arch: VisionArch) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(arch.width, eps=arch.eps)
        self.attn = Attention(arch.width, arch.heads)
        self.norm2 = nn.LayerNorm(arch.width, eps=arch.eps)
        self.mlp = Mlp(arch.width, arch.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT trunk laid out like timm's ``VisionTransformer`` with ``global_pool="token"``.

    Returns the final-LayerNorm output at the class token, ``(B, width)``.
    """

    def __init__(self, arch: VisionArch) -> None:
        super().__init__()
        if arch.image_size % arch.patch_size:
            raise ValueError(
                f"Image size {arch.image_size} is not a multiple of {arch.patch_size}."
            )
        self.image_size = arch.image_size
        patches = (arch.image_size // arch.patch_size) ** 2
        self.patch_embed = PatchEmbed(arch.patch_size, arch.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, arch.width))
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(arch.width, eps=arch.eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


class VisionTower(nn.Module):
    """open_clip's ``TimmModel`` layout: ``trunk`` then ``head.proj`` (bias-free)."""

    def __init__(self, arch: VisionArch, embed_dim: int) -> None:
        super().__init__()
        self.trunk = VisionTransformer(arch)
        self.head = nn.Sequential(OrderedDict(proj=nn.Linear(arch.width, embed_dim, bias=False)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pixels))


# --------------------------------------------------------------------------------------
# Text tower: transformers' BERT, [CLS] last hidden state, bias-free MLP projection
# --------------------------------------------------------------------------------------


def bert_config(arch: TextArch) -> BertConfig:
    """The ``transformers`` config of the text tower's BERT (dropout off)."""
    return BertConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.width,
        num_hidden_layers=arch.depth,
        num_attention_heads=arch.heads,
        intermediate_size=arch.intermediate,
        max_position_embeddings=arch.max_positions,
        type_vocab_size=arch.type_vocab_size,
        layer_norm_eps=arch.eps,
        hidden_act="gelu",
        pad_token_id=arch.pad_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


class TextTower(nn.Module):
    """open_clip's ``HFTextEncoder`` layout: ``transformer`` (BERT) then ``proj``."""

    def __init__(self, arch: TextArch, embed_dim: int) -> None:
        super().__init__()
        self.pad_id = arch.pad_id
        self.transformer = BertModel(bert_config(arch), add_pooling_layer=False)
        if arch.proj_type == "mlp":
            hidden = (arch.width + embed_dim) // 2
            self.proj: nn.Module = nn.Sequential(
                nn.Linear(arch.width, hidden, bias=False),
                nn.GELU(),
                nn.Linear(hidden, embed_dim, bias=False),
            )
        else:
            self.proj = nn.Linear(arch.width, embed_dim, bias=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = (token_ids != self.pad_id).long()
        hidden = self.transformer(input_ids=token_ids, attention_mask=mask).last_hidden_state
        return self.proj(hidden[:, 0])


class BiomedCLIPModel(nn.Module):
    """Both towers and ``logit_scale``, named as in ``open_clip_pytorch_model.bin``.

    Parameters
    ----------
    arch : BiomedCLIPArch
        Sizes of both towers; the default is the real BiomedCLIP.
    """

    def __init__(self, arch: BiomedCLIPArch | None = None) -> None:
        super().__init__()
        arch = arch or BiomedCLIPArch()
        self.arch = arch
        self.visual = VisionTower(arch.vision, arch.embed_dim)
        self.text = TextTower(arch.text, arch.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features, ``(B, embed_dim)``."""
        return functional.normalize(self.visual(pixels), dim=-1)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised text features, ``(B, embed_dim)``."""
        return functional.normalize(self.text(token_ids), dim=-1)


def load_weights(model: BiomedCLIPModel, state: dict[str, torch.Tensor]) -> None:
    """Load an open_clip BiomedCLIP state dict into ``model`` with ``strict=True``.

    Buffers that older ``transformers`` saved with BERT (``position_ids``) are dropped and
    a one-element ``logit_scale`` is reshaped to the scalar parameter, as open_clip does.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or k not in _STALE_BUFFERS}
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------


def _missing_files_message(directory: Path, missing: str) -> str:
    return (
        f"BiomedCLIP directory {directory} lacks {missing}. Download the model with "
        f"`medsort models download biomedclip {directory}` (Hugging Face repo {HF_REPO_ID})."
    )


def check_model_dir(directory: Path) -> None:
    """Raise :class:`BiomedCLIPFilesError` naming the first file ``directory`` lacks."""
    if not directory.is_dir():
        raise BiomedCLIPFilesError(
            _missing_files_message(directory, "everything (not a directory)")
        )
    for name in (CONFIG_FILE, CHECKPOINT_FILE):
        if not (directory / name).is_file():
            raise BiomedCLIPFilesError(_missing_files_message(directory, name))
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise BiomedCLIPFilesError(
            _missing_files_message(directory, " or ".join(TOKENIZER_FILES) + " (the tokenizer)")
        )


def weights_digest(directory: Path, chunk: int = 1 << 20) -> str:
    """Short content hash of the config and checkpoint (size plus first and last MiB)."""
    digest = hashlib.sha1((directory / CONFIG_FILE).read_bytes())
    checkpoint = directory / CHECKPOINT_FILE
    size = checkpoint.stat().st_size
    digest.update(str(size).encode())
    with checkpoint.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:10]


def clean_text(text: str) -> str:
    """open_clip's ``whitespace`` cleaning: fix mojibake (if ftfy is installed), unescape
    HTML entities, collapse whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text))
    return " ".join(text.split())


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
        self.name = f"biomedclip-{weights_digest(directory)}"
        preprocess = config.get("preprocess_cfg", {})
        self.config = PreprocessConfig(
            size=arch.vision.image_size,
            mean=tuple(preprocess.get("mean", CLIP_MEAN)),
            std=tuple(preprocess.get("std", CLIP_STD)),
            interpolation=preprocess.get("interpolation", "bicubic"),
            resize_mode=resize_mode,
        )
        self.tokenizer = BertTokenizer.from_pretrained(str(directory))

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(len(texts), context_length)``, padded and truncated like open_clip."""
        return self.tokenizer(
            [clean_text(t) for t in texts],
            max_length=self.context_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids

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


@register_encoder("biomedclip", text=True)
def create_biomedclip(path: str = "", **kwargs: object) -> BiomedCLIPEncoder:
    """``create_encoder("biomedclip:/dir")``: BiomedCLIP loaded from a local directory."""
    if not path:
        raise ValueError(
            "BiomedCLIP needs its model directory: use `biomedclip:/path/to/dir` (get the files "
            "with `medsort models download biomedclip DIR`)."
        )
    return BiomedCLIPEncoder(path, **kwargs)  # type: ignore[arg-type]


def download_biomedclip(target_dir: Path) -> Path:
    """Download BiomedCLIP's open_clip files from Hugging Face into ``target_dir``.

    Parameters
    ----------
    target_dir : Path
        Where the files go (created if needed).

    Returns
    -------
    Path
        ``target_dir``, ready for ``BiomedCLIPEncoder(target_dir)``.
    """
    from huggingface_hub import snapshot_download

    target_dir = Path(target_dir).expanduser()
    target_dir.mkdir(parents=True, exist_ok=True)
    snapshot_download(
        repo_id=HF_REPO_ID,
        local_dir=str(target_dir),
        allow_patterns=[CONFIG_FILE, CHECKPOINT_FILE, "*.txt", "*.json"],
    )
    check_model_dir(target_dir)
    return target_dir
