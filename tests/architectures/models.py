"""Transformer test models written the way users write them, as `module:factory` factories for the
CLI: the Hugging Face-style tiny ViT of issue 19 (q/k/v Linear, heads by view), one built on
`nn.MultiheadAttention`, and one whose forward hard-codes its head layout (cannot be pruned safely)."""

from __future__ import annotations

import torch
from torch import nn

from tests.unit.test_counts import TinyViT


def tiny_vit(size: int = 8, in_chans: int = 1, depth: int = 2) -> nn.Module:
    """The issue's tiny ViT at digits' 8x8 (2x2 patches: 16 tokens + class token, width 32, 4 heads)."""
    model = TinyViT(size=size, patch=2, dim=32, depth=depth, heads=4)
    if in_chans != 1:
        model.embed = nn.Conv2d(in_chans, 32, 2, 2)
    return model


class MHABlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def mha_vit() -> nn.Module:
    """The tiny ViT (class token, position embedding) with `nn.MultiheadAttention` blocks."""
    model = tiny_vit()
    model.blocks = nn.Sequential(*[MHABlock(32, 4) for _ in range(2)])
    return model


class FixedLayoutAttention(nn.Module):
    """Reshapes q/k/v with literal sizes and has no head-count attribute: removing a head breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(32, 96), nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
        out = ((q @ k.transpose(-2, -1)) * 8**-0.5).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, 32))


def fixed_layout_vit() -> nn.Module:
    model = tiny_vit(depth=1)
    model.blocks[0].attn = FixedLayoutAttention()
    return model
