"""Losses of the five papers, as small functions on logits / features (digest §6.3 f)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def ce_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
            class_weights: Tensor | Sequence[float] | None = None) -> Tensor:
    """Pixel CE averaged over non-ignored pixels (optionally class-weighted, EMSNet-style).

    Returns 0 (with a graph) when every pixel is ignored, instead of NaN.
    """
    w = None if class_weights is None else torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), weight=w, ignore_index=ignore_index)


def hard_pixel_aux_ce(fused_logits: Tensor, aux_logits: Sequence[Tensor], target: Tensor,
                      ignore_index: int = IGNORE_INDEX) -> Tensor:
    """MoBaNet MCRM auxiliary loss: CE of each modality head on pixels the fused head gets wrong.

    Correctly predicted pixels are set to the ignore index (digest §3.4); the sum over heads is
    returned (the caller multiplies by λ, 0.01 in the reference code).
    """
    with torch.no_grad():
        hard = target.clone()
        hard[fused_logits.argmax(1) == target] = ignore_index
    return sum(ce_loss(a, hard, ignore_index) for a in aux_logits)


def hard_pixel_ce(logits: Tensor, target: Tensor, keep: float = 0.25, ignore_index: int = IGNORE_INDEX,
                  class_weights: Tensor | Sequence[float] | None = None) -> Tensor:
    """OHEM-style CE: mean of the ``keep`` fraction of non-ignored pixels with the highest
    (optionally class-weighted) loss. Used *next to* the plain CE (train config
    ``train.hard_pixel``), so label noise cannot take over; 0 (with a graph) if all are ignored."""
    w = None if class_weights is None else torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    per_px = F.cross_entropy(logits, target.long(), weight=w, ignore_index=ignore_index, reduction="none")
    per_px = per_px[target != ignore_index]
    if per_px.numel() == 0:
        return logits.sum() * 0.0
    k = max(1, int(round(float(keep) * per_px.numel())))
    return torch.topk(per_px, k, sorted=False).values.mean()


def kl_alignment(feat_a: Tensor, feat_b: Tensor, tau: float = 1.0) -> Tensor:
    """AMMNet-style distribution alignment [R]: KL(softmax(a/τ) ‖ softmax(b/τ)) over channels,
    averaged over pixels. Both features must have the same width (project first)."""
    log_p = F.log_softmax(feat_a / tau, dim=1)
    log_q = F.log_softmax(feat_b / tau, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean() * tau * tau


def sgma_dual_path_ce(sgf_logits: Tensor, mas_logits: Tensor, target: Tensor,
                      weights: tuple[float, float] = (2.0, 1.0), ignore_index: int = IGNORE_INDEX) -> Tensor:
    """SGMA objective λ₁·CE(SGF) + λ₂·CE(MAS) with the paper's λ = (2, 1)."""
    return weights[0] * ce_loss(sgf_logits, target, ignore_index) + weights[1] * ce_loss(mas_logits, target, ignore_index)


def logit_distillation(student: Tensor, teacher: Tensor) -> Tensor:
    """EMSNet logit KD: MSE between student and (detached) teacher logits."""
    return F.mse_loss(student, teacher.detach())


def feature_distillation(student: Tensor, teacher: Tensor, generator: torch.nn.Module,
                         mask_ratio: float = 0.5, rng: torch.Generator | None = None) -> Tensor:
    """MGD-style feature KD: randomly mask student pixels, let ``generator`` (maps student width
    to teacher width) reconstruct the teacher feature, MSE against it. Sizes must match."""
    keep = (torch.rand(student.shape[0], 1, *student.shape[2:], generator=rng,
                       device=student.device) >= mask_ratio).to(student.dtype)
    return F.mse_loss(generator(student * keep), teacher.detach())


def dynamic_kd_gate(kd_terms: Sequence[Tensor], task_loss: Tensor, k: float = 2.0) -> Tensor:
    """EMSNet's dynamic gate: drop a KD term for this step when it exceeds k × the task loss;
    returns the mean of the kept terms over all terms (the paper's /4 for four branches)."""
    kept = [t for t in kd_terms if float(t.detach()) <= k * float(task_loss.detach())]
    if not kd_terms:
        return task_loss * 0.0
    return sum(kept, task_loss * 0.0) / len(kd_terms)
