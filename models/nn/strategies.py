"""Modality-level training strategies, as plain functions on batches / presence vectors."""
from __future__ import annotations

import torch
from torch import Tensor


def mcrm_masking(inputs: dict[str, Tensor], modalities: tuple[str, str], ratio: float = 0.25,
                 blocks: int = 1, area: tuple[float, float] = (0.1, 0.3),
                 aspect: tuple[float, float] = (0.5, 2.0),
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """MoBaNet's Modality-Conditional Random Masking (training only), from Li, Zheng, Miao, Lu, Cai,
    Fu & Huang, "Parameter-Efficient Modality-Balanced Symmetric Fusion for Multimodal Remote
    Sensing Semantic Segmentation" (arXiv 2603.17705, 2026); ratio, block count, area and aspect
    ranges are the authors' code defaults.

    ⌊ratio·B⌋ samples are chosen; the first half of them get rectangles zeroed on the first
    modality, the rest on the second (never both). Each rectangle covers U(area) of the image with
    aspect U(aspect) at a uniform position, over all channels. Returns new tensors.
    """
    out = {m: t.clone() for m, t in inputs.items()}
    b, _, h, w = out[modalities[0]].shape
    n = int(ratio * b)
    if n == 0:
        return out
    chosen = torch.randperm(b, generator=generator)[:n].tolist()
    for j, idx in enumerate(chosen):
        m = modalities[0] if j < n // 2 else modalities[1]
        for _ in range(blocks):
            u = torch.rand(4, generator=generator).tolist()
            a = (area[0] + u[0] * (area[1] - area[0])) * h * w
            r = aspect[0] + u[1] * (aspect[1] - aspect[0])
            bh = max(1, min(h, int(round((a * r) ** 0.5))))
            bw = max(1, min(w, int(round((a / r) ** 0.5))))
            y0 = int(u[2] * (h - bh + 1))
            x0 = int(u[3] * (w - bw + 1))
            out[m][idx, :, y0:y0 + bh, x0:x0 + bw] = 0
    return out


def mas_sample(robustness: Tensor, present: Tensor, generator: torch.Generator | None = None,
               eps: float = 1e-6) -> Tensor:
    """SGMA modality-aware sampling for one scale: a one-hot B×K choice per sample, from
    Wen, Liao, Xiao & Wang, "SGMA: Semantic-Guided Modality-Aware Segmentation for Remote Sensing
    with Incomplete Multimodal Data" (arXiv 2603.02505, 2026); per-sample sampling and the detach
    are ModalSeg's reading.

    Inverts the robustness map over the present modalities (R̃ = (1/R)/Σ(1/R), i.e. SoftMin of the
    attention logits), averages over space, and samples one modality per sample: fragile
    modalities are trained alone more often. Detached; absent modalities are never chosen.
    """
    r = robustness.detach()
    inv = present[:, :, None, None] / r.clamp_min(eps)
    inv = inv / inv.sum(1, keepdim=True).clamp_min(eps)
    p = inv.mean((2, 3)) * present
    p = p / p.sum(1, keepdim=True).clamp_min(eps)
    pick = torch.multinomial(p, 1, generator=generator).squeeze(1)
    return torch.nn.functional.one_hot(pick, present.shape[1]).to(present.dtype)
