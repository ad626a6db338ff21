"""Read any raster through the reference grid, window by window, with a validity mask.

Layers already on the grid (or on a pixel-aligned sub/super-extent of it) are read directly;
anything else goes through a GDAL warped VRT, so CRS, pixel size and extent never have to match.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import numpy as np
from osgeo import gdal

from .errors import EngineError
from .false_colour import with_estimated_blue
from .grid import Grid, file_grid, open_raster, read_failed, reading, same_crs, transform_bounds
from .normalize import fit_to_recipe
from .sar import is_complex, sar_view

if TYPE_CHECKING:  # binding imports ground, which reads through this module: types only here
    from .binding import Source
    from .package import ModalitySpec

# Heights beyond this (metres, either sign) are sensor or processing errors (e.g. 1e30 spikes), not
# terrain: Everest is 8 849 m and the deepest land depression 430 m below sea level.
PLAUSIBLE_HEIGHT_M = 10_000.0

_RESAMPLING = {"nearest": "near", "bilinear": "bilinear", "cubic": "cubic", "average": "average"}


@contextmanager
def bounded_gdal_cache(limit_bytes: int):
    """Cap GDAL's block cache during a run (its default, 5 % of RAM, lets memory grow with the
    raster size as blocks are read and written); the previous setting comes back afterwards."""
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, limit_bytes))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


def _pixel_offset(source: Grid, target: Grid) -> Optional[Tuple[int, int]]:
    """Integer (column, row) of the target origin in the source grid when both share CRS and pixels
    and the source is stored north-up (anything else is read through a warped VRT)."""
    if not source.is_north_up or not same_crs(source.crs_wkt, target.crs_wkt):
        return None
    px, py = source.pixel_width, source.pixel_height
    if abs(px - target.pixel_width) > 1e-9 * abs(px) or abs(py - target.pixel_height) > 1e-9 * abs(py):
        return None
    col = (target.geotransform[0] - source.geotransform[0]) / px
    row = (source.geotransform[3] - target.geotransform[3]) / py
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(col)), int(round(row))


class BandReader:
    """Bands of one raster on the reference grid; ``read`` returns float32 data and a validity mask."""

    def __init__(self, path: str, bands: Tuple[int, ...], grid: Grid, resampling: str = "bilinear",
                 value_limit: Optional[float] = None, to_db: bool = False):
        """``value_limit``: pixels whose absolute (scaled) value exceeds it are invalid; ``to_db``:
        the raster holds SAR power (or complex samples), read in dB (engine.sar)."""
        self.path, self.bands, self.grid = path, tuple(bands), grid
        self.value_limit = value_limit
        self._local = threading.local()  # GDAL datasets must not be shared between threads
        own = file_grid(path)
        self._offset = _pixel_offset(own, grid)
        self._size = (own.width, own.height)
        self._resampling = _RESAMPLING[resampling]
        ds = open_raster(path)
        count = ds.RasterCount
        if any(not 1 <= b <= count for b in self.bands):
            raise EngineError(f"raster '{path}' has {count} band(s); cannot read bands {list(self.bands)}")
        self._unit_scale, self._unit_offset = band_scaling(ds, self.bands)
        # complex samples (as intensity) and SAR power (as dB) are read through engine.sar's view,
        # converted before any warping; the view applies the band scaling itself
        self._to_db = to_db
        self._through_view = to_db or is_complex(path)
        if self._through_view:
            self._unit_scale = self._unit_offset = None

    def _open_source(self) -> gdal.Dataset:
        return sar_view(self.path, self._to_db) if self._through_view else open_raster(self.path)

    def _dataset(self) -> gdal.Dataset:
        ds = getattr(self._local, "dataset", None)
        if ds is None:
            ds = self._open_source() if self._offset is not None else self._warped()
            self._local.dataset = ds
        return ds

    def _warped(self) -> gdal.Dataset:
        src = self._open_source()
        # Band selection first (keeping the per-dataset mask, e.g. alpha), then warp to float32 into
        # NaN-initialised blocks: pixels no valid source pixel reaches stay NaN. (INIT_DEST rather
        # than dstNodata: same pixels, but GDAL then keeps its fast kernel for sources without
        # nodata, half the warp time.)
        selected = gdal.Translate("", src, format="VRT", bandList=list(self.bands), maskBand="mask"
                                  if src.GetRasterBand(1).GetMaskFlags() & gdal.GMF_PER_DATASET else None)
        xmin, ymin, xmax, ymax = self.grid.bounds
        warped = gdal.Warp("", selected, format="VRT", dstSRS=self.grid.crs_wkt or None,  # None: no CRS anywhere
                           outputBounds=(xmin, ymin, xmax, ymax),
                           width=self.grid.width, height=self.grid.height, resampleAlg=self._resampling,
                           outputType=gdal.GDT_Float32, warpOptions=["INIT_DEST=NaN"], multithread=False,
                           # blocks the size of a typical tile: fewer, larger warps (~20 % faster here)
                           creationOptions=["BLOCKXSIZE=512", "BLOCKYSIZE=512"])
        if warped is None:
            raise EngineError(f"cannot warp '{self.path}' onto the output grid")
        self._selected = (src, selected)  # the warped VRT references them
        return warped

    def close(self) -> None:
        """Drop this thread's dataset now (a traceback may keep the reader itself alive)."""
        self._local = threading.local()
        self._selected = None

    def read(self, x: int, y: int, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(data[bands, h, w] float32, valid[h, w] bool)``; pixels outside the raster are invalid."""
        data = np.zeros((len(self.bands), height, width), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        ds = self._dataset()
        if self._offset is None:
            x0, y0 = x, y
            src_w, src_h = self.grid.width, self.grid.height
            band_numbers = range(1, len(self.bands) + 1)
        else:
            x0, y0 = x + self._offset[0], y + self._offset[1]
            src_w, src_h = self._size
            band_numbers = self.bands
        # Clip the window to the raster; the rest stays invalid (padding).
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + width, src_w), min(y0 + height, src_h)
        if cx1 <= cx0 or cy1 <= cy0:
            return data, valid
        ox, oy, w, h = cx0 - x0, cy0 - y0, cx1 - cx0, cy1 - cy0
        # One call for all bands, straight into the float32 buffer.
        region = data[:, oy:oy + h, ox:ox + w]
        with reading(self.path):
            if ds.ReadAsArray(cx0, cy0, w, h, buf_obj=region, band_list=list(band_numbers),
                              buf_type=gdal.GDT_Float32) is None:
                raise read_failed(self.path)
            region_valid = np.isfinite(region).all(axis=0)
            if self._offset is not None:  # warped reads mark every invalid pixel NaN already
                region_valid &= self._source_mask(ds, band_numbers, region, cx0, cy0, w, h)
        if self._unit_scale is not None:  # nodata values compare raw; the data is wanted in units
            region *= self._unit_scale
            region += self._unit_offset
        if self.value_limit is not None:
            with np.errstate(invalid="ignore"):
                region_valid &= (np.abs(region) <= self.value_limit).all(axis=0)
        valid[oy:oy + h, ox:ox + w] = region_valid
        if not valid.all():
            data[:, ~valid] = 0.0
        return data, valid


    @staticmethod
    def _source_mask(ds: gdal.Dataset, band_numbers, region: np.ndarray, x: int, y: int, w: int,
                     h: int) -> np.ndarray:
        """Validity from the source's nodata values (compared in memory) and its mask/alpha bands."""
        valid = np.ones((h, w), dtype=bool)
        for i, number in enumerate(band_numbers):
            band = ds.GetRasterBand(number)
            flags = band.GetMaskFlags()
            if flags & gdal.GMF_ALL_VALID:
                continue
            nodata = band.GetNoDataValue()
            if flags & gdal.GMF_NODATA and nodata is not None:
                if np.isfinite(nodata):  # NaN nodata is caught by isfinite already
                    valid &= region[i] != np.float32(nodata)
            else:  # a real mask band or alpha
                valid &= band.GetMaskBand().ReadAsArray(x, y, w, h) > 0
        return valid


class SourceReader:
    """A bound source on the grid: its bands in physical units (with the blue of a false-colour
    layer estimated), minus the DTM when it derives an nDSM, optionally stretched into the range its normalisation recipe expects."""

    def __init__(self, source: Source, grid: Grid):
        if source.estimate_ground and not source.subtract_path:
            raise EngineError(f"the DSM '{source.path}' needs a DTM estimated from it before it can be read "
                              "as heights above ground")
        self.source = source
        limit = PLAUSIBLE_HEIGHT_M if source.is_elevation else None
        self.main = BandReader(source.path, source.bands, grid, source.resampling, limit, source.power_to_db)
        self.dtm = (BandReader(source.subtract_path, (source.subtract_band,), grid, "bilinear", limit)
                    if source.subtract_path else None)
        self.stretch: Optional[Tuple[np.ndarray, np.ndarray]] = None  # per-band (gain, offset)

    def read(self, x: int, y: int, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
        data, valid = self.main.read(x, y, width, height)
        if self.source.estimate_blue:
            data = with_estimated_blue(data)
        if self.dtm is not None:
            ground, ground_valid = self.dtm.read(x, y, width, height)
            data = np.maximum(data - ground, 0.0)
            valid &= ground_valid
            data[:, ~valid] = 0.0
        if self.stretch is not None:
            gain, offset = self.stretch
            data *= gain.reshape(-1, 1, 1)
            data += offset.reshape(-1, 1, 1)
            data[:, ~valid] = 0.0
        return data, valid

    def close(self) -> None:
        for reader in (self.main, self.dtm):
            if reader is not None:
                reader.close()

    def sample(self, max_size: int = 512) -> Tuple[np.ndarray, np.ndarray]:
        """The whole grid decimated (nearest neighbour) to at most ``max_size`` pixels a side, for
        statistics (in physical units, before any stretch)."""
        reader = SourceReader(replace(self.source, resampling="nearest"), self.main.grid.decimated(max_size))
        try:
            return reader.read(0, 0, reader.main.grid.width, reader.main.grid.height)
        finally:
            reader.close()

    def check_values(self, spec: ModalitySpec, warn: Callable[[str], None]) -> None:
        """Before the run: say how many implausible heights become nodata, and bring an optical layer
        whose values do not fit the recipe into its range (whole-layer percentiles, so tiling
        cannot change it)."""
        if self.source.is_elevation:
            for reader in (self.main, self.dtm):
                if reader is not None:
                    count = implausible_pixels(reader.path, reader.bands[0], reader.grid)
                    if count:
                        warn(f"{count} pixel(s) of '{reader.path}' hold non-finite or absurd heights "
                             f"(beyond ±{PLAUSIBLE_HEIGHT_M:,.0f} m); they are treated as nodata")
        if spec.kind == "optical":
            data, valid = self.sample()
            if valid.any() and np.ptp(data[:, valid]) == 0:
                warn(f"the {spec.name} layer '{self.source.path}' holds one value ({data[0, valid][0]:.4g}) on every "
                     "pixel inside the output extent: it shows nothing, so the map rests on the other layers "
                     "(or is uniform); check that it is the image you meant")
            fit = fit_to_recipe(data, valid, spec.normalization)
            if fit is not None:
                self.stretch = (fit.gain, fit.offset)
                warn(f"the {spec.name} layer '{self.source.path}' holds values "
                     f"{fit.found_low:.4g}–{fit.found_high:.4g} ({fit.reason}); the model expects about "
                     f"{fit.target_low:.3g}–{fit.target_high:.3g}, so the layer's {fit.low_percentile:g}–"
                     f"{fit.high_percentile:g} % percentiles (whole layer, all bands together) were stretched "
                     "onto that range")


def band_scaling(ds: gdal.Dataset, bands: Tuple[int, ...]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """GDAL's per-band scale and offset (physical value = raw × scale + offset) as b x 1 x 1 arrays;
    ``(None, None)`` when every band is stored in its own units already."""
    scale = np.array([ds.GetRasterBand(b).GetScale() or 1.0 for b in bands], np.float32)
    offset = np.array([ds.GetRasterBand(b).GetOffset() or 0.0 for b in bands], np.float32)
    if np.all(scale == 1.0) and np.all(offset == 0.0):
        return None, None
    return scale.reshape(-1, 1, 1), offset.reshape(-1, 1, 1)


def pixel_window(own: Grid, area: Grid, margin: int = 0) -> Tuple[int, int, int, int]:
    """``(col0, row0, col1, row1)``: the pixels of ``own`` covering ``area``'s extent (in any CRS),
    widened by ``margin`` pixels and clipped to ``own``; empty (col1 <= col0) when they miss."""
    xmin, ymin, xmax, ymax = transform_bounds(area.bounds, area.crs_wkt, own.crs_wkt)
    x0, px, _, y0, _, py = own.geotransform
    col0 = max(0, int(np.floor((xmin - x0) / px)) - margin)
    col1 = min(own.width, int(np.ceil((xmax - x0) / px)) + margin)
    row0 = max(0, int(np.floor((y0 - ymax) / -py)) - margin)
    row1 = min(own.height, int(np.ceil((y0 - ymin) / -py)) + margin)
    return col0, row0, col1, row1


def implausible_pixels(path: str, band: int, grid: Grid, rows_per_strip: int = 256) -> int:
    """Pixels of ``path`` inside ``grid``'s extent that are not nodata yet hold no plausible height
    (non-finite, or beyond ±PLAUSIBLE_HEIGHT_M once scaled): read strip by strip in the file's own
    pixels, so a spike is counted once whatever the output grid."""
    ds = open_raster(path)
    own = file_grid(path)
    # A south-up or rotated file's pixels do not map onto a window: all of it is scanned.
    col0, row0, col1, row1 = pixel_window(own, grid) if own.is_north_up else (0, 0, own.width, own.height)
    scale, offset = band_scaling(ds, (band,))
    nodata_is_nan = np.isnan(ds.GetRasterBand(band).GetNoDataValue() or 0.0)
    count = 0
    w = col1 - col0
    for y in range(row0, row1 if w > 0 else row0, rows_per_strip):
        h = min(rows_per_strip, row1 - y)
        with reading(path):  # a truncated file fails here first
            region = ds.GetRasterBand(band).ReadAsArray(col0, y, w, h, buf_type=gdal.GDT_Float32)[None]
        not_nodata = BandReader._source_mask(ds, (band,), region, col0, y, w, h)
        if nodata_is_nan:
            not_nodata &= ~np.isnan(region[0])
        if scale is not None:
            region = region * scale + offset
        with np.errstate(invalid="ignore", over="ignore"):
            implausible = ~(np.abs(region[0]) <= PLAUSIBLE_HEIGHT_M)  # NaN and inf included
        count += int(np.count_nonzero(implausible & not_nodata))
    return count
