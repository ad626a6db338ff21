"""The losses the networks' training steps are made of, as small functions on logits / features.

``LossSettings`` is what a recipe (``models.train``'s config, fine-tuning) decides for every
network: class weights, the optional hard-pixel term, overrides of a network's own auxiliary-loss
weights. Each network's ``training_loss`` (``models.networks._base``) combines these functions
the way its paper does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.chips import IGNORE


@dataclass(frozen=True)
class LossSettings:
    """The recipe's side of the loss, the same for every network.

    ``class_weights``: per-class CE weights (None = unit weights). ``hard_pixel_weight`` > 0 adds
    ``hard_pixel_ce`` on the main logits (the ``hard_pixel_keep`` share of the hardest pixels) next
    to the plain CE. ``terms`` overrides the network's own auxiliary-loss weights
    (``SegNetwork.loss_terms``; an unknown key is an error). ``teacher_logits`` with
    ``distill_weight`` > 0 adds ``distillation_loss`` (fine-tuning on a few polygons)."""

    class_weights: Tensor | Sequence[float] | None = None
    hard_pixel_keep: float = 0.25
    hard_pixel_weight: float = 0.0
    terms: Mapping[str, Any] = field(default_factory=dict)
    # fine-tuning: the starting model's logits on the same batch, and the weight of keeping its
    # decisions on the pixels without labels (``distillation``)
    teacher_logits: Tensor | None = None
    distill_weight: float = 0.0

    def ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """Class-weighted pixel CE over the labelled pixels."""
        return ce_loss(logits, target, class_weights=self.class_weights)

    def hard_pixel(self, logits: Tensor, target: Tensor) -> Tensor | None:
        """The weighted hard-pixel term, or None when the recipe has none."""
        if self.hard_pixel_weight <= 0:
            return None
        return self.hard_pixel_weight * hard_pixel_ce(logits, target, self.hard_pixel_keep,
                                                      class_weights=self.class_weights)

    def distillation(self, logits: Tensor, target: Tensor) -> Tensor | None:
        """The weighted distillation term, or None without a teacher."""
        if self.teacher_logits is None or self.distill_weight <= 0:
            return None
        return self.distill_weight * distillation_loss(logits, self.teacher_logits, target)


def distillation_loss(logits: Tensor, teacher_logits: Tensor, target: Tensor, ignore_index: int = IGNORE) -> Tensor:
    """KL(teacher || student) of the class distributions on the pixels without a label, summed and
    divided by all pixels: each unlabelled pixel weighs the same whatever the label density, so dense
    labels (few unlabelled pixels) are barely held back and a few polygons are held back most.

    A few polygons label a few percent of an area; trained on them alone, a network forgets what it
    knew everywhere else (it scored 17 points lower on the rest of a tile than before). Holding it
    to its starting decisions where nobody labelled anything keeps that knowledge (learning without
    forgetting) while the labelled pixels teach it the area."""
    free = target == ignore_index
    if not bool(free.any()):
        return logits.sum() * 0.0
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_logits, 1), reduction="none", log_target=True)
    return kl.sum(1)[free].sum() / free.numel()


def ce_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE,
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
                      ignore_index: int = IGNORE) -> Tensor:
    """MoBaNet's MCRM auxiliary loss: CE of each modality head on the pixels the fused head gets wrong.

    Li et al., "Parameter-Efficient Modality-Balanced Symmetric Fusion for Multimodal Remote
    Sensing Semantic Segmentation" (2026): L_aux = CE_H(Ŷ_rgb, Y) + CE_H(Ŷ_aux, Y) over the hard
    set H = {argmax Ŷ_fused ≠ Y}, implemented as in the authors' code by setting correctly
    predicted pixels to the ignore index. The sum over heads is returned; the caller multiplies by
    λ (0.01 in that code; the paper's value is not legible).
    """
    with torch.no_grad():
        hard = target.clone()
        hard[fused_logits.argmax(1) == target] = ignore_index
    return sum(ce_loss(a, hard, ignore_index) for a in aux_logits)


def hard_pixel_ce(logits: Tensor, target: Tensor, keep: float = 0.25, ignore_index: int = IGNORE,
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
    """AMMNet-style distribution alignment: KL(softmax(a/τ) ‖ softmax(b/τ)) over channels, averaged
    over pixels (× τ², so the gradient scale does not depend on τ). Both features must have the
    same width (project first).

    Ye et al., "AMMNet: An Asymmetric Multi-Modal Network for Remote Sensing Semantic
    Segmentation" (2025) only say that a divergence between the two modalities' feature
    distributions is minimised; KL over channels per pixel is ModalSeg's reconstruction.
    """
    log_p = F.log_softmax(feat_a / tau, dim=1)
    log_q = F.log_softmax(feat_b / tau, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean() * tau * tau


def sgma_dual_path_ce(sgf_logits: Tensor, mas_logits: Tensor, target: Tensor,
                      weights: Sequence[float] = (2.0, 1.0),
                      class_weights: Tensor | Sequence[float] | None = None) -> Tensor:
    """SGMA's objective L = λ₁·CE(Ŷ_SGF) + λ₂·CE(Ŷ_MAS), λ = (2, 1) as tuned in Wen et al.,
    "SGMA: Semantic-Guided Modality-Aware Segmentation for Remote Sensing with Incomplete
    Multimodal Data" (2026); both CEs pixel-averaged (and class-weighted if the recipe asks)."""
    return (weights[0] * ce_loss(sgf_logits, target, class_weights=class_weights)
            + weights[1] * ce_loss(mas_logits, target, class_weights=class_weights))
