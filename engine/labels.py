"""Reference labels: their classes, and the one rasteriser that turns label polygons into pixels.

:func:`rasterize_labels` burns the features of an OGR layer (a class field, or none for an area
of interest) onto any :class:`~.grid.Grid`, reprojected on the fly. The evaluation and fine-tuning
both use it, so polygons become pixels the same way everywhere. No qgis here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from osgeo import gdal, ogr, osr

from .errors import WARNING_PREFIX, EngineError
from .gdal_mode import gdal_exceptions
from .grid import Grid, intersects, transform_bounds

LABEL_NODATA = 255  # "no label" in rasterised labels; package class values are 0..254
MAX_CLASS_VALUE = 254


@dataclass(frozen=True)
class EvalClass:
    value: int
    name: str
    color: Optional[str] = None  # "#rrggbb", for the report


def value_lookup(classes: Sequence[EvalClass]) -> Callable[[Any], Optional[int]]:
    """Class value of a label attribute: an integer value, or a class name (case-insensitive).

    ``None`` / empty attributes give ``None`` (feature skipped); anything else that is no class
    raises :class:`EngineError` naming it. With no ``classes``, any integer 0..254 is accepted.
    """
    by_name = {c.name.strip().lower(): c.value for c in classes}
    values = {c.value for c in classes}
    names = ", ".join(f"{c.value} {c.name}" for c in classes)

    def lookup(raw: Any) -> Optional[int]:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, str):
            key = raw.strip().lower()
            if key in by_name:
                return by_name[key]
            try:
                raw = float(key)
            except ValueError:
                raise EngineError(f"label class '{raw.strip()}' is not a known class"
                                  + (f" (classes: {names})" if names else "")
                                  + "; use a class value or name, or fix the label") from None
        if isinstance(raw, float) and not raw.is_integer():
            raise EngineError(f"label class value {raw} is not an integer")
        value = int(raw)
        if classes and value not in values:
            raise EngineError(f"label class value {value} is not a known class (classes: {names})")
        if not 0 <= value <= MAX_CLASS_VALUE:
            raise EngineError(f"label class value {value} is outside 0..{MAX_CLASS_VALUE}")
        return value

    return lookup


@dataclass
class RasterizedLabels:
    path: str
    nodata: int
    features: Dict[int, int]  # class value -> number of features burnt with it
    skipped: int  # features without geometry or class
    messages: List[str] = field(default_factory=list)


def _open_vector(path: str, layer: Optional[str]):
    try:
        ds = ogr.Open(str(path))
    except RuntimeError as exc:
        raise EngineError(f"cannot open the label layer '{path}': {exc}") from None
    if ds is None:
        raise EngineError(f"cannot open the label layer '{path}'")
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    if lyr is None:
        raise EngineError(f"'{path}' has no layer '{layer}'")
    return ds, lyr


@gdal_exceptions()
def rasterize_labels(vector_path: str, class_field: Optional[str], grid: Grid, out_path: str, *,
                     layer: Optional[str] = None, value_of: Optional[Callable[[Any], Optional[int]]] = None,
                     all_touched: bool = False) -> RasterizedLabels:
    """Burn the features of an OGR layer onto ``grid`` as a uint8 GeoTIFF (``LABEL_NODATA`` = no label).

    ``value_of(attribute) -> class value or None`` maps the class field (default:
    :func:`value_lookup` with no class list); with no ``class_field`` every feature burns 1
    (an area-of-interest mask). A layer in another CRS is reprojected; a layer
    without CRS is taken to be in the grid's CRS. Later features win where features overlap.
    """
    value_of = value_of or value_lookup([])
    ds, lyr = _open_vector(vector_path, layer)
    name = lyr.GetName()
    if lyr.GetFeatureCount() == 0:
        raise EngineError(f"the label layer '{name}' has no features")
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    lowered = {f.lower(): i for i, f in enumerate(fields)}
    if class_field is not None and class_field.lower() not in lowered:
        raise EngineError(f"the label layer '{name}' has no field '{class_field}'"
                          f" (fields: {', '.join(fields) or 'none'})")
    index = lowered[class_field.lower()] if class_field is not None else None
    srs = lyr.GetSpatialRef()
    messages = []
    if srs is None:
        messages.append(WARNING_PREFIX + f"the label layer '{name}' has no CRS; taken to be the raster's")
        srs = grid.srs()
    else:
        srs = srs.Clone()
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("labels")
    burn = mem.CreateLayer("labels", srs=srs, geom_type=ogr.wkbUnknown)
    burn.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
    counts: Dict[int, int] = {}
    skipped = 0
    lyr.ResetReading()
    for feature in lyr:
        geom = feature.GetGeometryRef()
        if index is None:
            value: Optional[int] = 1
        else:
            value = value_of(feature.GetField(index) if feature.IsFieldSetAndNotNull(index) else None)
        if geom is None or geom.IsEmpty() or value is None:
            skipped += 1
            continue
        out = ogr.Feature(burn.GetLayerDefn())
        out.SetGeometry(geom.Clone())
        out.SetField("burn", int(value))
        burn.CreateFeature(out)
        counts[value] = counts.get(value, 0) + 1
    if not counts:
        raise EngineError(f"the layer '{name}' has no feature with both a geometry and a class"
                          + (f" in field '{class_field}' (features mapped to 'ignore' do not count)"
                             if class_field else ""))
    xmin, xmax, ymin, ymax = burn.GetExtent()
    layer_bounds = transform_bounds((xmin, ymin, xmax, ymax), srs.ExportToWkt(), grid.crs_wkt)
    if not intersects(layer_bounds, grid.bounds) and not (xmin == xmax or ymin == ymax):
        raise EngineError(f"the label features of '{name}' lie outside the raster; "
                          "check that both are in the right place and coordinate system")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    out_ds = gdal.GetDriverByName("GTiff").Create(
        str(out_path), grid.width, grid.height, 1, gdal.GDT_Byte,
        ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
    out_ds.SetGeoTransform(grid.geotransform)
    out_ds.SetProjection(grid.crs_wkt)
    band = out_ds.GetRasterBand(1)
    band.SetNoDataValue(LABEL_NODATA)
    band.Fill(LABEL_NODATA)
    options = ["ATTRIBUTE=burn"] + (["ALL_TOUCHED=TRUE"] if all_touched else [])
    # GDAL reprojects the features to the raster's CRS when the two differ
    gdal.RasterizeLayer(out_ds, [1], burn, options=options)
    out_ds.FlushCache()
    out_ds = None
    burn = mem = lyr = ds = None
    return RasterizedLabels(str(out_path), LABEL_NODATA, counts, skipped, messages)
