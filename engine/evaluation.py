"""Accuracy of a classified raster against reference labels.

:func:`evaluate_classification` reads the reference *through the classified raster's grid*
(``BandReader``, nearest neighbour, so class values are never blended), strip by strip, so memory
is bounded by a few rows whatever the raster size. Optional ignore value and ISPRS boundary
erosion (reference pixels within ``radius`` px of a class boundary are not scored). Scores come
from :mod:`.metrics` (rows = reference, columns = prediction). :func:`evaluate_polygons` scores
against polygons, rasterised by :func:`.labels.rasterize_labels`; the report files are written by
:mod:`.evaluation_report`. No qgis here: the Processing algorithm only turns layers into paths.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from osgeo import gdal

from . import metrics
from .errors import Cancelled, EngineError
from .gdal_mode import gdal_exceptions
from .grid import grid_of, intersects, open_raster, transform_bounds
from .labels import MAX_CLASS_VALUE, EvalClass, rasterize_labels, value_lookup
from .reader import BandReader

UNCLASSIFIED = "(unclassified)"  # the matrix's extra column: no prediction / a value that is no class
_NO_PREDICTION = 256  # index used for prediction nodata in the value-level matrix (values are 0..255)
_STRIP_PIXELS = 4_000_000  # pixels read per strip


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
@gdal_exceptions()
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


def classes_from_package(meta: Any) -> List[EvalClass]:
    """Classes of a package's metadata (``PackageMetadata``)."""
    return [EvalClass(c.value, c.name, c.color) for c in meta.classes]


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


@gdal_exceptions()
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


@gdal_exceptions()
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
