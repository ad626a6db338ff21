"""Classified LAS/LAZ clouds to aligned rasters: DSM, DTM, nDSM, optical from point colours, labels.

The output grid is a reference raster's (exactly) or the clouds' extent snapped to the pixel
size. It is cut into windows of at most ``window_cells`` x ``window_cells`` cells (plus a halo, so
that gap filling does not stop at window edges); each window streams the points of the clouds
that overlap it, chunk by chunk, into per-cell running values (``cells.WindowCells``) and writes
its rasters. Memory is set by the window and chunk sizes: a 50-million-point tile costs no more
than a small one, and a folder of tiles no more than one window. A cloud overlapping several
windows is read once per window (the log says how many windows there are).

Every output is written under a hidden temporary name and renamed only when all are finished
(``GeoTiffWriter``), so a failed or cancelled run leaves nothing behind.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import osr

from ..errors import WARNING_PREFIX, Cancelled, EngineError
from ..gdal_mode import gdal_exceptions
from ..grid import Bounds, Grid, grid_of, intersects
from ..package import ClassInfo
from ..writers import GeoTiffWriter, class_nodata_value
from .cells import COLOUR_NODATA, HEIGHT_NODATA, WindowCells
from .classes import CODE_COUNT, CODE_MEANINGS, ClassMapping, default_rows, resolve_mapping
from .clouds import (CloudInfo, HeightUnit, PointTransform, bounds_in, cloud_files, read_chunks, read_info,
                     target_height_unit)

Log = Callable[[str], None]
Progress = Callable[[float, Optional[str]], None]
OUTPUT_KINDS = ("dsm", "dtm", "ndsm", "optical", "nir", "labels")
COLOUR_GROUPS = {"optical": 3, "nir": 1}  # output -> colour bands it averages (R, G, B / NIR)
COLOUR_BANDS = {"optical": ("red", "green", "blue"), "nir": ("nir",)}


@dataclass(frozen=True)
class RasterOutputs:
    """Destination GeoTIFF per output; ``None`` skips it."""

    dsm: Optional[str] = None
    dtm: Optional[str] = None
    ndsm: Optional[str] = None
    optical: Optional[str] = None
    nir: Optional[str] = None
    labels: Optional[str] = None

    def requested(self) -> Dict[str, str]:
        return {kind: getattr(self, kind) for kind in OUTPUT_KINDS if getattr(self, kind)}


@dataclass(frozen=True)
class RasterizeOptions:
    reference: Optional[str] = None         # raster whose grid the outputs take exactly
    pixel_size_m: float = 0.5               # without a reference: pixel size in metres
    target_crs_wkt: Optional[str] = None    # without a reference: output CRS (default: the first cloud's)
    source_crs_wkt: Optional[str] = None    # replaces the clouds' own CRS (needed when they have none)
    nodata_distance: float = 2.0            # cells farther than this (in pixels) from any point are nodata
    class_rows: Sequence[Tuple[int, str]] = field(default_factory=default_rows)
    chunk_size: int = 1_000_000             # points read at a time
    window_cells: int = 2048                # largest window side, in cells
    halo: int = 64                          # cells read around each window for gap filling


@dataclass
class RasterizeReport:
    outputs: Dict[str, str]
    grid: Grid
    height_unit: HeightUnit
    points_read: int = 0
    points_binned: int = 0
    windows: int = 0
    seconds: float = 0.0
    class_counts: Dict[int, int] = field(default_factory=dict)
    skipped: List[str] = field(default_factory=list)


@gdal_exceptions()
def rasterize_point_cloud(clouds: Sequence[str], outputs: RasterOutputs, classes: Sequence[ClassInfo] = (),
                          options: RasterizeOptions = RasterizeOptions(), log: Log = print,
                          progress: Progress = lambda fraction, text: None,
                          is_cancelled: Callable[[], bool] = lambda: False) -> RasterizeReport:
    """Rasterise ``clouds`` (LAS/LAZ files or folders of them) into ``outputs``; labels take the
    values, names and colours of ``classes`` (a model package's). Raises EngineError on bad input and
    Cancelled when ``is_cancelled`` turns true; neither leaves an output behind."""
    started = time.perf_counter()
    wanted = outputs.requested()
    if not wanted:
        raise EngineError("no output was requested")
    if "labels" in wanted and not classes:
        raise EngineError("a label raster needs the classes of a model package")
    if options.nodata_distance < 0:
        raise EngineError("the nodata distance cannot be negative")
    infos = [read_info(path, options.source_crs_wkt) for path in cloud_files(clouds)]
    grid = _output_grid(infos, options, log)
    unit = target_height_unit(grid.crs_wkt)
    infos = _overlapping(infos, grid, options.reference, log)
    for info in infos:
        log(_describe_cloud(info, unit))
    wanted = _drop_uncoloured(wanted, infos, log)
    nodata = class_nodata_value(classes) if classes else 0
    mapping = resolve_mapping(options.class_rows, classes, nodata, log if "labels" in wanted else lambda text: None)
    report = RasterizeReport({}, grid, unit)
    run = _Run(infos, grid, unit, wanted, classes, mapping, options, report, log, progress, is_cancelled)
    try:
        run.all_windows()
        run.check_result()
        report.outputs = run.publish()
    finally:
        run.abort()
    report.seconds = time.perf_counter() - started
    report.class_counts = run.class_counts()
    _log_classes(report.class_counts, mapping, classes, log)
    log(f"{report.points_binned:,} of {report.points_read:,} points read fell on the grid; "
        f"{report.points_read / max(report.seconds, 1e-9):,.0f} points/s")
    return report


# -- the grid -----------------------------------------------------------------------------------
def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    return srs


def _output_grid(infos: Sequence[CloudInfo], options: RasterizeOptions, log: Log) -> Grid:
    if options.reference:
        grid = grid_of(options.reference)
        log(f"Output grid: the reference raster '{options.reference}' ({grid.width} x {grid.height} pixels of "
            f"{grid.pixel_width:g} x {grid.pixel_height:g}, {_srs(grid.crs_wkt).GetName()})")
        return grid
    if options.pixel_size_m <= 0:
        raise EngineError("the pixel size must be positive")
    target = options.target_crs_wkt or infos[0].crs_wkt
    extent = _union([bounds_in(info, target) for info in infos])
    pixel = _pixel_in_crs_units(options.pixel_size_m, extent, target)
    # Corners on multiples of the pixel size. A cell holds its left and top edges but not its right
    # and bottom ones, so the right and bottom corners lie strictly beyond the last points.
    xmin = math.floor(extent[0] / pixel) * pixel
    ymin = (math.ceil(extent[1] / pixel) - 1) * pixel
    xmax = (math.floor(extent[2] / pixel) + 1) * pixel
    ymax = math.ceil(extent[3] / pixel) * pixel
    grid = Grid(_srs(target).ExportToWkt(), (xmin, pixel, 0.0, ymax, 0.0, -pixel),
                int(round((xmax - xmin) / pixel)), int(round((ymax - ymin) / pixel)))
    log(f"Output grid: {grid.width} x {grid.height} pixels of {pixel:g} {_unit_name(target)} "
        f"({options.pixel_size_m:g} m), {_srs(target).GetName()}, snapped to the pixel size around the clouds")
    return grid


def _unit_name(wkt: str) -> str:
    srs = _srs(wkt)
    return srs.GetLinearUnitsName() if srs.IsProjected() else "degree"


def _pixel_in_crs_units(metres: float, extent: Bounds, wkt: str) -> float:
    """A pixel size in metres in the CRS's units (degrees at the extent's centre for a geographic CRS),
    by asking Grid.gsd_metres how many metres one unit is."""
    unit_grid = Grid(_srs(wkt).ExportToWkt(), (extent[0], 1.0, 0.0, extent[3], 0.0, -1.0),
                     max(1, int(extent[2] - extent[0])), max(1, int(extent[3] - extent[1])))
    return metres / unit_grid.gsd_metres()


def _union(bounds: Sequence[Bounds]) -> Bounds:
    return (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds),
            max(b[3] for b in bounds))


def _overlapping(infos: Sequence[CloudInfo], grid: Grid, reference: Optional[str], log: Log) -> List[CloudInfo]:
    kept = [info for info in infos if intersects(_padded(bounds_in(info, grid.crs_wkt)), grid.bounds)]
    for info in infos:
        if info not in kept:
            log(WARNING_PREFIX + f"point cloud '{info.path}' lies outside the output grid; it is not used")
    if not kept:
        where = f"the reference raster '{reference}'" if reference else "the output grid"
        names = ", ".join(f"'{info.path}'" for info in infos)
        raise EngineError(f"no point of {names} can fall inside {where}: the cloud's extent and the raster's "
                          "do not overlap (check both coordinate systems)")
    return kept


def _padded(bounds: Bounds) -> Bounds:
    """Header extents are rounded to the coordinate scale; a cloud exactly on the grid's edge still touches it."""
    pad = 1e-6 * max(1.0, abs(bounds[2] - bounds[0]), abs(bounds[3] - bounds[1]))
    return (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)


def _describe_cloud(info: CloudInfo, unit: HeightUnit) -> str:
    name = _srs(info.crs_wkt).GetName()
    conversion = ("" if math.isclose(info.height_unit.metres, unit.metres) else
                  f", converted to {unit.name}")
    return (f"Point cloud '{info.path.name}': {info.point_count:,} points (format {info.point_format}), "
            f"coordinate system {name} ({info.crs_source}); heights in {info.height_unit.name} "
            f"({info.height_unit.metres:g} m; {info.height_unit.source}){conversion}; output heights in "
            f"{unit.name}, the unit of the output coordinate system")


def _drop_uncoloured(wanted: Dict[str, str], infos: Sequence[CloudInfo], log: Log) -> Dict[str, str]:
    kept = dict(wanted)
    for kind, needs in (("optical", "has_colour"), ("nir", "has_nir")):
        if kind in kept and not any(getattr(info, needs) for info in infos):
            log(WARNING_PREFIX + f"no point cloud has {'RGB colours' if kind == 'optical' else 'a NIR channel'}; "
                f"the {kind} raster is not written")
            del kept[kind]
    return kept


# -- one run ------------------------------------------------------------------------------------
class _Run:
    """Writers, windows and the per-cloud bookkeeping of one rasterisation."""

    def __init__(self, infos: Sequence[CloudInfo], grid: Grid, unit: HeightUnit, wanted: Dict[str, str],
                 classes: Sequence[ClassInfo], mapping: ClassMapping, options: RasterizeOptions,
                 report: RasterizeReport, log: Log, progress: Progress, is_cancelled: Callable[[], bool]):
        self.infos, self.grid, self.unit, self.wanted = list(infos), grid, unit, wanted
        self.mapping, self.options, self.report = mapping, options, report
        self.log, self.progress, self.is_cancelled = log, progress, is_cancelled
        self.transforms = {info.path: PointTransform(info, grid.crs_wkt, unit) for info in self.infos}
        self.cloud_bounds = {info.path: _padded(bounds_in(info, grid.crs_wkt)) for info in self.infos}
        self.codes = {info.path: np.zeros(CODE_COUNT, np.int64) for info in self.infos}
        self.coloured: Dict[str, set] = {kind: set() for kind in COLOUR_GROUPS}  # clouds with non-zero colours
        self.colour_scale: Dict[Tuple[str, str], float] = {}  # (cloud, output) -> factor to 16 bits
        self.writers: Dict[str, GeoTiffWriter] = {}
        try:
            self._open_writers(classes)
        except Exception:
            self.abort()
            raise

    def _open_writers(self, classes: Sequence[ClassInfo]) -> None:
        heights = {"dsm": "surface height (highest return)", "dtm": "terrain height (ground and water)",
                   "ndsm": "height above ground"}
        for kind, path in self.wanted.items():
            if kind in heights:
                writer = GeoTiffWriter(path, self.grid, 1, np.float32, HEIGHT_NODATA, [f"{heights[kind]} ({self.unit.name})"])
                writer.dataset.GetRasterBand(1).SetUnitType(self.unit.name)
            elif kind in COLOUR_GROUPS:
                writer = GeoTiffWriter(path, self.grid, COLOUR_GROUPS[kind], np.uint8, COLOUR_NODATA,
                                       COLOUR_BANDS[kind])
            else:
                writer = GeoTiffWriter(path, self.grid, 1, np.uint8, self.mapping.nodata, ["class"])
                writer.set_classes(classes, self.mapping.nodata)
            self.writers[kind] = writer

    # -- windows ---------------------------------------------------------------------------------
    def windows(self) -> List[Tuple[int, int, int, int]]:
        """(x, y, width, height) in grid pixels, of near-equal size, none wider than ``window_cells``."""
        side = max(1, self.options.window_cells)
        columns, rows = math.ceil(self.grid.width / side), math.ceil(self.grid.height / side)
        xs = np.linspace(0, self.grid.width, columns + 1).round().astype(int)
        ys = np.linspace(0, self.grid.height, rows + 1).round().astype(int)
        return [(int(xs[i]), int(ys[j]), int(xs[i + 1] - xs[i]), int(ys[j + 1] - ys[j]))
                for j in range(rows) for i in range(columns)]

    def all_windows(self) -> None:
        windows = self.windows()
        self.report.windows = len(windows)
        halo = max(self.options.halo, int(math.ceil(self.options.nodata_distance)) + 1) if len(windows) > 1 else 0
        plans = [(window, self._clouds_near(window, halo)) for window in windows]
        total = sum(info.point_count for _, clouds in plans for info in clouds) or 1
        if len(windows) > 1:
            self.log(f"The grid is processed in {len(windows)} windows of up to {self.options.window_cells} x "
                     f"{self.options.window_cells} pixels (a cloud overlapping several is read once for each)")
        done = 0
        for number, (window, clouds) in enumerate(plans, 1):
            cells = self._window_cells(window, halo)
            for info in clouds:
                done = self._stream(info, cells, done, total, f"window {number} of {len(windows)}: {info.path.name}")
            self._write(window, halo, cells)
        self.progress(1.0, None)

    def _window_bounds(self, window: Tuple[int, int, int, int], halo: int) -> Bounds:
        x0, px, _, y0, _, py = self.grid.geotransform
        x, y, w, h = window
        return (x0 + (x - halo) * px, y0 + (y + h + halo) * py, x0 + (x + w + halo) * px, y0 + (y - halo) * py)

    def _clouds_near(self, window: Tuple[int, int, int, int], halo: int) -> List[CloudInfo]:
        bounds = self._window_bounds(window, halo)
        return [info for info in self.infos if intersects(self.cloud_bounds[info.path], bounds)]

    def _window_cells(self, window: Tuple[int, int, int, int], halo: int) -> WindowCells:
        x0, px, _, y0, _, py = self.grid.geotransform
        x, y, w, h = window
        groups = {kind: COLOUR_GROUPS[kind] for kind in COLOUR_GROUPS if kind in self.wanted}
        terrain = bool({"dtm", "ndsm"} & set(self.wanted))
        return WindowCells((x0 + (x - halo) * px, y0 + (y - halo) * py), (px, -py), (h + 2 * halo, w + 2 * halo),
                           groups, terrain)

    def _stream(self, info: CloudInfo, cells: WindowCells, done: int, total: int, text: str) -> int:
        first_read = not self.codes[info.path].any()
        colours = 4 if "nir" in self.wanted and info.has_nir else 3 if info.has_colour and (
            "optical" in self.wanted or "nir" in self.wanted) else 0
        read = 0
        for chunk in read_chunks(info, self.transforms[info.path], self.options.chunk_size, colours):
            if self.is_cancelled():
                raise Cancelled("Cancelled by the user; no output was written")
            read += len(chunk)
            if first_read:
                self.codes[info.path] += np.bincount(chunk.code, minlength=CODE_COUNT)
                self.report.points_read += len(chunk)
            used = self.mapping.used[chunk.code]
            chunk = chunk if used.all() else chunk.select(used)
            self.report.points_binned += cells.add(chunk, self._chunk_colours(info, chunk))
            self.progress(min(done + read, total) / total, text)
        if first_read:
            self._check_classified(info)
        return done + info.point_count

    def _chunk_colours(self, info: CloudInfo, chunk) -> Dict[str, Optional[np.ndarray]]:
        """Per colour output, the chunk's colours on the 16-bit scale; None where they are all zero."""
        found: Dict[str, Optional[np.ndarray]] = {}
        if chunk.colour is None:
            return found
        for kind, bands in (("optical", slice(0, 3)), ("nir", slice(3, 4))):
            values = chunk.colour[bands]
            if kind not in self.wanted or values.shape[0] == 0 or not values.any():
                continue
            self.coloured[kind].add(str(info.path))
            # LAS colours are 16-bit, but some writers store 8-bit values: decided once per cloud,
            # on its first chunk that has any colour.
            scale = self.colour_scale.setdefault((str(info.path), kind), 256.0 if values.max() <= 255 else 1.0)
            found[kind] = values * scale if scale != 1.0 else values
        return found

    def _check_classified(self, info: CloudInfo) -> None:
        if not {"labels", "dtm", "ndsm"} & set(self.wanted):
            return
        codes = self.codes[info.path]
        if codes[2:].sum() == 0:
            raise EngineError(f"point cloud '{info.path}' has no classification (every point is class 0 or 1, "
                              "never classified or unclassified), so it gives neither labels nor a terrain "
                              "model; classify it first (e.g. PDAL's filters.smrf for the ground) or ask only "
                              "for the DSM and colours")

    def _write(self, window: Tuple[int, int, int, int], halo: int, cells: WindowCells) -> None:
        x, y, w, h = window
        core = (slice(halo, halo + h), slice(halo, halo + w))
        rasters = cells.finish(self.options.nodata_distance, core)
        if "dsm" in self.writers:
            self.writers["dsm"].write(y, rasters.dsm, x)
        if "dtm" in self.writers:
            self.writers["dtm"].write(y, rasters.dtm, x)
        if "ndsm" in self.writers:
            both = (rasters.dsm != HEIGHT_NODATA) & (rasters.dtm != HEIGHT_NODATA)
            ndsm = np.where(both, np.maximum(rasters.dsm - rasters.dtm, 0.0), HEIGHT_NODATA)
            self.writers["ndsm"].write(y, ndsm.astype(np.float32), x)
        for kind in COLOUR_GROUPS:
            if kind in self.writers:
                self.writers[kind].write(y, rasters.colours[kind], x)
        if "labels" in self.writers:
            labels = self.mapping.labels[rasters.top_code]
            labels[~rasters.valid] = self.mapping.nodata
            self.writers["labels"].write(y, labels, x)

    def class_counts(self) -> Dict[int, int]:
        totals = sum(self.codes.values())
        return {int(code): int(n) for code, n in enumerate(totals) if n}

    # -- the end -------------------------------------------------------------------------------------
    def check_result(self) -> None:
        if self.report.points_binned == 0:
            where = f"the reference raster '{self.options.reference}'" if self.options.reference else "the output grid"
            raise EngineError(f"no point of the point cloud(s) falls inside {where}")
        for kind in COLOUR_GROUPS:
            if kind in self.writers and not self.coloured[kind]:
                self.log(WARNING_PREFIX + f"every point has {'RGB colours' if kind == 'optical' else 'NIR values'} "
                         f"of zero (the fields exist but hold nothing); the {kind} raster is not written")
                self.writers.pop(kind).abort()
                self.report.skipped.append(kind)
        for info in self.infos:
            for kind in COLOUR_GROUPS:
                if kind in self.writers and str(info.path) not in self.coloured[kind] and \
                        (info.has_colour if kind == "optical" else info.has_nir):
                    self.log(WARNING_PREFIX + f"point cloud '{info.path.name}' has no {kind} values (all zero); "
                             f"its area is nodata in the {kind} raster")

    def publish(self) -> Dict[str, str]:
        """Every file is finished before any is renamed into place: a failure leaves no output."""
        for writer in self.writers.values():
            writer.finish()
        published = {kind: writer.publish() for kind, writer in self.writers.items()}
        self.writers = {}
        return published

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers = {}


def _log_classes(counts: Dict[int, int], mapping: ClassMapping, classes: Sequence[ClassInfo], log: Log) -> None:
    """Points per LAS code and where each went; codes the mapping does not name are listed as a warning."""
    parts = [f"{code} {CODE_MEANINGS.get(code, 'not a standard code')} -> {mapping.describe(code, classes)}: {n:,}"
             for code, n in sorted(counts.items())]
    log("Points per LAS class: " + "; ".join(parts))
    unknown = [f"{code} ({n:,} points)" for code, n in sorted(counts.items()) if not mapping.mapped[code]]
    if unknown:
        log(WARNING_PREFIX + "LAS class codes that the class mapping does not name are left unlabelled: "
            + ", ".join(unknown))
