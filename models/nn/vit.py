"""A tiny plain ViT (pre-LN blocks) built without weights, as MoBaNet's frozen backbone stand-in.

Shapes follow DINOv2/SAM ViTs so a user could load real weights into a matching configuration:
DINOv2 ViT-S/14 (``patch=14, dim=384, depth=12, heads=6``; taps 2/5/8/11) or ViT-B/14
(``dim=768, heads=12``), e.g. from the official ``dinov2_vits14_pretrain.pth`` checkpoint —
this library never downloads them. Differences to those checkpoints (why a key mapping is
needed): no CLS/register tokens (MoBaNet uses patch tokens only), and the absolute positional
embedding is replaced by a depth-wise 3×3 conv position generator (PEG) on the token grid, which
keeps H/W dynamic in one ONNX graph; with real DINOv2 weights, use their pos-embed interpolated
to a fixed tile size instead. Patch size must divide the network's size multiple (16 → 32).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection; returns the B×D×h×w token grid."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, 1.0 / math.sqrt(dim // heads)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, -1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block: T' = T + MHSA(LN T); T'' = T' + MLP(LN T')."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embed + PEG + ``depth`` blocks + final LayerNorm; stages cut at ``taps``."""

    def __init__(self, in_channels: int = 3, dim: int = 96, depth: int = 4, heads: int = 3,
                 patch: int = 16, taps: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.dim, self.patch = dim, patch
        self.patch_embed = PatchEmbed(in_channels, dim, patch)
        self.peg = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.taps = tuple(taps) if taps is not None else _even_taps(depth, 4)

    def tokens(self, grid: Tensor) -> Tensor:
        """Token grid (B×D×h×w) + positional term → B×N×D sequence."""
        return (grid + self.peg(grid)).flatten(2).transpose(1, 2)

    def stage_blocks(self) -> list[list[Block]]:
        out, start = [], 0
        for t in self.taps:
            out.append(list(self.blocks[start:t + 1]))
            start = t + 1
        return out


def _even_taps(depth: int, n: int) -> tuple[int, ...]:
    if depth < n:
        raise ValueError(f"depth {depth} < {n} stages")
    return tuple(round((i + 1) * depth / n) - 1 for i in range(n))
