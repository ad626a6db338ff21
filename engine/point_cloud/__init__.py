"""Classified LAS/LAZ point clouds to aligned rasters (DSM, DTM, nDSM, optical, labels): training
labels and elevation layers where an analyst has LiDAR. QGIS-free; needs laspy (+ lazrs for LAZ).

Public API::

    from modalseg.engine.point_cloud import (RasterOutputs, RasterizeOptions, rasterize_point_cloud,
                                             DEFAULT_CLASS_MAPPING)
"""
from .classes import DEFAULT_CLASS_MAPPING, EXCLUDE, IGNORE, TERRAIN_CODES, default_rows, parse_rows
from .rasterize import RasterizeOptions, RasterizeReport, RasterOutputs, rasterize_point_cloud

__all__ = ["DEFAULT_CLASS_MAPPING", "EXCLUDE", "IGNORE", "TERRAIN_CODES", "RasterOutputs", "RasterizeOptions",
           "RasterizeReport", "default_rows", "parse_rows", "rasterize_point_cloud"]
