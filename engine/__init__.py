"""QGIS-free inference engine of ModalSeg: alignment, tiling, blending, runtimes, writers.

Public API (everything a caller needs)::

    from modalseg.engine import (LayerInput, bind_modalities, GridRequest, OutputPaths, RunOptions,
                                 run_segmentation, load_package, list_packages, EngineError, PackageError,
                                 Cancelled)
"""
from .binding import LayerInput, Source, bind_modalities
from .errors import Cancelled, EngineError
from .grid import Grid, GridRequest
from .package import ModelPackage, PackageError, PackageMetadata, list_packages, load_package
from .outputs import OutputPaths
from .segment import RunOptions, RunReport, run_segmentation

__all__ = ["Cancelled", "EngineError", "Grid", "GridRequest", "LayerInput", "ModelPackage", "OutputPaths",
           "PackageError", "PackageMetadata", "RunOptions", "RunReport", "Source", "bind_modalities",
           "list_packages", "load_package", "run_segmentation"]
