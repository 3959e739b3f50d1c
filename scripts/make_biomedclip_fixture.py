"""Build the BiomedCLIP test fixture (``tests/fixtures/biomedclip_tiny/``) with the real open_clip.

The fixture is a *tiny*, randomly initialised BiomedCLIP: the same layout and parameter
names as ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` (an open_clip
``CustomTextCLIP`` with a timm ViT image tower and a HuggingFace BERT text tower), but with
small widths and depths so that it fits in well under 2 MB. The script also records what
real open_clip computes for it (tokens, image features, text features), plus the parameter
names and shapes of a *real-size* BiomedCLIP built with random weights, so the test can
check medsort's own implementation against open_clip without open_clip installed.

Run it in a throwaway environment, never in the project's: open_clip and timm pull in
torchvision. What worked with a CPU-only torch 2.13::

    python3.11 -m venv /tmp/oc && cd /tmp/oc
    bin/pip install torch==2.13.0          # the CPU wheel, e.g. from a local wheel
    bin/pip install --no-deps open_clip_torch==3.3.0 timm==1.0.31 torchvision==0.28.0
    bin/pip install numpy pillow ftfy regex huggingface_hub safetensors transformers pyyaml tqdm
    bin/python /path/to/medsort/scripts/make_biomedclip_fixture.py

The torchvision wheel on PyPI is CUDA-built; with a CPU torch its compiled ops fail to
register and ``import torchvision`` raises ``operator torchvision::nms does not exist``.
Only its transforms are used here, so emptying
``site-packages/torchvision/_meta_registrations.py`` in the throwaway environment is enough.

Nothing is downloaded: the BERT configs are written locally and no weights are pretrained.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import timm
import torch
from open_clip.factory import load_checkpoint
from open_clip.transform import image_transform
from PIL import Image
from timm.models import register_model
from transformers import BertConfig, BertTokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "biomedclip_tiny"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"

# The open_clip_config.json of the Hugging Face repo
# microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224.
REAL_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": BIOMEDBERT,
            "hf_tokenizer_name": BIOMEDBERT,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    },
    "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
}

# BERT-base, as in the config.json of microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract.
REAL_BERT = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "pad_token_id": 0,
}

# The tiny model. The ViT is registered with timm under this name so that open_clip's
# TimmModel builds it exactly as it builds vit_base_patch16_224.
TINY_VIT_NAME = "vit_medsort_tiny_patch16_64"
TINY_VIT = {"patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 4, "img_size": 64}
TINY_EMBED_DIM = 32
TINY_CONTEXT = 24
TINY_BERT = {
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "pad_token_id": 0,
}
# Words for the tiny WordPiece vocabulary (split on whitespace).
TINY_WORDS = """
chest x ray ct mri scan of the brain lung liver knee with without contrast axial coronal
sagittal image showing a tumor fracture normal abnormal pneumonia effusion histology slide
stained h e microscopy patient left right view lateral frontal ##s ##ing ##ed ##al ##ly
. , ( ) - / : 1 2 3
"""
TEXTS = [
    "A chest X-ray showing pneumonia.",
    "axial CT of the brain, with contrast",
    "Histology   slide (H&E) &amp; microscopy of a tumour: 3 images",
]


@register_model
def vit_medsort_tiny_patch16_64(pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
    """A tiny ViT with ``vit_base_patch16_224``'s layout, for the test fixture."""
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    return timm.create_model("vit_base_patch16_224", pretrained=False, **TINY_VIT, **kwargs)


def write_vocab(path: Path) -> None:
    """Write a small uncased WordPiece vocabulary."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [f"##{c}" for c in letters]
    words = list(dict.fromkeys(specials + letters + pieces + TINY_WORDS.split()))
    path.write_text("\n".join(words) + "\n", encoding="utf-8")


def build_clip(model_cfg: dict, bert_dir: Path) -> open_clip.CustomTextCLIP:
    """Build an open_clip CustomTextCLIP with random weights and a local BERT config."""
    text_cfg = dict(model_cfg["text_cfg"], hf_model_name=str(bert_dir), hf_model_pretrained=False)
    text_cfg.pop("hf_tokenizer_name", None)
    model = open_clip.CustomTextCLIP(
        embed_dim=model_cfg["embed_dim"],
        vision_cfg=model_cfg["vision_cfg"],
        text_cfg=text_cfg,
    )
    return model.eval()


def real_state_shapes(scratch: Path) -> dict[str, list[int]]:
    """Parameter names and shapes of a real-size BiomedCLIP, as open_clip builds it."""
    bert_dir = scratch / "biomedbert"
    BertConfig(**REAL_BERT).save_pretrained(bert_dir)
    model = build_clip(REAL_CONFIG["model_cfg"], bert_dir)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Add noise to every weight, so that no LayerNorm is the identity and no bias is zero."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                param.fill_(math.log(42.0))
                continue
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


def make_images(generator: torch.Generator) -> list[np.ndarray]:
    """Three small deterministic RGB images of different shapes (uint8, H x W x 3)."""
    shapes = [(80, 100), (100, 72), (64, 64)]
    images = []
    for i, (h, w) in enumerate(shapes):
        yy, xx = np.mgrid[0:h, 0:w]
        noise = torch.randint(0, 60, (h, w, 3), generator=generator).numpy()
        base = np.stack([xx * 255 // w, yy * 255 // h, ((xx + yy) * (i + 1)) % 256], axis=-1)
        images.append(np.clip(base * 0.75 + noise, 0, 255).astype(np.uint8))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1234)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)

        # Real-size reference layout.
        shapes = real_state_shapes(scratch)
        (out / "real_state_shapes.json").write_text(json.dumps(shapes, indent=0) + "\n")
        (out / "real_open_clip_config.json").write_text(json.dumps(REAL_CONFIG, indent=2) + "\n")
        print(f"real-size BiomedCLIP: {len(shapes)} tensors")

        # Tokenizer files in HF-repo layout.
        write_vocab(out / "vocab.txt")
        BertTokenizer(str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
        vocab_size = len((out / "vocab.txt").read_text(encoding="utf-8").splitlines())

        # The tiny model.
        bert_dir = scratch / "tinybert"
        BertConfig(vocab_size=vocab_size, **TINY_BERT).save_pretrained(bert_dir)
        tiny_cfg = {
            "model_cfg": {
                "embed_dim": TINY_EMBED_DIM,
                "vision_cfg": {
                    "timm_model_name": TINY_VIT_NAME,
                    "timm_model_pretrained": False,
                    "timm_pool": "",
                    "timm_proj": "linear",
                    "image_size": TINY_VIT["img_size"],
                    # Ignored by open_clip for timm towers; tell other readers the layout.
                    "width": TINY_VIT["embed_dim"],
                    "layers": TINY_VIT["depth"],
                    "head_width": TINY_VIT["embed_dim"] // TINY_VIT["num_heads"],
                    "patch_size": TINY_VIT["patch_size"],
                },
                "text_cfg": {
                    "hf_model_name": "medsort/tiny-bert",
                    "hf_tokenizer_name": "medsort/tiny-bert",
                    "hf_proj_type": "mlp",
                    "hf_pooler_type": "cls_last_hidden_state_pooler",
                    "context_length": TINY_CONTEXT,
                    # Ignored by open_clip for HF towers; tell other readers the layout.
                    "width": TINY_BERT["hidden_size"],
                    "heads": TINY_BERT["num_attention_heads"],
                    "layers": TINY_BERT["num_hidden_layers"],
                    "vocab_size": vocab_size,
                },
            },
            "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
        }
        model = build_clip(tiny_cfg["model_cfg"], bert_dir)
        perturb(model, generator)
        state = dict(model.state_dict())
        # The real checkpoint was saved by an older transformers that kept this buffer.
        state["text.transformer.embeddings.position_ids"] = torch.arange(
            TINY_BERT["max_position_embeddings"]
        ).unsqueeze(0)
        torch.save(state, out / "open_clip_pytorch_model.bin")
        (out / "open_clip_config.json").write_text(json.dumps(tiny_cfg, indent=2) + "\n")

        # Reload through open_clip's own checkpoint loader, strictly, as a sanity check.
        reloaded = build_clip(tiny_cfg["model_cfg"], bert_dir)
        load_checkpoint(reloaded, str(out / "open_clip_pytorch_model.bin"), strict=True)
        model = reloaded.eval()

    # Tokens, through open_clip's tokenizer for a local directory.
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    tokens = tokenizer(TEXTS)
    assert tokens.shape == (len(TEXTS), TINY_CONTEXT), tokens.shape

    # Images, through open_clip's eval transform (resize shorter side, centre crop).
    transform = image_transform(
        TINY_VIT["img_size"],
        is_train=False,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        interpolation="bicubic",
        resize_mode="shortest",
    )
    images = make_images(generator)
    pixels = torch.stack([transform(Image.fromarray(image)) for image in images])

    with torch.no_grad():
        image_features = model.encode_image(pixels, normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
        logit_scale = float(model.logit_scale.exp())

    np.savez_compressed(out / "images_uint8.npz", *images)
    np.save(out / "pixels.npy", pixels.numpy().astype(np.float32))
    np.save(out / "image_features.npy", image_features.numpy().astype(np.float32))
    np.save(out / "text_features.npy", text_features.numpy().astype(np.float32))
    expected = {
        "texts": TEXTS,
        "token_ids": tokens.tolist(),
        "logit_scale": logit_scale,
        "open_clip_version": open_clip.__version__,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
