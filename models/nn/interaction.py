"""Interaction blocks: rewrite the per-modality streams between stages without fusing them."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .common import ConvBNAct


class SFM(nn.Module):
    """ASANet Semantic Focusing Module (Zhang, Peng, Lu, Huang & Liu, "ASANet: Asymmetric Semantic
    Aligning Network for RGB and SAR image land cover classification" (ISPRS J. Photogramm. Remote
    Sens. 218, 2024)), as in the authors' code: each stream is re-weighted per channel by a shared
    MLP on the global max of its difference to the other stream: F' = F·(1 + w·p_other).

    Multiplying the weight by the other stream's presence leaves a stream unchanged when its
    partner is absent (its "difference" would only be itself)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(32, channels // 16)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, a: Tensor, b: Tensor, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, Tensor]:
        d = a - b
        w_a = torch.sigmoid(self.mlp(d.amax((2, 3), keepdim=True)))
        w_b = torch.sigmoid(self.mlp((-d).amax((2, 3), keepdim=True)))
        return a * (1.0 + w_a * p_b), b * (1.0 + w_b * p_a)


class APF(nn.Module):
    """AMMNet Asymmetric Prior Fuser, a placeholder design: Ye, Chen, Hu, Chung & Chen, "AMMNet: An
    Asymmetric Multi-Modal Network for Remote Sensing Semantic Segmentation" (arXiv 2507.16158,
    2025) describe only a modality-aware prior matrix from the DSM steering the RGB context; the
    equations below are ModalSeg's. The (already width-aligned) DSM stream is the structural prior:

    * gate form (every stage): F = F_r·(1 + g·p_d) + p_d·conv(F_d), g = σ(conv(F_d));
    * with ``attention=True`` (coarse stages): a DSM prior matrix Π = softmax(Q_d K_dᵀ/√d) biases
      the RGB self-attention, A = softmax(Q_r K_rᵀ/√d + α·p_d·log(Π + ε)), F += W_o(A V_r).
    """

    def __init__(self, channels: int, attention: bool = False, attn_dim: int = 32) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Sigmoid())
        self.inject = ConvBNAct(channels, channels, 3, act=None)
        self.attention = attention
        if attention:
            self.d = attn_dim
            self.qk_d = nn.Conv2d(channels, 2 * attn_dim, 1)
            self.qk_r = nn.Conv2d(channels, 2 * attn_dim, 1)
            self.v_r = nn.Conv2d(channels, channels, 1)
            self.out = nn.Conv2d(channels, channels, 1)
            self.alpha = nn.Parameter(torch.ones(()))
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, f_r: Tensor, f_d: Tensor, p_r: Tensor, p_d: Tensor) -> Tensor:
        fused = f_r * (1.0 + self.gate(f_d) * p_d) + p_d * self.inject(f_d)
        if not self.attention:
            return fused
        b, c, h, w = f_r.shape
        qd, kd = self.qk_d(f_d).flatten(2).chunk(2, 1)                 # B×d×N
        qr, kr = self.qk_r(f_r).flatten(2).chunk(2, 1)
        scale = 1.0 / math.sqrt(self.d)
        prior = torch.softmax(qd.transpose(1, 2) @ kd * scale, -1)      # B×N×N
        bias = self.alpha * p_d.reshape(-1, 1, 1) * torch.log(prior + 1e-6)
        attn = torch.softmax(qr.transpose(1, 2) @ kr * scale + bias, -1)
        v = self.v_r(f_r).flatten(2)                                    # B×C×N
        ctx = (v @ attn.transpose(1, 2)).reshape(b, c, h, w)
        return fused + self.out(ctx) * p_r


class CPIA(nn.Module):
    """MoBaNet Cross-modal Prompt-Injected Adapter (Li, Zheng, Miao, Lu, Cai, Fu & Huang,
    "Parameter-Efficient Modality-Balanced Symmetric Fusion for Multimodal Remote Sensing Semantic
    Segmentation" (arXiv 2603.17705, 2026)), in the form of the authors' released code (prompt
    generator + task feature transformation, which is what their parameter counts were measured on):
    B = W_u W_f [W_d^a T_a; W_d^b T_b], T̂_m = T_m + (1 + γ_m)·B + β_m on B×N×D token sequences.

    The ``paper`` form (prompt as bias inside a bottleneck adapter) is selected with
    ``adapter=True``: T̂_m = T_m + W_up(Dropout(ReLU(W_down T_m + W_p P_m))), P_m = γ_m B + β_m.
    An absent stream contributes zeros to B and its own tokens are left unchanged.
    """

    def __init__(self, dim: int, ratio: float = 0.25, adapter: bool = False, adapter_ratio: float = 0.0625,
                 dropout: float = 0.1) -> None:
        super().__init__()
        d = max(4, int(dim * ratio))
        self.down = nn.ModuleList(nn.Linear(dim, d) for _ in range(2))
        self.f = nn.Linear(2 * d, d)
        self.u = nn.Linear(d, dim)
        self.gamma = nn.Parameter(1.0 + 0.02 * torch.randn(2, dim))
        self.beta = nn.Parameter(0.02 * torch.randn(2, dim))
        self.adapter = adapter
        if adapter:
            r = max(4, int(dim * adapter_ratio))
            self.a_down = nn.ModuleList(nn.Linear(dim, r) for _ in range(2))
            self.a_prompt = nn.ModuleList(nn.Linear(dim, r) for _ in range(2))
            self.a_up = nn.ModuleList(nn.Linear(r, dim) for _ in range(2))
            self.drop = nn.Dropout(dropout)

    def forward(self, t_a: Tensor, t_b: Tensor, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, Tensor]:
        # p_* are B×1×1 presence columns for B×N×D tokens.
        base = self.u(self.f(torch.cat([self.down[0](t_a) * p_a, self.down[1](t_b) * p_b], -1)))
        outs = []
        for i, (t, p) in enumerate(((t_a, p_a), (t_b, p_b))):
            prompt = self.gamma[i] * base + self.beta[i]
            if self.adapter:
                delta = self.a_up[i](self.drop(torch.relu(self.a_down[i](t) + self.a_prompt[i](prompt))))
            else:
                delta = base + prompt
            outs.append(t + delta * p)
        return outs[0], outs[1]
