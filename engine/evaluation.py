"""Accuracy of a classified raster against reference labels, and the one label rasteriser.

* :func:`rasterize_labels` burns polygons with a class field onto any :class:`Grid` (GDAL /
  OGR, reprojected on the fly). ``evaluate`` and fine-tuning both use it: there is one way to
  turn label polygons into pixels.
* :func:`evaluate_classification` reads the reference *through the classified raster's grid*
  (``BandReader``, nearest neighbour, so class values are never blended), strip by strip, so
  memory is bounded by a few rows whatever the raster size. Optional ignore value and ISPRS
  boundary erosion (reference pixels within ``radius`` px of a class boundary are not scored).
  Scores come from :mod:`.metrics` (rows = reference, columns = prediction).
* :func:`write_csv` / :func:`write_html`: the report files. The HTML embeds the confusion matrix
  as a PNG when matplotlib is importable and always as a colour-shaded table.

No qgis here: the Processing algorithm only turns layers into paths.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from . import metrics
from .errors import Cancelled, EngineError
from .grid import Grid, grid_of, intersects, open_raster, transform_bounds
from .reader import BandReader

gdal.UseExceptions()
ogr.UseExceptions()

LABEL_NODATA = 255  # "no label" in rasterised labels; package class values are 0..254
MAX_CLASS_VALUE = 254
UNCLASSIFIED = "(unclassified)"  # the matrix's extra column: no prediction / a value that is no class
_NO_PREDICTION = 256  # index used for prediction nodata in the value-level matrix (values are 0..255)
_STRIP_PIXELS = 4_000_000  # pixels read per strip


@dataclass(frozen=True)
class EvalClass:
    value: int
    name: str
    color: Optional[str] = None  # "#rrggbb", for the report


@dataclass
class EvaluationResult:
    """Confusion matrix over ``classes`` plus an "unclassified" prediction column (last index)."""

    classes: List[EvalClass]
    matrix: np.ndarray  # (N+1) x (N+1) int64; the last row is always empty
    summary: Dict[str, Any]
    pixels: Dict[str, int] = field(default_factory=dict)  # scored / ignored / eroded / unclassified
    messages: List[str] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.classes]

    def rows(self) -> List[Dict[str, Any]]:
        """One dict per class: value, name, IoU, F1, precision, recall, support (reference px)."""
        pc = metrics.per_class(self.matrix)
        support = self.matrix.sum(1)
        predicted = self.matrix.sum(0)
        return [{"value": c.value, "name": c.name, "iou": _num(pc["iou"][i]), "f1": _num(pc["f1"][i]),
                 "precision": _num(pc["precision"][i]), "recall": _num(pc["recall"][i]),
                 "support": int(support[i]), "predicted": int(predicted[i])}
                for i, c in enumerate(self.classes)]

    def mean_row(self) -> Dict[str, Any]:
        """Means over the classes (undefined scores skipped), laid out like :meth:`rows`."""
        pc = metrics.per_class(self.matrix)
        n = len(self.classes)
        means = {k: _num(metrics.mean_over(pc[k], range(n))) for k in ("precision", "recall")}
        return {"value": None, "name": "mean over classes", "iou": _num(self.summary["miou"]),
                "f1": _num(self.summary["mf1"]), **means, "support": int(self.matrix[:n].sum()),
                "predicted": int(self.matrix[:, :n].sum())}


def _num(x: float) -> Optional[float]:
    return float(x) if x is not None and math.isfinite(float(x)) else None


# -- classes ---------------------------------------------------------------------------------
def raster_classes(path: str, band: int = 1) -> List[EvalClass]:
    """Classes a classified raster names itself (GDAL category names, colours from its table)."""
    ds = open_raster(path)
    b = ds.GetRasterBand(band)
    names = b.GetCategoryNames()
    if names is None:  # some GDAL 3.6 Python builds return None here although the file has names
        info = gdal.Info(ds, format="json", computeMinMax=False, stats=False, reportHistograms=False)
        names = info["bands"][band - 1].get("categories") or []
    table = b.GetColorTable()
    nodata = b.GetNoDataValue()
    out = []
    for value, name in enumerate(names):
        if not name or value > MAX_CLASS_VALUE or (nodata is not None and value == int(nodata)):
            continue
        color = None
        if table is not None and value < table.GetCount():
            r, g, bl = table.GetColorEntry(value)[:3]
            color = f"#{r:02x}{g:02x}{bl:02x}"
        out.append(EvalClass(value, str(name), color))
    return out


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


# -- rasterising -----------------------------------------------------------------------------
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
        messages.append(f"Warning: the label layer '{name}' has no CRS; taken to be the raster's")
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


# -- evaluation ------------------------------------------------------------------------------
def boundary_mask(values: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` px (disk) of a boundary between two different valid classes.

    Invalid / ignored pixels are no class: they neither create a boundary nor get eroded.
    """
    if radius <= 0:
        return np.zeros(values.shape, bool)
    from scipy import ndimage

    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = (xx * xx + yy * yy) <= radius * radius
    v = values.astype(np.int32)
    high = ndimage.maximum_filter(np.where(valid, v, -1), footprint=disk, mode="constant", cval=-1)
    low = ndimage.minimum_filter(np.where(valid, v, 1 << 20), footprint=disk, mode="constant", cval=1 << 20)
    return valid & (high != low)


def evaluate_classification(classified_path: str, reference_path: str, *, classes: Sequence[EvalClass] = (),
                            reference_band: int = 1, ignore_value: Optional[int] = None,
                            erosion_radius: int = 0,
                            progress: Optional[Callable[[float, str], None]] = None,
                            is_cancelled: Optional[Callable[[], bool]] = None) -> EvaluationResult:
    """Confusion matrix of ``classified_path`` (band 1) against the reference raster.

    The reference is read on the classified raster's grid with nearest-neighbour resampling; its
    nodata (and ``ignore_value``) is not scored. ``classes``: the class list (e.g. the raster's
    category names or a package's classes); empty = every value found in either raster.
    A prediction that is nodata or no class over a scored pixel counts in the "unclassified"
    column (a miss). Reference values that are no class raise :class:`EngineError`.
    """
    grid = grid_of(classified_path)
    ref_grid = grid_of(reference_path)
    if not intersects(transform_bounds(ref_grid.bounds, ref_grid.crs_wkt, grid.crs_wkt), grid.bounds):
        raise EngineError("the reference labels do not overlap the classified raster; "
                          "check both layers' extents and coordinate systems")
    predicted = BandReader(classified_path, (1,), grid, "nearest")
    reference = BandReader(reference_path, (reference_band,), grid, "nearest")
    radius = max(0, int(erosion_radius))
    rows = max(16, _STRIP_PIXELS // max(1, grid.width))
    value_cm = np.zeros((_NO_PREDICTION + 1, _NO_PREDICTION + 1), np.int64)
    ignored = eroded = 0
    too_large: set = set()
    try:
        for y in range(0, grid.height, rows):
            if is_cancelled and is_cancelled():
                raise Cancelled("evaluation cancelled")
            h = min(rows, grid.height - y)
            top = max(0, y - radius)
            bottom = min(grid.height, y + h + radius)
            ref, ref_ok = reference.read(0, top, grid.width, bottom - top)
            ref, ref_ok = ref[0], ref_ok.copy()
            ref_int = np.where(ref_ok, np.rint(ref), 0).astype(np.int64)
            if ignore_value is not None:
                ignore = ref_ok & (ref_int == int(ignore_value))
                ref_ok &= ~ignore
                ignored += int(ignore[y - top:y - top + h].sum())
            big = ref_ok & ((ref_int < 0) | (ref_int > 255))
            if big.any():
                too_large.update(np.unique(ref_int[big])[:5].tolist())
                ref_ok &= ~big
            edge = boundary_mask(ref_int, ref_ok, radius)[y - top:y - top + h]
            ref_int, ref_ok = ref_int[y - top:y - top + h], ref_ok[y - top:y - top + h]
            eroded += int((edge & ref_ok).sum())
            ref_ok &= ~edge
            pred, pred_ok = predicted.read(0, y, grid.width, h)
            pred_int = np.where(pred_ok[None], np.rint(pred), _NO_PREDICTION)[0].astype(np.int64)
            pred_int[(pred_int < 0) | (pred_int > 255)] = _NO_PREDICTION
            value_cm += metrics.confusion_matrix(ref_int, pred_int, _NO_PREDICTION + 1, valid=ref_ok)
            if progress:
                progress((y + h) / grid.height, f"rows {y + h}/{grid.height}")
    finally:
        predicted.close()
        reference.close()
    if too_large:
        raise EngineError(f"reference class values must lie in 0..255; found {sorted(too_large)}")
    if value_cm.sum() == 0:
        raise EngineError("no reference label falls on the classified raster (the labels are empty there, "
                          "all nodata, or all ignored / eroded)")
    ref_values = set(np.nonzero(value_cm.sum(1))[0].tolist())
    classes = list(classes)
    if not classes:
        found = ref_values | set(np.nonzero(value_cm[:, :256].sum(0))[0].tolist())
        classes = [EvalClass(v, f"class {v}") for v in sorted(found)]
    class_values = [c.value for c in classes]
    unknown = sorted(ref_values - set(class_values))
    if unknown:
        listed = ", ".join(f"{c.value} {c.name}" for c in classes)
        raise EngineError(f"the reference holds class value(s) {unknown} that are not classes of the "
                          f"classification ({listed}); set them as the ignore value or recode the labels")
    # value-level matrix -> class order, with every non-class prediction in the last column
    n = len(classes)
    cm = np.zeros((n + 1, n + 1), np.int64)
    rows_sel = value_cm[class_values]
    cm[:n, :n] = rows_sel[:, class_values]
    cm[:n, n] = rows_sel.sum(1) - cm[:n, :n].sum(1)
    names = [c.name for c in classes] + [UNCLASSIFIED]
    summary = metrics.summarize(cm, names, foreground=list(range(n)))
    messages = []
    absent = [c.name for i, c in enumerate(classes) if cm[i].sum() == 0]
    if absent:
        messages.append(f"no reference pixel of class(es) {', '.join(absent)}: their scores are "
                        "undefined unless predicted (then IoU 0), and left out of the means when undefined")
    pixels = {"scored": int(cm.sum()), "ignored": ignored, "eroded": eroded, "unclassified": int(cm[:, n].sum())}
    if pixels["unclassified"]:
        messages.append(f"{pixels['unclassified']} labelled pixel(s) have no class in the classified "
                        "raster (nodata or an unknown value); they count as errors")
    return EvaluationResult(classes, cm, summary, pixels, messages)


def evaluate_polygons(classified_path: str, vector_path: str, class_field: str, work_dir: str, *,
                      layer: Optional[str] = None, classes: Sequence[EvalClass] = (), **kwargs: Any
                      ) -> EvaluationResult:
    """:func:`evaluate_classification` against polygons rasterised on the classified grid."""
    labels = rasterize_labels(vector_path, class_field, grid_of(classified_path),
                              os.path.join(work_dir, "reference_labels.tif"), layer=layer,
                              value_of=value_lookup(classes))
    result = evaluate_classification(classified_path, labels.path, classes=classes, **kwargs)
    result.messages = labels.messages + result.messages
    if labels.skipped:
        result.messages.append(f"{labels.skipped} label feature(s) without geometry or class were skipped")
    return result


# -- reports ---------------------------------------------------------------------------------
SUMMARY_KEYS = (("oa", "overall accuracy"), ("miou", "mean IoU"), ("mf1", "mean F1"), ("kappa", "kappa"))


def write_csv(result: EvaluationResult, path: str) -> None:
    """Per-class scores, the summary, then the confusion matrix (rows = reference)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["value", "class", "iou", "f1", "precision", "recall", "support_px", "predicted_px"])
        for r in result.rows():
            w.writerow([r["value"], r["name"]] + [_fmt(r[k]) for k in ("iou", "f1", "precision", "recall")]
                       + [r["support"], r["predicted"]])
        w.writerow([])
        for key, label in SUMMARY_KEYS:
            w.writerow([key, label, _fmt(result.summary[key])])
        for key, value in result.pixels.items():
            w.writerow([f"{key}_px", f"{key} pixels", value])
        w.writerow([])
        w.writerow(["reference \\ predicted"] + result.names + [UNCLASSIFIED])
        for i, name in enumerate(result.names):
            w.writerow([name] + [int(v) for v in result.matrix[i]])


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.6f}" if isinstance(x, float) else str(x)


def _matrix_png(result: EvaluationResult) -> Optional[bytes]:
    """Row-normalised confusion matrix as a PNG; None without matplotlib (no hard dependency)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    n = len(result.classes)
    cm = result.matrix[:n].astype(np.float64)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    labels = result.names + [UNCLASSIFIED]
    size = 2.5 + 0.55 * (n + 1)
    fig = Figure(figsize=(size + 1.0, size))  # no pyplot: no global state inside QGIS
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n + 1))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels[:n], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n + 1):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the reference row")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _shade(share: float) -> str:
    """Blue shade for a table cell (white at 0, dark blue at 1)."""
    r = int(247 - share * (247 - 8))
    g = int(251 - share * (251 - 48))
    b = int(255 - share * (255 - 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def write_html(result: EvaluationResult, path: str, title: str = "ModalSeg accuracy assessment",
               details: Sequence[Tuple[str, str]] = ()) -> None:
    """A self-contained HTML report (the picture is embedded as a data URI)."""
    e = html.escape
    n = len(result.classes)
    parts = [f"<html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;font-size:10pt} table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #bbb;padding:3px 6px;text-align:right} th{background:#eee}"
             "td.name{text-align:left}</style></head><body>", f"<h2>{e(title)}</h2>"]
    if details:
        parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td class='name'>{e(v)}</td></tr>"
                                         for k, v in details) + "</table>")
    parts.append("<h3>Summary</h3><table>" + "".join(
        f"<tr><th>{e(label)}</th><td>{_fmt(result.summary[key]) or 'n/a'}</td></tr>" for key, label in SUMMARY_KEYS)
        + "".join(f"<tr><th>{e(k)} pixels</th><td>{v}</td></tr>" for k, v in result.pixels.items()) + "</table>")
    parts.append("<h3>Per class</h3><table><tr><th>value</th><th>class</th><th>IoU</th><th>F1</th>"
                 "<th>precision</th><th>recall</th><th>reference px</th><th>predicted px</th></tr>")
    for r in result.rows():
        parts.append(f"<tr><td>{r['value']}</td><td class='name'>{e(r['name'])}</td>"
                     + "".join(f"<td>{_fmt(r[k]) or 'n/a'}</td>" for k in ("iou", "f1", "precision", "recall"))
                     + f"<td>{r['support']}</td><td>{r['predicted']}</td></tr>")
    parts.append("</table><h3>Confusion matrix</h3><p>Rows: reference; columns: prediction. "
                 "Cell shade: share of the reference row.</p>")
    png = _matrix_png(result)
    if png is not None:
        parts.append("<img alt='confusion matrix' src='data:image/png;base64,"
                     + base64.b64encode(png).decode("ascii") + "'/>")
    names = result.names + [UNCLASSIFIED]
    parts.append("<table><tr><th>reference \\ predicted</th>" + "".join(f"<th>{e(x)}</th>" for x in names) + "</tr>")
    for i in range(n):
        row = result.matrix[i]
        total = max(int(row.sum()), 1)
        parts.append(f"<tr><th>{e(names[i])}</th>" + "".join(
            f"<td style='background:{_shade(v / total)};color:{'white' if v / total > 0.5 else 'black'}'>{int(v)}</td>"
            for v in row) + "</tr>")
    parts.append("</table>")
    if result.messages:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(m)}</li>" for m in result.messages) + "</ul>")
    parts.append("</body></html>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def classes_from_package(meta: Any) -> List[EvalClass]:
    """Classes of a package's metadata (``PackageMetadata``)."""
    return [EvalClass(c.value, c.name, c.color) for c in meta.classes]


def classes_from_pairs(pairs: Mapping[int, str]) -> List[EvalClass]:
    return [EvalClass(int(v), str(n)) for v, n in sorted(pairs.items())]
