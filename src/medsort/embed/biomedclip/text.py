"""BiomedCLIP's text tower: transformers' BERT, [CLS] last hidden state, bias-free projection.

open_clip's ``HFTextEncoder`` layout: BiomedBERT-base without its pooler, whose last hidden
state at ``[CLS]`` goes through ``proj`` (a bias-free two-layer MLP 768 -> 640 -> 512 with a
GELU, or one linear layer); padding tokens are masked out.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from medsort.embed.biomedclip.arch import TextArch


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
