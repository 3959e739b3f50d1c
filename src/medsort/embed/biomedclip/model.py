"""Both BiomedCLIP towers and ``logit_scale``, and loading an open_clip checkpoint into them."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from medsort.embed.biomedclip.arch import BiomedCLIPArch
from medsort.embed.biomedclip.text import TextTower
from medsort.embed.biomedclip.vision import VisionTower

# Buffers that older ``transformers`` versions saved with BERT and newer ones do not register.
_STALE_BUFFERS = (
    "text.transformer.embeddings.position_ids",
    "text.transformer.embeddings.token_type_ids",
)


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
