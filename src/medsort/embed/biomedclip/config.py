"""BiomedCLIP's fixed facts: where its weights live, its files, licence and preprocessing."""

from __future__ import annotations

from medsort.embed.registry import Licence, WeightsSource
from medsort.preprocess import PreprocessConfig

HF_REPO_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
CONFIG_FILE = "open_clip_config.json"
CHECKPOINT_FILE = "open_clip_pytorch_model.bin"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PREPROCESS = PreprocessConfig(
    size=224, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic", resize_mode="crop"
)
"""open_clip's evaluation transform: shorter side to 224 (bicubic), centre crop, CLIP
mean and std (a model folder's ``preprocess_cfg`` may refine it)."""

WEIGHTS = WeightsSource(HF_REPO_ID, files=(CONFIG_FILE, CHECKPOINT_FILE, "*.txt", "*.json"))
LICENCE = Licence(
    "MIT",
    commercial=True,
    url=f"https://huggingface.co/{HF_REPO_ID}",
    note="the model card asks for research use; not for clinical use",
)
