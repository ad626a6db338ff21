"""The optimiser's side of a training step, shared by ``models.train`` and ``models.finetune``:
the learning-rate schedule and the clipped update (the loss itself is each network's
``training_loss``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

GRADIENT_CLIP = 5.0  # global gradient norm: one bad chip cannot throw the weights away


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Warm-up at 10 % of the base rate (SGMA recipe), then polynomial decay (power 0.9)."""
    if step < warmup:
        return base * (0.1 + 0.9 * step / max(1, warmup))
    return base * max(0.0, 1 - (step - warmup) / max(1, total - warmup)) ** 0.9 + 1e-6


def set_learning_rate(optimizer: "torch.optim.Optimizer", lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def apply_gradients(loss: "torch.Tensor", optimizer: "torch.optim.Optimizer",
                    parameters: Iterable["torch.nn.Parameter"]) -> None:
    """Back-propagate ``loss`` and take one optimiser step with the gradient norm clipped."""
    import torch

    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(parameters), GRADIENT_CLIP)
    optimizer.step()
