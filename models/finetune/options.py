"""What an analyst chooses for fine-tuning: the options, their defaults, and the freeze vocabulary.

The one definition the Processing algorithm and the dialog build their parameters from:
``FinetuneOptions()`` holds every default, ``FREEZE`` the freeze choices as (key, label) pairs
(position = the Processing enum value, so existing choices keep their positions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

FREEZE: Tuple[Tuple[str, str], ...] = (
    ("none", "Nothing: train every layer"),
    ("encoder", "The encoders (feature extractors): adapt fusion and head only, for small label sets"),
    ("all-but-head", "Everything but the class head: the least change, for very few labels"),
)
FREEZE_CHOICES: Tuple[str, ...] = tuple(key for key, _ in FREEZE)


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 20
    minutes: float = 0.0  # time budget; 0 = none (epochs only)
    learning_rate: float = 1e-3
    batch_size: int = 8
    chip: int = 128
    val_fraction: float = 0.2
    device: str = "auto"
    freeze: str = "none"  # a key of FREEZE
    patience: int = 4  # epochs without validation gain before stopping
    keep_prior: float = 1.0  # weight of the starting model's decisions on unlabelled pixels; 0 = off
    steps_per_epoch: int = 0  # 0 = enough chips to cover the training area about once
    seed: int = 0
    threads: Optional[int] = None  # torch CPU threads; None = leave torch's setting
    name: Optional[str] = None  # new package name; None = "<base>-finetuned"


FINETUNE_DEFAULTS = FinetuneOptions()
