"""Name → network class, and ``build_network(architecture, config)``.

Networks are imported lazily so that importing the registry costs nothing until one is built.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from torch import nn

_TABLE: dict[str, tuple[str, str]] = {
    "sgma": (".sgma", "SGMA"),
    "emsnet": (".emsnet", "EMSNet"),
    "ammnet": (".ammnet", "AMMNet"),
    "asanet": (".asanet", "ASANet"),
    "mobanet": (".mobanet", "MoBaNet"),
}
ARCHITECTURES: tuple[str, ...] = tuple(_TABLE)


def network_class(architecture: str) -> type[nn.Module]:
    key = architecture.lower()
    if key not in _TABLE:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    module, name = _TABLE[key]
    return getattr(importlib.import_module(module, __package__), name)


def build_network(architecture: str, config: Mapping[str, Any]) -> nn.Module:
    """Build a network from its JSON-able config (``network.config`` rebuilds the same net)."""
    return network_class(architecture)(dict(config))
