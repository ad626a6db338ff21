"""Fusion blocks: two streams in, one feature out (SGF, for K streams, lives in ``sgf.py``).

Two-input blocks take the presence columns of both inputs (B×1×1×1 each) and, when one input is
absent, pass the other through unchanged; that rule is arithmetic, so it traces into ONNX.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import ConvBNAct, masked_softmax, softmax_over, two_way_gate


class SAGate(nn.Module):
    """Separation-and-Aggregation gate in the form Zhou, Wang, Su, Wen, Zhang & Zhang, "EMSNet:
    Efficient Multimodal Symmetric Network for Semantic Segmentation of Urban Scene from Remote
    Sensing Imagery" (IEEE JSTARS, 2025) describe it (after the SA-Gate of Chen et al., ECCV 2020).

    FS: a channel attention vector from GAP([a; b]) gives sigmoid gates; each stream is
    recalibrated by *adding* the other's filtered map (the crossed form is ModalSeg's reading of
    the paper's prose: RGB cleans the DSM, the DSM calibrates RGB).
    FA: two 1×1 convs on [a_rec; b_rec] give per-pixel logits, softmaxed across the two present
    streams: out = a·A_a + b·A_b. ``forward`` returns (out, A) with A = B×2×H×W (sums to 1 over
    present inputs, 0 for an absent one): a per-pixel modality weight usable as robustness.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, 2 * channels // reduction)
        self.fs = nn.Sequential(nn.Conv2d(2 * channels, hidden, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, 2 * channels, 1), nn.Sigmoid())
        self.fa = nn.Conv2d(2 * channels, 2, 1)
        self.c = channels

    def forward(self, a: Tensor, b: Tensor, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, Tensor]:
        gates = self.fs(torch.cat([a, b], 1).mean((2, 3), keepdim=True))
        w_a, w_b = gates[:, :self.c], gates[:, self.c:]
        a_rec = a + b * w_b * p_b
        b_rec = b + a * w_a * p_a
        logits = self.fa(torch.cat([a_rec, b_rec], 1))
        att = masked_softmax(logits, torch.cat([p_a, p_b], 1), dim=1)
        return a * att[:, :1] + b * att[:, 1:], att


class CFM(nn.Module):
    """ASANet Cascade Fusion Module (Zhang, Peng, Lu, Huang & Liu, "ASANet: Asymmetric Semantic
    Aligning Network for RGB and SAR image land cover classification", 2024), as in the authors'
    code: U = conv1×1([a; b]), channel gates a_m = σ(M_m(GAP(U))), W_m = F_m·a_m,
    V = conv1×1([W_a; W_b]), out = Σ_m W_m·softmax_channels(conv1×1_m(V)). An absent stream's gate
    is zeroed (ModalSeg)."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        c = channels
        self.u = nn.Conv2d(2 * c, c, 1)
        self.m = nn.ModuleList(nn.Sequential(
            ConvBNAct(c, expand * c, 1, act=None), nn.Conv2d(expand * c, expand * c, 3, 1, 1, groups=expand * c),
            nn.ReLU6(inplace=True), ConvBNAct(expand * c, c, 1, act=None)) for _ in range(2))
        self.v = nn.Conv2d(2 * c, c, 1)
        self.b = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(2))

    def forward(self, a: Tensor, b: Tensor, p_a: Tensor, p_b: Tensor) -> Tensor:
        g = self.u(torch.cat([a, b], 1)).mean((2, 3), keepdim=True)
        wa = a * torch.sigmoid(self.m[0](g)) * p_a
        wb = b * torch.sigmoid(self.m[1](g)) * p_b
        v = self.v(torch.cat([wa, wb], 1))
        return wa * softmax_over(self.b[0](v), 1) + wb * softmax_over(self.b[1](v), 1)


class DGFM(nn.Module):
    """MoBaNet Difference-Guided Gated Fusion (Li, Zheng, Miao, Lu, Cai, Fu & Huang,
    "Parameter-Efficient Modality-Balanced Symmetric Fusion for Multimodal Remote Sensing Semantic
    Segmentation" (arXiv 2603.17705, 2026)): G = σ(MLP([R_a; R_b; |R_a − R_b|])),
    out = G·a + (1−G)·b. The last conv is zero-initialised (G = 0.5 at start). Returns (out, g) where g is the
    presence-aware gate (1 when only a is present, 0 when only b)."""

    def __init__(self, channels: int, compact: int | None = None) -> None:
        super().__init__()
        c = compact or max(32, channels // 8)
        self.ra = nn.Conv2d(channels, c, 1, bias=False)
        self.rb = nn.Conv2d(channels, c, 1, bias=False)
        self.mix = nn.Sequential(nn.Conv2d(3 * c, c, 1, bias=False), nn.GroupNorm(1, c), nn.GELU())
        self.out = nn.Conv2d(c, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, a: Tensor, b: Tensor, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, Tensor]:
        ra, rb = self.ra(a), self.rb(b)
        g = torch.sigmoid(self.out(self.mix(torch.cat([ra, rb, (ra - rb).abs()], 1))))
        g = two_way_gate(g, p_a, p_b)
        return g * a + (1.0 - g) * b, g
