"""Small building blocks shared by every component (conv-BN-act, presence helpers, resizing).

Presence handling is always done with tensor arithmetic on the ``present`` vector (B×K, {0,1}),
never with Python branches on values, so one traced ONNX graph serves every modality subset.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Additive bias for absent keys / gate logits. Large enough that exp() underflows to exactly 0 in
# float32 after max-subtraction, small enough not to overflow in float16 (max 65504).
NEG_BIAS = 1.0e4


class ConvBNAct(nn.Sequential):
    """k×k conv (no bias) → BatchNorm → activation; the workhorse of every CNN part."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6) else act())
        super().__init__(*layers)


def presence_bias(present: Tensor) -> Tensor:
    """0 where present, -NEG_BIAS where absent (same shape as ``present``)."""
    return (present - 1.0) * NEG_BIAS


def masked_softmax(logits: Tensor, present: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` restricted to present entries; absent entries are exactly 0.

    ``present`` must broadcast against ``logits``. The additive bias keeps the softmax numerically
    safe; the multiply-and-renormalise makes absent weights exactly zero and the present ones sum
    to exactly 1, whatever the logits' scale.
    """
    w = _shifted_exp(logits + presence_bias(present), dim) * present
    return w / w.sum(dim=dim, keepdim=True).clamp_min(1e-12)


def softmax_over(x: Tensor, dim: int) -> Tensor:
    """``torch.softmax`` written out (max, exp, sum), so the graph holds element-wise ops and
    reductions: ONNX Runtime's Softmax over any axis but the last transposes the tensor around it
    (measured on a 1 x 6 x 2 x 4 x 64 x 64 attention tensor over axis 2, one CPU thread: 3.2 ms,
    written out 0.2 ms; in modalseg-sgma-urban the modality softmaxes took 12 % of a tile's time)."""
    e = _shifted_exp(x, dim)
    return e / e.sum(dim=dim, keepdim=True)


def _shifted_exp(x: Tensor, dim: int) -> Tensor:
    """exp(x - max over ``dim``): a softmax's numerator, safe whatever the scale of ``x``."""
    return torch.exp(x - x.amax(dim=dim, keepdim=True))


def upsample(x: Tensor, factor: int) -> Tensor:
    """Bilinear ×factor. Scale factors (not target sizes) keep H/W dynamic in the legacy exporter."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


def expand_presence(present: Tensor, k: int) -> Tensor:
    """Column ``k`` of ``present`` as B×1×1×1, ready to multiply a feature map."""
    return present[:, k].reshape(-1, 1, 1, 1)


def two_way_gate(g: Tensor, p_a: Tensor, p_b: Tensor) -> Tensor:
    """Turn a learned gate g∈[0,1] (weight of A; B gets 1-g) into a presence-aware one.

    Both present → g; only A → 1; only B → 0. Pure arithmetic, so ONNX-traceable and exact.
    ``p_a``/``p_b`` are B×1×1×1 presence columns.
    """
    return p_a * p_b * g + p_a * (1.0 - p_b)
