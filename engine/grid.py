"""The reference grid the network runs on: CRS, north-up geotransform and size."""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator, List, Optional, Sequence, Tuple

from osgeo import gdal, osr

from .errors import EngineError
from .gdal_mode import gdal_exceptions
from .sheets import sheets_vrt

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
    def is_north_up(self) -> bool:
        """Rows run north to south and columns west to east, without rotation (what GDAL's
        direct window reads assume; other layouts are read through a warped VRT)."""
        _, px, rx, _, ry, py = self.geotransform
        return rx == 0 and ry == 0 and px > 0 and py < 0

    @property
    def has_crs(self) -> bool:
        return bool(self.crs_wkt)

    @property
    def bounds(self) -> Bounds:
        x0, px, _, y0, _, py = self.geotransform
        return (x0, y0 + py * self.height, x0 + px * self.width, y0)

    def srs(self) -> osr.SpatialReference:
        """The CRS; an empty one for a grid in a layer's own coordinates (no CRS)."""
        srs = osr.SpatialReference()
        if self.crs_wkt:
            srs.ImportFromWkt(self.crs_wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return srs

    def gsd_metres(self) -> float:
        """Mean pixel size in metres, for geographic CRSs too (at the grid's centre latitude);
        without a CRS the coordinates are taken as metres."""
        size = (abs(self.pixel_width) + abs(self.pixel_height)) / 2.0
        if not self.has_crs:
            return size
        srs = self.srs()
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

    def decimated(self, max_size: int) -> "Grid":
        """Same extent with at most ``max_size`` pixels a side (itself when already that small): for
        whole-layer statistics read cheaply."""
        factor = max(self.width, self.height) / max_size
        return self.rescaled(factor) if factor > 1 else self


@dataclass(frozen=True)
class GridRequest:
    """What the caller asks of the output grid; anything left ``None`` comes from the reference layer."""

    crs_wkt: Optional[str] = None
    extent: Optional[Bounds] = None  # in extent_crs_wkt, else in the output CRS
    resolution: Optional[float] = None  # in output CRS units
    extent_crs_wkt: Optional[str] = None


_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def _gdal_message(exc: Optional[BaseException]) -> str:
    """GDAL's reason, whether it raised (exceptions on) or only set its last error (off)."""
    text = str(exc) if exc is not None else gdal.GetLastErrorMsg()
    return " ".join(text.split())[:300]


def _is_tiff(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in _TIFF_SIGNATURES
    except OSError:
        return False


def open_raster(path: str) -> gdal.Dataset:
    """The dataset, or an ``EngineError`` saying in one sentence why the file cannot be read."""
    path = str(path)
    if os.path.isdir(path):  # a folder of sheets: one mosaic
        return open_raster(sheets_vrt(path))
    error: Optional[BaseException] = None
    try:
        ds = gdal.Open(path)
    except RuntimeError as exc:
        ds, error = None, exc
    if ds is not None:
        return ds
    reason = _gdal_message(error)
    if not path.startswith("/vsi") and not os.path.exists(path):
        raise EngineError(f"raster '{path}' does not exist")
    if _is_tiff(path):
        raise EngineError(f"cannot read '{path}': the file is damaged ({reason})")
    raise EngineError(f"'{path}' exists but is not a raster GDAL can open ({reason})")


@contextmanager
def reading(path: str) -> Iterator[None]:
    """GDAL failures while reading ``path`` (missing tiles of a truncated file, a broken block)
    become one plain sentence naming the file."""
    try:
        yield
    except RuntimeError as exc:
        raise EngineError(f"cannot read '{path}': the file is damaged ({_gdal_message(exc)})") from None


def read_failed(path: str) -> EngineError:
    """The error for a read that returned ``None`` (GDAL's exceptions off)."""
    return EngineError(f"cannot read '{path}': the file is damaged ({_gdal_message(None)})")


def file_grid(path: str) -> Grid:
    """The raster's own grid, in whatever layout it is stored (south-up, rotated...)."""
    ds = open_raster(path)
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise EngineError(f"raster '{path}' has no georeferencing (no geotransform: its pixels have no "
                          "position on the ground)")
    return Grid(ds.GetProjection() or "", tuple(gt), ds.RasterXSize, ds.RasterYSize)


@gdal_exceptions()
def grid_of(path: str) -> Grid:
    """The north-up grid covering the raster at its resolution: its own grid when stored north-up,
    else the grid GDAL would warp it to (south-up and rotated rasters are read through a warped VRT)."""
    own = file_grid(path)
    if own.is_north_up:
        return own
    try:
        vrt = gdal.AutoCreateWarpedVRT(open_raster(path), None, None, gdal.GRA_NearestNeighbour)
    except RuntimeError as exc:
        raise EngineError(f"cannot find a north-up grid for '{path}': {_gdal_message(exc)}") from None
    if vrt is None:
        raise EngineError(f"cannot find a north-up grid for '{path}': {_gdal_message(None)}")
    return Grid(own.crs_wkt, tuple(vrt.GetGeoTransform()), vrt.RasterXSize, vrt.RasterYSize)


def same_crs(a_wkt: str, b_wkt: str) -> bool:
    """Whether two CRSs are the same; two missing CRSs (layers' own coordinates) count as the same."""
    if not a_wkt or not b_wkt:
        return not a_wkt and not b_wkt
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(a_wkt)
    b.ImportFromWkt(b_wkt)
    return bool(a.IsSame(b))


def transform_bounds(bounds: Bounds, src_wkt: str, dst_wkt: str, densify: int = 21) -> Bounds:
    if same_crs(src_wkt, dst_wkt):
        return bounds
    if not src_wkt or not dst_wkt:
        raise EngineError("cannot transform coordinates between a layer without a coordinate reference system "
                          "and one with a CRS")
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(src_wkt)
    dst.ImportFromWkt(dst_wkt)
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


def _check_crs_present(paths: Sequence[str], grids: Sequence[Grid]) -> None:
    """Layers without a CRS can run together in their own coordinates, but not beside layers with one."""
    missing: List[str] = [path for path, grid in zip(paths, grids) if not grid.has_crs]
    if missing and len(missing) < len(paths):
        names = ", ".join(f"'{path}'" for path in dict.fromkeys(missing))
        raise EngineError(f"{names} {'has' if len(missing) == 1 else 'have'} no coordinate reference system while "
                          "the other layers have one; assign it (Raster > Projections > Assign Projection) first")


@gdal_exceptions()
def reference_grid(paths: Sequence[str], request: GridRequest) -> Grid:
    """Grid of ``paths[0]`` (the caller puts the reference layer first), adjusted by ``request``,
    after checking every layer overlaps it. When no layer has a CRS, the grid has none either and
    everything stays in the layers' own coordinates."""
    if not paths:
        raise EngineError("no input layer was given")
    grids = [grid_of(path) for path in paths]
    _check_crs_present(paths, grids)
    base = grids[0]
    grid = base
    if not base.has_crs:
        if request.crs_wkt:
            raise EngineError("the layers have no coordinate reference system, so they cannot be reprojected to "
                              "the output CRS; leave the output CRS empty or assign the layers their CRS")
        request = replace(request, extent_crs_wkt=None)  # an extent is in the layers' own coordinates
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
    for path, other in zip(paths, grids):
        if not intersects(transform_bounds(other.bounds, other.crs_wkt, grid.crs_wkt), grid.bounds):
            raise EngineError(f"layer '{path}' does not overlap the output extent; "
                              "check the layers' coordinate systems and the extent")
    return grid
