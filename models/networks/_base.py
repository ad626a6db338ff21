"""What every network shares: config parsing and the modality bookkeeping of the contract."""
from __future__ import annotations

import copy
from typing import Any, Mapping

from torch import nn


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


class SegNetwork(nn.Module):
    """Base class holding the contract attributes; subclasses implement ``forward``.

    ``self.config`` is the subclass's ``defaults`` overlaid with the given config (the JSON-able
    recipe that rebuilds the same network); ``modality_count`` fixes how many modalities it takes."""

    size_multiple: int = 32
    has_robustness: bool = False
    defaults: Mapping[str, Any] = {}
    modality_count: int | None = None

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.modalities, self.in_channels = parse_modalities(config)
        if self.modality_count is not None:
            require_modalities(self.modalities, self.modality_count, type(self).__name__)
        self.num_classes = int(config["num_classes"]) if "num_classes" in config else _missing("num_classes")
        self.config: dict[str, Any] = {**copy.deepcopy(dict(self.defaults)), **copy.deepcopy(dict(config)),
                                       "modalities": dict(self.in_channels)}


def _missing(key: str):
    raise ValueError(f"config lacks required key {key!r}")


def require_modalities(names: tuple[str, ...], count: int, arch: str) -> None:
    if len(names) != count:
        raise ValueError(f"{arch} takes exactly {count} modalities (got {list(names)})")
