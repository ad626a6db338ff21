"""QGIS-free inference engine of ModalSeg: alignment, tiling, blending, runtimes, writers.

Public API (everything a caller needs)::

    from modalseg.engine import (LayerInput, bind_modalities, GridRequest, OutputPaths, RunOptions,
                                 run_segmentation, load_package, list_packages, EngineError, PackageError,
                                 Cancelled)

Importing the package itself loads nothing: each name comes from its module on first use
(PEP 562). The plugin builds its Processing parameters from ``engine.vocabulary`` at load time,
and that must work where numpy or GDAL's bindings are broken, so the problem is reported when an
algorithm runs instead of the plugin failing to load.
"""
from importlib import import_module
from typing import Any, List

# The modules of this package and the public names each defines.
_EXPORTS = {
    "binding": ("LayerInput", "Source", "bind_modalities", "parse_band_list"),
    "errors": ("Cancelled", "EngineError"),
    "grid": ("Grid", "GridRequest", "open_raster"),
    "model_choice": ("Choice", "choose_package", "describe_package"),
    "outputs": ("OutputPaths", "check_outputs", "create_output_folders", "remove_created_folders"),
    "package": ("ModelPackage", "PackageError", "PackageMetadata", "list_packages", "load_package"),
    "segment": ("RunOptions", "RunReport", "run_segmentation"),
}
_PUBLIC = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:  # a submodule not imported yet, e.g. ``engine.package`` after ``from .. import engine``
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_PUBLIC))
