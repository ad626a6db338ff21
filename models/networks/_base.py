"""What every network shares: config parsing, the modality bookkeeping of the contract, and how
it is trained (``training_loss``, the one training step that training and fine-tuning call)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from torch import Tensor, nn

from ..nn.losses import LossSettings


def parse_modalities(config: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, int]]:
    """``config["modalities"]`` (ordered name → band count) as (names, counts), validated."""
    mods = config.get("modalities")
    if not isinstance(mods, Mapping) or not mods:
        raise ValueError("config['modalities'] must be a non-empty mapping name -> band count")
    counts = {str(k): int(v) for k, v in mods.items()}
    bad = [k for k, v in counts.items() if v < 1]
    if bad:
        raise ValueError(f"modalities {bad} need at least one band")
    return tuple(counts), counts


@dataclass(frozen=True)
class TrainingBatch:
    """One batch as the training loops hand it to a network: normalised ``inputs`` per modality
    (B×C×H×W, zeros where absent), ``present`` (B×K, 1 = given) and ``target`` (B×H×W class
    indices, ``IGNORE`` where unlabelled)."""

    inputs: Mapping[str, Tensor]
    present: Tensor
    target: Tensor


class SegNetwork(nn.Module):
    """Base class holding the contract attributes; subclasses implement ``forward``.

    ``self.config`` is the subclass's ``defaults`` overlaid with the given config (the JSON-able
    recipe that rebuilds the same network); ``modality_count`` fixes how many modalities it takes.
    Training: ``training_loss`` is the plain (class-weighted) CE on the logits, plus the recipe's
    hard-pixel term; networks whose paper adds auxiliary losses override it, with their weights
    in ``loss_terms`` (a recipe may override them through ``LossSettings.terms``).
    ``encoder_modules`` names the top-level modules that fine-tuning's "freeze encoder" freezes."""

    size_multiple: int = 32
    has_robustness: bool = False
    defaults: Mapping[str, Any] = {}
    modality_count: int | None = None
    loss_terms: Mapping[str, Any] = {}
    encoder_modules: tuple[str, ...] = ()

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.modalities, self.in_channels = parse_modalities(config)
        if self.modality_count is not None:
            require_modalities(self.modalities, self.modality_count, type(self).__name__)
        self.num_classes = int(config["num_classes"]) if "num_classes" in config else _missing("num_classes")
        self.config: dict[str, Any] = {**copy.deepcopy(dict(self.defaults)), **copy.deepcopy(dict(config)),
                                       "modalities": dict(self.in_channels)}

    def terms(self, settings: LossSettings) -> dict[str, Any]:
        """This network's auxiliary-loss weights with the recipe's overrides."""
        unknown = sorted(set(settings.terms) - set(self.loss_terms))
        if unknown:
            known = ", ".join(self.loss_terms) or "none"
            raise ValueError(f"{type(self).__name__} has no loss term {', '.join(unknown)} (its terms: {known})")
        return {**self.loss_terms, **settings.terms}

    def training_loss(self, batch: TrainingBatch, settings: LossSettings = LossSettings()
                      ) -> tuple[Tensor, dict[str, float]]:
        """The loss of one training step and its terms (floats, for the log)."""
        logits = self(batch.inputs, batch.present)["logits"]
        return segmentation_loss(logits, batch.target, settings)


def segmentation_loss(logits: Tensor, target: Tensor, settings: LossSettings,
                      extra: Mapping[str, Tensor] | None = None,
                      ce: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """CE on ``logits`` (or the network's own form of it, ``ce``: SGMA's dual-path CE) + the
    recipe's hard-pixel term on ``logits`` + the network's weighted ``extra`` terms."""
    parts = {"ce": settings.ce(logits, target) if ce is None else ce}
    hard = settings.hard_pixel(logits, target)
    if hard is not None:
        parts["hard_pixel"] = hard
    distill = settings.distillation(logits, target)
    if distill is not None:
        parts["distill"] = distill
    parts.update(extra or {})
    loss = sum(parts.values())
    return loss, {name: float(value.detach()) for name, value in parts.items()}


def _missing(key: str):
    raise ValueError(f"config lacks required key {key!r}")


def require_modalities(names: tuple[str, ...], count: int, arch: str) -> None:
    if len(names) != count:
        raise ValueError(f"{arch} takes exactly {count} modalities (got {list(names)})")
