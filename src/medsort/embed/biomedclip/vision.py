"""BiomedCLIP's image tower: a timm-compatible ViT-B/16 in plain torch, then ``head.proj``.

timm ``vit_base_patch16_224`` layout (pre-norm blocks, class token, learned position
embeddings, final LayerNorm, the class token's output as the pooled feature, no classifier
head), followed by a bias-free linear projection to the shared space; parameter names match
open_clip's ``TimmModel`` so the checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional

from medsort.embed.biomedclip.arch import VisionArch


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
