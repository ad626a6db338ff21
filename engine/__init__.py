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
from .lazy_exports import lazy_exports

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
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
