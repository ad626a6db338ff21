"""The reference grid the network runs on: CRS, north-up geotransform and size."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

from osgeo import gdal, osr

from .errors import EngineError

gdal.UseExceptions()
osr.UseExceptions()

Bounds = Tuple[float, float, float, float]  # xmin, ymin, xmax, ymax


@dataclass(frozen=True)
class Grid:
    crs_wkt: str
    geotransform: Tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def pixel_width(self) -> float:
        return self.geotransform[1]

    @property
    def pixel_height(self) -> float:
        return -self.geotransform[5]

    @property
    def bounds(self) -> Bounds:
        x0, px, _, y0, _, py = self.geotransform
        return (x0, y0 + py * self.height, x0 + px * self.width, y0)

    def srs(self) -> osr.SpatialReference:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(self.crs_wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return srs

    def gsd_metres(self) -> float:
        """Mean pixel size in metres, for geographic CRSs too (at the grid's centre latitude)."""
        srs = self.srs()
        size = (abs(self.pixel_width) + abs(self.pixel_height)) / 2.0
        if srs.IsGeographic():
            xmin, ymin, xmax, ymax = self.bounds
            latitude = math.radians((ymin + ymax) / 2.0)
            metres_per_degree = 111_320.0 * math.sqrt((1 + math.cos(latitude) ** 2) / 2.0)
            return size * metres_per_degree * srs.GetAngularUnits() / (math.pi / 180.0)
        return size * srs.GetLinearUnits()

    def rescaled(self, factor: float) -> "Grid":
        """Same extent with pixels ``factor`` times larger (sizes rounded up)."""
        x0, px, _, y0, _, py = self.geotransform
        width = max(1, math.ceil(self.width / factor))
        height = max(1, math.ceil(self.height / factor))
        return replace(self, geotransform=(x0, px * self.width / width, 0.0, y0, 0.0, py * self.height / height),
                       width=width, height=height)


@dataclass(frozen=True)
class GridRequest:
    """What the caller asks of the output grid; anything left ``None`` comes from the reference layer."""

    crs_wkt: Optional[str] = None
    extent: Optional[Bounds] = None  # in extent_crs_wkt, else in the output CRS
    resolution: Optional[float] = None  # in output CRS units
    extent_crs_wkt: Optional[str] = None


def open_raster(path: str) -> gdal.Dataset:
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as exc:
        raise EngineError(f"cannot open raster '{path}': {exc}") from None
    if ds is None:
        raise EngineError(f"cannot open raster '{path}'")
    return ds


def grid_of(path: str) -> Grid:
    ds = open_raster(path)
    gt = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if gt is None or not wkt:
        raise EngineError(f"raster '{path}' has no georeferencing (geotransform and CRS are needed)")
    if gt[2] != 0 or gt[4] != 0:
        raise EngineError(f"raster '{path}' is rotated; warp it to a north-up grid first")
    if gt[5] > 0:
        raise EngineError(f"raster '{path}' is stored south-up; warp it to a north-up grid first")
    return Grid(wkt, tuple(gt), ds.RasterXSize, ds.RasterYSize)


def transform_bounds(bounds: Bounds, src_wkt: str, dst_wkt: str, densify: int = 21) -> Bounds:
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(src_wkt)
    dst.ImportFromWkt(dst_wkt)
    if src.IsSame(dst):
        return bounds
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(src, dst)
    xmin, ymin, xmax, ymax = bounds
    points = []
    for i in range(densify):
        t = i / (densify - 1)
        x, y = xmin + t * (xmax - xmin), ymin + t * (ymax - ymin)
        points += [(x, ymin), (x, ymax), (xmin, y), (xmax, y)]
    try:
        out = [transform.TransformPoint(x, y)[:2] for x, y in points]
    except RuntimeError as exc:
        raise EngineError(f"cannot transform the extent between coordinate systems: {exc}") from None
    xs = [p[0] for p in out if math.isfinite(p[0])]
    ys = [p[1] for p in out if math.isfinite(p[1])]
    if not xs or not ys:
        raise EngineError("the extent cannot be expressed in the output coordinate system")
    return (min(xs), min(ys), max(xs), max(ys))


def intersects(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _grid_in_crs(base: Grid, path: str, dst_wkt: str) -> Grid:
    """The grid GDAL suggests for ``path`` reprojected to ``dst_wkt`` (same pixel count scale)."""
    vrt = gdal.AutoCreateWarpedVRT(open_raster(path), base.crs_wkt, dst_wkt, gdal.GRA_NearestNeighbour)
    return Grid(dst_wkt, tuple(vrt.GetGeoTransform()), vrt.RasterXSize, vrt.RasterYSize)


def reference_grid(paths: Sequence[str], request: GridRequest) -> Grid:
    """Grid of ``paths[0]`` (the caller puts the reference layer first), adjusted by ``request``,
    after checking every layer overlaps it."""
    if not paths:
        raise EngineError("no input layer was given")
    base = grid_of(paths[0])
    grid = base
    if request.crs_wkt:
        target = osr.SpatialReference()
        try:
            target.ImportFromWkt(request.crs_wkt)
        except RuntimeError:
            raise EngineError("the output coordinate system is not valid") from None
        if not target.IsSame(base.srs()):
            grid = _grid_in_crs(base, paths[0], request.crs_wkt)
    if request.resolution or request.extent:
        resolution = request.resolution or (grid.pixel_width + grid.pixel_height) / 2.0
        if resolution <= 0:
            raise EngineError("the output resolution must be positive")
        extent = request.extent
        if extent and request.extent_crs_wkt:
            extent = transform_bounds(extent, request.extent_crs_wkt, grid.crs_wkt)
        xmin, ymin, xmax, ymax = extent or grid.bounds
        if xmax <= xmin or ymax <= ymin:
            raise EngineError("the output extent is empty")
        width = max(1, int(round((xmax - xmin) / resolution)))
        height = max(1, int(round((ymax - ymin) / resolution)))
        grid = Grid(grid.crs_wkt, (xmin, resolution, 0.0, ymax, 0.0, -resolution), width, height)
    for path in paths:
        other = grid_of(path)
        if not intersects(transform_bounds(other.bounds, other.crs_wkt, grid.crs_wkt), grid.bounds):
            raise EngineError(f"layer '{path}' does not overlap the output extent; "
                              "check the layers' coordinate systems and the extent")
    return grid
