"""Opening LAS/LAZ clouds: the files a list of paths and folders stands for, what each header says
(extent, point count, colours, coordinate system, height units), and their points chunk by chunk.

laspy (with its lazrs backend for LAZ) is imported only here and only when a cloud is opened, so
the rest of the engine, and the plugin, load without it. The coordinate system comes from the
header's WKT record, else from its GeoTIFF keys (EPSG codes); GDAL's osr reads both, so pyproj is
not needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import osr

from ..errors import EngineError
from ..grid import Bounds, transform_bounds

CLOUD_SUFFIXES = (".las", ".laz")
# GeoTIFF keys of the LASF_Projection record that name a coordinate system by EPSG code.
PROJECTED_CRS_KEY, GEOGRAPHIC_CRS_KEY, VERTICAL_UNITS_KEY = 3072, 2048, 4099
USER_DEFINED = 32767
# EPSG unit codes a VerticalUnitsGeoKey may hold, in metres.
LINEAR_UNITS = {9001: ("metre", 1.0), 9002: ("foot", 0.3048), 9003: ("US survey foot", 1200.0 / 3937.0)}
COLOUR_FIELDS = ("red", "green", "blue")
NIR_FIELD = "nir"


def _laspy():
    try:
        import laspy
    except ImportError:
        raise EngineError("reading point clouds needs the Python package laspy (and lazrs for .laz files); "
                          "install ModalSeg's dependencies") from None
    return laspy


def cloud_files(paths: Sequence[str]) -> List[Path]:
    """The LAS/LAZ files ``paths`` name: files as given, folders as the clouds they hold (sorted)."""
    files: List[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in CLOUD_SUFFIXES)
            if not found:
                raise EngineError(f"folder '{path}' holds no .las or .laz file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise EngineError(f"point cloud '{path}' does not exist")
    if not files:
        raise EngineError("no point cloud was given")
    return files


@dataclass(frozen=True)
class HeightUnit:
    name: str
    metres: float
    source: str  # where it came from, for the log


@dataclass(frozen=True)
class CloudInfo:
    path: Path
    point_count: int
    bounds: Bounds           # in the cloud's own CRS
    z_range: Tuple[float, float]
    crs_wkt: str
    crs_source: str          # "WKT record", "GeoTIFF keys" or "stated by the user"
    height_unit: HeightUnit
    has_colour: bool
    has_nir: bool
    point_format: int


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _header_crs(header, path: Path) -> Tuple[Optional[str], str, Optional[HeightUnit]]:
    """(WKT, where it came from, height unit the keys state) from the header's records."""
    records = list(header.vlrs) + list(getattr(header, "evlrs", None) or [])
    for record in records:
        if record.user_id == "LASF_Projection" and record.record_id == 2112:
            text = getattr(record, "string", "") or ""
            text = text.strip("\x00").strip()
            if text:
                try:
                    return _srs(text).ExportToWkt(), "WKT record", None
                except RuntimeError:
                    raise EngineError(f"point cloud '{path}' has a coordinate system record GDAL cannot read; "
                                      "state its coordinate system") from None
    for record in records:
        if record.user_id == "LASF_Projection" and record.record_id == 34735:
            keys = {key.id: key.value_offset for key in record.geo_keys if key.tiff_tag_location == 0}
            unit = None
            if keys.get(VERTICAL_UNITS_KEY) in LINEAR_UNITS:
                name, metres = LINEAR_UNITS[keys[VERTICAL_UNITS_KEY]]
                unit = HeightUnit(name, metres, "the header's vertical units key")
            code = keys.get(PROJECTED_CRS_KEY) or keys.get(GEOGRAPHIC_CRS_KEY)
            if code and code != USER_DEFINED:
                srs = osr.SpatialReference()
                try:
                    srs.ImportFromEPSG(int(code))
                except RuntimeError:
                    raise EngineError(f"point cloud '{path}' names EPSG:{code} in its GeoTIFF keys, which GDAL "
                                      "does not know; state its coordinate system") from None
                return srs.ExportToWkt(), f"GeoTIFF keys (EPSG:{code})", unit
            if code == USER_DEFINED:
                raise EngineError(f"point cloud '{path}' describes its coordinate system with user-defined "
                                  "GeoTIFF keys only, which ModalSeg cannot read; state its coordinate system")
    return None, "", None


def height_unit_of(srs: osr.SpatialReference, stated: Optional[HeightUnit]) -> HeightUnit:
    """Heights are in the vertical CRS's unit, else in the unit the keys state, else (the LAS custom)
    in the horizontal unit of a projected CRS, else in metres."""
    if srs.IsCompound() or srs.IsVertical():
        return HeightUnit(srs.GetTargetLinearUnitsName("VERT_CS") or "metre",
                          srs.GetTargetLinearUnits("VERT_CS") or 1.0, "the vertical coordinate system")
    if stated is not None:
        return stated
    if srs.IsProjected():
        return HeightUnit(srs.GetLinearUnitsName(), srs.GetLinearUnits(),
                          "assumed equal to the horizontal unit (the header names no vertical unit)")
    return HeightUnit("metre", 1.0, "assumed (geographic coordinates; the header names no vertical unit)")


def read_info(path: Path, stated_crs_wkt: Optional[str] = None) -> CloudInfo:
    """What the header of ``path`` says; ``stated_crs_wkt`` replaces its coordinate system."""
    laspy = _laspy()
    try:
        with laspy.open(str(path)) as reader:
            header = reader.header
            wkt, source, unit = _header_crs(header, path)
    except laspy.errors.LaspyException as exc:
        raise EngineError(f"'{path}' is not a readable LAS/LAZ point cloud ({exc})") from None
    except OSError as exc:
        raise EngineError(f"cannot read point cloud '{path}': {exc}") from None
    if stated_crs_wkt:
        wkt, source, unit = stated_crs_wkt, "stated by the user", None
    if not wkt:
        raise EngineError(f"point cloud '{path}' has no coordinate system in its header; state the "
                          "coordinate system of the cloud")
    dims = set(header.point_format.dimension_names)
    mins, maxs = header.mins, header.maxs
    return CloudInfo(path=path, point_count=int(header.point_count),
                     bounds=(float(mins[0]), float(mins[1]), float(maxs[0]), float(maxs[1])),
                     z_range=(float(mins[2]), float(maxs[2])), crs_wkt=wkt, crs_source=source,
                     height_unit=height_unit_of(_srs(wkt), unit),
                     has_colour=set(COLOUR_FIELDS) <= dims, has_nir=NIR_FIELD in dims,
                     point_format=int(header.point_format.id))


@dataclass
class PointChunk:
    """Points of one chunk in the target CRS and height unit."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    code: np.ndarray                 # uint8 LAS classification
    colour: Optional[np.ndarray]     # uint16, bands x points (R, G, B[, NIR]), when asked for and present

    def __len__(self) -> int:
        return len(self.x)

    def select(self, keep: np.ndarray) -> "PointChunk":
        return PointChunk(self.x[keep], self.y[keep], self.z[keep], self.code[keep],
                          None if self.colour is None else self.colour[:, keep])


class PointTransform:
    """Cloud CRS and height unit -> target CRS and height unit (no-op when they agree)."""

    def __init__(self, info: CloudInfo, target_wkt: str, target_unit: HeightUnit):
        source, target = _srs(info.crs_wkt), _srs(target_wkt)
        self.transform = None if source.IsSame(target) else osr.CoordinateTransformation(source, target)
        self.z_scale = info.height_unit.metres / target_unit.metres

    def apply(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.transform is not None:
            moved = np.asarray(self.transform.TransformPoints(np.column_stack([x, y])))
            x, y = moved[:, 0], moved[:, 1]
        if self.z_scale != 1.0:
            z = z * self.z_scale
        return x, y, z


def read_chunks(info: CloudInfo, transform: PointTransform, chunk_size: int, colours: int) -> Iterator[PointChunk]:
    """The cloud's points, ``chunk_size`` at a time; withheld points are left out. ``colours``: 0 (none),
    3 (RGB) or 4 (RGB + NIR) colour bands to read."""
    laspy = _laspy()
    fields = (COLOUR_FIELDS + (NIR_FIELD,))[:colours]
    try:
        with laspy.open(str(info.path)) as reader:
            for points in reader.chunk_iterator(chunk_size):
                keep = ~np.asarray(points.withheld, bool)
                x, y, z = transform.apply(np.asarray(points.x)[keep], np.asarray(points.y)[keep],
                                          np.asarray(points.z)[keep])
                colour = np.stack([np.asarray(points[name])[keep] for name in fields]) if fields else None
                yield PointChunk(x, y, z, np.asarray(points.classification, np.uint8)[keep], colour)
    except laspy.errors.LaspyException as exc:
        raise EngineError(f"point cloud '{info.path}' cannot be read to the end ({exc})") from None


def bounds_in(info: CloudInfo, target_wkt: str) -> Bounds:
    return transform_bounds(info.bounds, info.crs_wkt, target_wkt)


def target_height_unit(target_wkt: str) -> HeightUnit:
    """Output heights are in the target CRS's linear unit (metres for a geographic CRS)."""
    srs = _srs(target_wkt)
    if srs.IsProjected():
        return HeightUnit(srs.GetLinearUnitsName(), srs.GetLinearUnits(), "the target coordinate system")
    return HeightUnit("metre", 1.0, "the target coordinate system is geographic")

