"""The analyst's labels on the training grid: where they are, which class each one is, and the
validation strip cut from them (``engine.labels.rasterize_labels`` is the one rasteriser)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...engine.errors import EngineError
from ...engine.labels import LABEL_NODATA, MAX_CLASS_VALUE, rasterize_labels
from ...engine.grid import Grid
from ...engine.package import ClassInfo
from ...engine.reader import BandReader
from ..data.chips import IGNORE

IGNORE_TARGET = "ignore"
NEW_PREFIX = "new:"
NEW_CLASS_COLORS = ("#6a3d9a", "#b15928", "#fb9a99", "#cab2d6", "#ffff99", "#fdbf6f", "#8dd3c7", "#bebada")
Window = Tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
Log = Callable[[str], None]


@dataclass(frozen=True)
class LabelInput:
    """Where the labels are: a raster (``raster``, ``band``) or polygons (``vector``, ``class_field``)."""

    raster: Optional[str] = None
    band: int = 1
    vector: Optional[str] = None
    layer: Optional[str] = None
    class_field: Optional[str] = None
    aoi: Optional[str] = None  # polygons: only labels inside them are used
    aoi_layer: Optional[str] = None
    mapping: Mapping[str, str] = field(default_factory=dict)  # label -> class value/name, "new:<name>", "ignore"



class ClassResolver:
    """Label value or name -> class value of the new package (package classes, then new ones)."""

    def __init__(self, classes: Sequence[ClassInfo], mapping: Mapping[str, str]):
        self.classes = list(classes)
        self.mapping = {str(k).strip().lower(): str(v).strip() for k, v in mapping.items()}
        self.unknown: Dict[str, int] = {}

    def _package_value(self, key: str) -> Optional[int]:
        k = key.strip().lower()
        for c in self.classes:
            if c.name.strip().lower() == k or str(c.value) == k:
                return c.value
        return None

    def _new_class(self, name: str) -> int:
        for c in self.classes:
            if c.name.lower() == name.lower():
                return c.value
        used = {c.value for c in self.classes}
        value = next(v for v in range(1, MAX_CLASS_VALUE + 1) if v not in used)
        color = NEW_CLASS_COLORS[sum(1 for c in self.classes if c.color in NEW_CLASS_COLORS) % len(NEW_CLASS_COLORS)]
        self.classes.append(ClassInfo(value, name, color))
        return value

    def __call__(self, raw: Any) -> Optional[int]:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        key = str(raw).strip()
        target = self.mapping.get(key.lower())
        if target is not None:
            if target.lower() == IGNORE_TARGET:
                return None
            if target.lower().startswith(NEW_PREFIX):
                return self._new_class(target[len(NEW_PREFIX):].strip() or key)
            value = self._package_value(target)
            if value is None:
                raise EngineError(f"the class mapping sends label '{key}' to '{target}', which is not a class of "
                                  f"the model ({self.describe()}); write 'new:{target}' to add it as a new class")
            return value
        value = self._package_value(key)
        if value is None:
            self.unknown[key] = self.unknown.get(key, 0) + 1
            raise EngineError(f"label class '{key}' is not a class of the model ({self.describe()}); map it to a "
                              f"class, to 'new:<name>' for a new class, or to 'ignore'")
        return value

    def describe(self) -> str:
        return ", ".join(f"{c.value} {c.name}" for c in self.classes)



def label_values(labels: LabelInput, grid: Grid, resolver: ClassResolver, work: Path,
                  log: Log) -> np.ndarray:
    """Class values on ``grid`` (uint8, ``LABEL_NODATA`` = unlabelled), AOI applied."""
    if labels.vector:
        if not labels.class_field:
            raise EngineError("choose the class field of the label polygons")
        burnt = rasterize_labels(labels.vector, labels.class_field, grid, str(work / "labels_full.tif"),
                                 layer=labels.layer, value_of=resolver)
        for m in burnt.messages:
            log(m)
        if burnt.skipped:
            log(f"{burnt.skipped} label feature(s) without geometry, or mapped to 'ignore', were skipped")
        reader = BandReader(burnt.path, (1,), grid, "nearest")
        data, ok = reader.read(0, 0, grid.width, grid.height)
        reader.close()
        values = np.where(ok, data[0], LABEL_NODATA).astype(np.uint8)
    elif labels.raster:
        reader = BandReader(labels.raster, (labels.band,), grid, "nearest")
        data, ok = reader.read(0, 0, grid.width, grid.height)
        reader.close()
        raw = np.where(ok, np.rint(data[0]), -1).astype(np.int64)
        values = np.full(raw.shape, LABEL_NODATA, np.uint8)
        for v in np.unique(raw[ok]):
            target = resolver(int(v))
            if target is not None:
                values[raw == v] = target
    else:
        raise EngineError("give labels: a label raster or polygons with a class field")
    if labels.aoi:
        mask = rasterize_labels(labels.aoi, None, grid, str(work / "aoi.tif"), layer=labels.aoi_layer)
        reader = BandReader(mask.path, (1,), grid, "nearest")
        inside, ok = reader.read(0, 0, grid.width, grid.height)
        reader.close()
        values[~(ok & (inside[0] == 1))] = LABEL_NODATA
    return values


def split_validation(index: np.ndarray, val_fraction: float) -> Tuple[Window, Optional[Window], str]:
    """Training and validation windows: a strip along one side of the labelled area holding about
    ``val_fraction`` of the labelled pixels (spatially separate from training). Of the four sides, the
    strip whose classes are most like the whole set's (most classes present, then the closest class
    shares; ties: across the longer side, right or bottom first): a strip by position alone may hold
    one class (sparse labels, a lake along one edge) and then cannot tell a better model from a worse
    one (measured: a Landsat scene's bottom strip, all water, scored 0.000 at every epoch)."""
    h, w = index.shape
    if val_fraction <= 0:
        return (0, 0, w, h), None, "none"
    labelled = index != IGNORE
    values = index[labelled].astype(np.int64)
    size = int(values.max()) + 1 if values.size else 1
    overall = np.bincount(values, minlength=size) / max(1, values.size)
    sides = ("right", "left", "bottom", "top") if w >= h else ("bottom", "top", "right", "left")
    best = None
    for rank, side in enumerate(sides):
        train, val, how = _strip(labelled, side, val_fraction)
        x0, y0, x1, y1 = val
        strip = index[y0:y1, x0:x1]
        held = np.bincount(strip[strip != IGNORE].astype(np.int64), minlength=size)
        shares = held / max(1, held.sum())
        key = (-int((held > 0).sum()), float(np.abs(shares - overall).sum()), rank)
        if best is None or key < best[0]:
            best = (key, train, val, how)
    return best[1], best[2], best[3]


def _strip(labelled: np.ndarray, side: str, val_fraction: float) -> Tuple[Window, Window, str]:
    """The validation strip along ``side`` holding about ``val_fraction`` of the labelled pixels."""
    h, w = labelled.shape
    along_columns = side in ("right", "left")
    counts = labelled.sum(0 if along_columns else 1)
    n = w if along_columns else h
    if side in ("right", "bottom"):  # the first column / row after the training share
        cut = int(np.searchsorted(np.cumsum(counts), counts.sum() * (1.0 - val_fraction))) + 1
    else:  # the first column / row after the validation share
        cut = int(np.searchsorted(np.cumsum(counts), counts.sum() * val_fraction)) + 1
    cut = min(max(cut, 1), n - 1)
    if side == "right":
        return (0, 0, cut, h), (cut, 0, w, h), f"right strip from column {cut}"
    if side == "bottom":
        return (0, 0, w, cut), (0, cut, w, h), f"bottom strip from row {cut}"
    if side == "left":
        return (cut, 0, w, h), (0, 0, cut, h), f"left strip before column {cut}"
    return (0, cut, w, h), (0, 0, w, cut), f"top strip before row {cut}"
