"""SGMA's Semantic-Guided Fusion (SGF) for any subset of K modalities, one scale.

From Wen, Liao, Xiao & Wang, "SGMA: Semantic-Guided Modality-Aware Segmentation for Remote Sensing
with Incomplete Multimodal Data" (arXiv 2603.02505, 2026): per modality a projector (depth-wise
3/7/11 + point-wise), a shared class-aware filter giving one response map per class, class
prototypes pooled over every pixel of every modality, a spatial perceptron (attention from the
prototypes to the modality tokens of each pixel) and a robustness perceptron (attention from their
class mean G to the same tokens) whose weights fuse the modalities. The paper's equation bodies are
not legible; the shapes and the normalisations below are ModalSeg's reconstruction:

* **MP** (one per modality): parallel depth-wise convs (kernels 3/7/11) + identity, summed, then a
  point-wise conv + BN into the common ``dim``-wide semantic space.
* **CSF**: a shared 1×1 conv dim→N. Prototypes use φ = softmax over all K·h·w positions of the
  *present* modalities (OCR-style region pooling), so P is a convex average of features.
* **SP** (``sp_heads``): queries = the N prototypes at every pixel, keys/values = the K modality
  tokens at that pixel. Because the out-projection is linear, mean_n(Z) equals attention with the
  class-averaged weights, so G is computed without materialising the N×C tensor per pixel.
* **RP** (``rp_heads``): query = G, keys/values = the modality tokens; its softmax weights over
  the present modalities (averaged over heads) are the robustness maps and the fusion weights.

Absent modalities are removed by additive -1e4 biases plus multiply-and-renormalise on the
presence vector, never by Python branches, so one ONNX graph serves every subset; with a single
present modality the RP weight is exactly 1. Attention is written with 1×1 convs and elementwise
ops on B×K×heads×d×h×w tensors instead of ``nn.MultiheadAttention`` over B·h·w sequences: same
maths, no (B·h·w)-sized reshapes, and it traces cleanly with dynamic H/W.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .common import masked_softmax, presence_bias


class ModalityProjector(nn.Module):
    """MP: multi-kernel depth-wise context (parallel, summed with identity) → point-wise projection."""

    def __init__(self, cin: int, dim: int, kernels: Sequence[int] = (3, 7, 11)) -> None:
        super().__init__()
        self.dw = nn.ModuleList(nn.Conv2d(cin, cin, k, 1, k // 2, groups=cin) for k in kernels)
        self.pw = nn.Sequential(nn.Conv2d(cin, dim, 1, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for conv in self.dw:
            y = y + conv(x)
        return self.pw(y)


class SemanticGuidedFusion(nn.Module):
    """SGF at one scale. ``forward(feats, present)`` → (fused B×dim×h×w, robustness B×K×h×w)."""

    def __init__(self, in_channels: int | Sequence[int], dim: int, num_classes: int, num_modalities: int,
                 sp_heads: int = 8, rp_heads: int = 4, kernels: Sequence[int] = (3, 7, 11)) -> None:
        super().__init__()
        # one width for a shared encoder, one per modality when each has its own encoder
        widths = [in_channels] * num_modalities if isinstance(in_channels, int) else list(in_channels)
        if len(widths) != num_modalities:
            raise ValueError(f"SGF needs {num_modalities} input widths, got {widths}")
        # Heads must divide dim; keep ≥4 channels per head on narrow (CPU-sized) scales.
        self.sp_heads = _fit_heads(dim, sp_heads)
        self.rp_heads = _fit_heads(dim, rp_heads)
        self.dim, self.k = dim, num_modalities
        self.mp = nn.ModuleList(ModalityProjector(c, dim, kernels) for c in widths)
        self.csf = nn.Conv2d(dim, num_classes, 1)
        self.sp_q = nn.Linear(dim, dim)
        self.sp_kv = nn.Conv2d(dim, 2 * dim, 1)
        self.sp_out = nn.Conv2d(dim, dim, 1)
        self.rp_q = nn.Conv2d(dim, dim, 1)
        self.rp_kv = nn.Conv2d(dim, 2 * dim, 1)
        self.rp_out = nn.Conv2d(dim, dim, 1)

    def project(self, feats: Sequence[Tensor], present: Tensor) -> Tensor:
        """MP outputs stacked as B×K×dim×h×w, absent modalities zeroed."""
        s = torch.stack([mp(f) for mp, f in zip(self.mp, feats)], 1)
        return s * present[:, :, None, None, None]

    def fuse(self, s: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """CSF → prototypes → SP → RP on projected tokens ``s`` (B×K×C×h×w) for the given subset.

        Exposed separately so SGMA's modality-aware sampling can rerun it on one modality.
        """
        k, c = self.k, self.dim
        h, w = s.shape[-2], s.shape[-1]
        flat = s.flatten(0, 1)                                            # (B·K)×C×h×w
        # Prototypes P (B×N×C): class-response softmax over the pixels of present modalities.
        a = self.csf(flat)
        n = a.shape[1]
        a = a.reshape(-1, k, n, h * w) + presence_bias(present)[:, :, None, None]
        a = torch.softmax(a.transpose(1, 2).reshape(-1, n, k * h * w), dim=-1)
        tokens = s.permute(0, 1, 3, 4, 2).reshape(-1, k * h * w, c)
        proto = torch.bmm(a, tokens)                                      # B×N×C

        # SP: prototype queries against the per-pixel modality tokens; class-averaged weights.
        hs = self.sp_heads
        dh = c // hs
        q = self.sp_q(proto).reshape(-1, n, hs, dh)                       # B×N×H×d
        kv = self.sp_kv(flat).reshape(-1, k, 2, hs, dh, h, w)
        key, val = kv[:, :, 0], kv[:, :, 1]                               # B×K×H×d×h×w
        scores = torch.einsum("bnhd,bkhdyx->bnkhyx", q, key) / math.sqrt(dh)
        attn = masked_softmax(scores, present[:, None, :, None, None, None], dim=2)
        attn = attn.mean(1)                                               # B×K×H×h×w
        g = (attn.unsqueeze(3) * val).sum(1).reshape(-1, c, h, w)
        g = self.sp_out(g)

        # RP: prototype-guided query G against the same modality tokens -> fusion + robustness.
        hr = self.rp_heads
        dr = c // hr
        qg = self.rp_q(g).reshape(-1, 1, hr, dr, h, w)
        kv = self.rp_kv(flat).reshape(-1, k, 2, hr, dr, h, w)
        key, val = kv[:, :, 0], kv[:, :, 1]
        scores = (qg * key).sum(3) / math.sqrt(dr)                        # B×K×H×h×w
        attn = masked_softmax(scores, present[:, :, None, None, None], dim=1)
        fused = (attn.unsqueeze(3) * val).sum(1).reshape(-1, c, h, w)
        return self.rp_out(fused), attn.mean(2)

    def forward(self, feats: Sequence[Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        return self.fuse(self.project(feats, present), present)


def _fit_heads(dim: int, heads: int) -> int:
    heads = max(1, min(heads, dim // 4))
    while dim % heads:
        heads -= 1
    return heads
