"""What fine-tuning reports: one line per epoch (the dialog's live curve) and the final result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ...engine.package import ClassInfo

@dataclass
class EpochReport:
    epoch: int
    steps: int
    loss: float
    val_miou: Optional[float]
    seconds: float
    best: bool


@dataclass
class FinetuneResult:
    onnx_path: Path
    epochs: int
    best_epoch: int
    start_val_miou: Optional[float]
    best_val_miou: Optional[float]
    stopped: str  # "epochs", "early stopping", "time budget", "cancelled"
    history: List[EpochReport]
    classes: List[ClassInfo]
