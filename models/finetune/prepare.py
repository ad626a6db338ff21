"""Fine-tuning's training data: every layer read through the grid ``segment`` would run the
network on (``engine.grid.reference_grid``, resampled into the package's pixel-size range as
``engine.inputs.network_grid_of`` does), cropped to the labelled area and written with the class
indices as one aligned raster stack, so the chips, augmentation and normalisation of
``models.data`` are reused unchanged."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from ...engine.binding import Source, reference_order
from ...engine.errors import WARNING_PREFIX, EngineError
from ...engine.labels import LABEL_NODATA
from ...engine.grid import Grid, GridRequest, reference_grid
from ...engine.inputs import outside_range_text, pixel_size_in_range
from ...engine.normalize import percentile_range
from ...engine.package import ClassInfo, ModelPackage, Normalization, PackageMetadata
from ...engine.reader import SourceReader
from ..data.chips import IGNORE, Area
from ..data.rasters import RasterStack
from .labels import ClassResolver, LabelInput, Log, Window, label_values, split_validation
from .options import FinetuneOptions


# Resampling further than this into the package's range means another domain (a 30 m Landsat scene for
# a 0.5 m model): there the network learns at the layer's own pixel size and the tuned package's range
# widens to it. Closer, it learns at the pixel size it was trained for and segment will run it at.
MAX_RESAMPLING = 4.0
# below this many labelled validation pixels the choice of the best epoch is noise (measured:
# benchmarks.few_labels on the 50 m BD ORTHO area, 48 validation pixels: 52.0 -> 25.1 mIoU on the rest)
FEW_VALIDATION_PIXELS = 500


@dataclass
class TrainingData:
    """What the loop trains on: the full grid (for the metadata), the package's classes plus new
    ones, the training area and validation strips of the stack, each modality's normalisation
    (percentile recipes resolved on the whole layer), labelled pixels per class index and value."""

    grid: Grid
    classes: List[ClassInfo]
    train_area: Area
    val_areas: List[Area]
    norms: Dict[str, Normalization]
    class_frequency: np.ndarray
    label_counts: Dict[int, int]


def _write_tif(path: Path, grid: Grid, data: np.ndarray, nodata: float) -> None:
    from osgeo import gdal

    dtype = gdal.GDT_Byte if data.dtype == np.uint8 else gdal.GDT_Float32
    ds = gdal.GetDriverByName("GTiff").Create(str(path), grid.width, grid.height, data.shape[0], dtype)
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(grid.crs_wkt)
    for i in range(data.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.SetNoDataValue(nodata)
        band.WriteArray(data[i])
        band = None  # a band must not outlive its dataset
    ds = None


def _sub_grid(grid: Grid, window: Window) -> Grid:
    x0, y0, x1, y1 = window
    gt = grid.geotransform
    return Grid(grid.crs_wkt, (gt[0] + x0 * gt[1], gt[1], 0.0, gt[3] + y0 * gt[5], 0.0, gt[5]), x1 - x0, y1 - y0)



def training_grid(grid: Grid, meta: PackageMetadata, log: Log) -> Grid:
    """The grid fine-tuning learns on: the one ``segment`` runs the package on, unless that means
    resampling by more than ``MAX_RESAMPLING`` (then the layer's own grid, said in the log)."""
    gsd = grid.gsd_metres()
    target = pixel_size_in_range(gsd, meta)
    if target == gsd:
        return grid
    range_text = outside_range_text(gsd, meta)
    if max(gsd / target, target / gsd) > MAX_RESAMPLING:
        log(WARNING_PREFIX + f"{range_text}, far outside: fine-tuning learns at {gsd:.3g} m and the tuned "
            "model's range includes it")
        return grid
    log(WARNING_PREFIX + f"{range_text}: fine-tuning learns at {target:g} m, the pixel size segment runs it at "
        "(layers and labels resampled)")
    return grid.rescaled(target / gsd)


def prepare_training_data(package: ModelPackage, sources: List[Source], labels: LabelInput,
                          options: FinetuneOptions, work: Path, log: Log) -> TrainingData:
    """Read, map and crop the labels and layers into an aligned stack under ``work``; log the label
    counts and the validation split. Raises :class:`EngineError` when no label can be used."""
    meta = package.metadata
    grid = training_grid(reference_grid(reference_order(sources), GridRequest()), meta, log)
    resolver = ClassResolver(meta.classes, labels.mapping)
    values = label_values(labels, grid, resolver, work, log)
    classes = resolver.classes
    class_values = [c.value for c in classes]
    index_of = {v: i for i, v in enumerate(class_values)}
    labelled = values != LABEL_NODATA
    if not labelled.any():
        raise EngineError("no labelled pixel falls on the input layers (the labels are empty there, outside "
                          "the area of interest, or all mapped to 'ignore')")
    counts = {c.value: int((values == c.value).sum()) for c in classes}
    for c in classes:
        log(f"  label {c.value} {c.name}: {counts[c.value]} px")
    empty = [c.name for c in classes if counts[c.value] == 0]
    if empty:
        log(WARNING_PREFIX + f"no labelled pixel of class(es) {', '.join(empty)}; the model gets no new examples "
            "of them")
    # crop to the labelled area plus a margin of half a chip (context for the chips at its edge)
    rows, cols = np.nonzero(labelled)
    margin = options.chip // 2
    window = (max(0, int(cols.min()) - margin), max(0, int(rows.min()) - margin),
              min(grid.width, int(cols.max()) + 1 + margin), min(grid.height, int(rows.max()) + 1 + margin))
    crop = _sub_grid(grid, window)
    x0, y0, x1, y1 = window
    index = np.full((crop.height, crop.width), IGNORE, np.uint8)
    sub = values[y0:y1, x0:x1]
    for v, i in index_of.items():
        index[sub == v] = i
    files: Dict[str, Path] = {}
    norms: Dict[str, Normalization] = {}
    for source in sources:
        reader = SourceReader(source, crop)
        data, ok = reader.read(0, 0, crop.width, crop.height)
        spec = meta.modality(source.modality).normalization
        if spec.type == "percentile":  # statistics of the whole layer, as segment computes them
            full = SourceReader(source, grid)
            sample, sample_ok = full.sample()
            full.close()
            lo, hi = percentile_range(sample, sample_ok, spec.low, spec.high)
            spec = Normalization("minmax", min=tuple(lo.tolist()), max=tuple(hi.tolist()), clip=spec.clip)
        reader.close()
        data = np.where(ok[None], data, -9999.0).astype(np.float32)
        files[source.modality] = work / f"{source.modality}.tif"
        _write_tif(files[source.modality], crop, data, -9999.0)
        norms[source.modality] = spec
    label_path = work / "label.tif"
    _write_tif(label_path, crop, np.where(index == IGNORE, 0, index + 1).astype(np.uint8)[None], 0)
    stack = RasterStack("labels", files, label_path)
    train_w, val_w, how = split_validation(index, options.val_fraction)
    train_area = Area(stack, train_w)
    val_areas = [Area(stack, val_w)] if val_w else []
    val_px = 0
    if val_w:
        vx0, vy0, vx1, vy1 = val_w
        val_px = int((index[vy0:vy1, vx0:vx1] != IGNORE).sum())
    tx0, ty0, tx1, ty1 = train_w
    if not (index[ty0:ty1, tx0:tx1] != IGNORE).any():
        raise EngineError("the training part of the labelled area holds no label; lower the validation fraction")
    if val_areas and val_px == 0:
        val_areas = []
    log(f"labelled area: {crop.width} x {crop.height} px at {grid.gsd_metres():.3g} m"
        + (f"; validation = {how} ({val_px} labelled px)" if val_areas else ""))
    if not val_areas:  # its own line: only lines that start with the prefix become warnings
        log(WARNING_PREFIX + "no validation pixels; the best epoch is chosen by training loss")
    elif val_px < FEW_VALIDATION_PIXELS:
        log(WARNING_PREFIX + f"the validation strip holds only {val_px} labelled pixels: too few to tell a better "
            "model from a worse one, so the model written may be worse than the one you started from; label "
            "more, or larger, areas")
    freq = np.bincount(index[index != IGNORE], minlength=len(classes)).astype(np.float64)
    return TrainingData(grid, classes, train_area, val_areas, norms, freq, counts)

