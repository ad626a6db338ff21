"""The five seed networks composed from ``models.nn`` parts; see ``registry.build_network``."""
from .registry import ARCHITECTURES, build_network, network_class

__all__ = ["ARCHITECTURES", "build_network", "network_class"]
