"""Elevation layers without a terrain model: tell a DSM from an nDSM by its values, and estimate the
DTM of a DSM with a progressive morphological ground filter (Zhang et al. 2003) when none is given.

The filter opens the surface (grey erosion then dilation, scipy) with square windows growing up to
the ground window, flagging as off-ground every pixel that rises above the opened surface by more
than a threshold growing with the window (so slopes survive and buildings do not; the first, 3-pixel
window takes the base threshold alone, as in Zhang et al.). The ground pixels that are not rough
(low vegetation is) are the seeds of the terrain: at every pixel, the DTM is the local plane fitted
through the seeds around it by Gaussian-weighted least squares, at the finest scale (4 m and up,
doubling until the fit reaches half the window) that has enough seeds in reach, lowered by the spread of LiDAR
returns on bare ground and bounded below by the opened surface.
A plane follows slopes, where a smoothed height or a low quantile of the DSM sits below them and
turns sloping grass into low vegetation (benchmarks/dsm_only measures both).
Everything is local (a pixel depends on pixels within the sum of the windows and the reach of the
widest fit), so the DTM is computed block by block with that halo and written to a scratch GeoTIFF:
memory stays bounded and the result does not depend on the blocks.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, List, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .errors import Cancelled, EngineError
from .grid import Grid, grid_of
from .reader import PLAUSIBLE_HEIGHT_M, BandReader, pixel_window

if TYPE_CHECKING:  # binding imports this module
    from .binding import Source

# A DSM's 1st percentile above this is far from the 0 m an nDSM has on every ground pixel.
_DSM_LOW_PERCENTILE_M = 0.5
_BELOW_ZERO_M, _BELOW_ZERO_SHARE = -0.1, 0.01  # heights above ground are never below 0 m
# Thresholds of the progressive filter: base height step, terrain slope tolerated, cap (metres).
_STEP_M, _SLOPE, _MAX_STEP_M = 0.3, 0.2, 2.5
_ROUGH_M = _STEP_M / 2  # see _rough
# Ground fit (see _fit_ground): finest Gaussian scale (metres; tuned on the tiles that are not held
# out, 2-8 m tried), reach in scales, and what a scale needs to be used at a pixel: seed weight in
# reach (share of a full disc) and how well the plane is determined (0 when the seeds are collinear).
_FINEST_SCALE_M, _TRUNCATE = 4.0, 2.0
_MIN_SUPPORT, _MIN_DETERMINED = 0.1, 0.01
# A DSM keeps the highest return, a LiDAR DTM lies at the ground returns: this far below on bare
# ground. Heights above ground are then small and positive there, as the bundled networks learnt
# them (exact zeros read as something else: benchmarks/dsm_only, houses tile 97 -> 92 without it).
_RETURNS_SPREAD_M = 0.03
_BLOCK = 1024  # core block side (pixels) of the tiled pass


def elevation_kind_from_values(path: str, band: int = 1, max_size: int = 512) -> Tuple[str, str]:
    """``("dsm" | "ndsm", why)`` from a decimated read of the whole layer: an nDSM is 0 m on the
    ground, so its low percentile sits at 0 m and it is never negative; a DSM's sits at the
    terrain's height above sea level."""
    reader = BandReader(path, (band,), grid_of(path).decimated(max_size), "nearest", PLAUSIBLE_HEIGHT_M)
    try:
        data, valid = reader.read(0, 0, reader.grid.width, reader.grid.height)
    finally:
        reader.close()
    values = data[0][valid]
    if values.size == 0:  # the run says so, naming the layer; binding just keeps the old default
        return "ndsm", "it holds no valid height to tell otherwise"
    low = float(np.percentile(values, 1.0))
    below_zero = float(np.mean(values < _BELOW_ZERO_M))
    if low > _DSM_LOW_PERCENTILE_M:
        return "dsm", (f"its lowest heights (1st percentile {low:.1f} m) sit far above 0 m, where heights above "
                       "ground lie on every ground pixel")
    if below_zero > _BELOW_ZERO_SHARE:
        return "dsm", (f"{100 * below_zero:.0f} % of its heights are below 0 m, which heights above ground "
                       "never are")
    return "ndsm", f"its lowest heights (1st percentile {low:.2f} m) sit at 0 m, as heights above ground do"


def _windows(window_px: int) -> List[int]:
    """Odd window sides growing exponentially (3, 5, 9, 17...) up to ``window_px``."""
    sides, side = [], 3
    while side < window_px:
        sides.append(side)
        side = 2 * side - 1
    return sides + [max(3, window_px)]


def window_pixels(window_m: float, cell_m: float) -> int:
    """The ground window in pixels: odd, at least 3."""
    return max(3, int(round(window_m / cell_m)) | 1)


def filter_halo(window_px: int) -> int:
    """Pixels a DTM value depends on, each side: every opening reaches (side - 1) pixels, the
    roughness of a seed two more, the widest ground fit its radius."""
    return sum(side - 1 for side in _windows(window_px)) + 2 + _fill_radius(window_px)


def _fill_radius(window_px: int) -> int:
    """Reach (pixels) of the widest ground fit, which bridges off-ground areas up to the window."""
    return max(1, window_px // 2)


def _erode(surface: np.ndarray, side: int) -> np.ndarray:
    """Minimum over valid pixels of each window; -inf where there is none (so a dilation skips it)."""
    from scipy import ndimage

    eroded = ndimage.minimum_filter(np.where(np.isnan(surface), np.inf, surface), size=side, mode="nearest")
    eroded[np.isinf(eroded)] = -np.inf
    return eroded


def _opening(surface: np.ndarray, side: int) -> np.ndarray:
    """Grey opening ignoring NaN; NaN where no valid pixel is in reach."""
    from scipy import ndimage

    opened = ndimage.maximum_filter(_erode(surface, side), size=side, mode="nearest")
    opened[np.isinf(opened)] = np.nan
    return opened


def _rough(dsm: np.ndarray) -> np.ndarray:
    """Pixels rising or sinking from the median of their 3 x 3 neighbours by more than half the
    base step: low vegetation, not bare ground (whose median follows planar slopes exactly)."""
    from scipy import ndimage

    lowest = _erode(dsm, 3)
    filled = np.where(np.isnan(dsm), lowest, dsm)
    with np.errstate(invalid="ignore"):
        return np.abs(filled - ndimage.median_filter(filled, size=3, mode="nearest")) > _ROUGH_M


def _plane_fit(height: np.ndarray, weight: np.ndarray, sigma: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-weighted least-squares plane through the weighted heights around each pixel: its
    height at the pixel, the weight in reach (1 = every pixel a seed) and how well the plane is
    determined (0 = it is not). The weighted moments of the pixel offsets come from Gaussian
    derivative filters (Σ g·d·f = σ² G'f, Σ g·d²·f = σ⁴ G''f + σ² Gf), so no coordinate enters
    and blocks with halos give the same values as one pass."""
    from scipy import ndimage

    def smooth(values: np.ndarray, order: int, axis: int) -> np.ndarray:
        return ndimage.gaussian_filter1d(values, sigma, axis=axis, order=order, mode="constant", cval=0.0,
                                         truncate=_TRUNCATE)

    s2, s4 = sigma ** 2, sigma ** 4
    weighted = np.where(weight > 0, height, 0.0) * weight
    # Separable moments: each pass along the rows (y) is shared by the passes along the columns (x).
    w_rows = [smooth(weight, order, 0) for order in (0, 1, 2)]
    w = smooth(w_rows[0], 0, 1)
    wx, wy = s2 * smooth(w_rows[0], 1, 1), s2 * smooth(w_rows[1], 0, 1)
    wxx, wyy = s4 * smooth(w_rows[0], 2, 1) + s2 * w, s4 * smooth(w_rows[2], 0, 1) + s2 * w
    wxy = s4 * smooth(w_rows[1], 1, 1)
    z_rows = [smooth(weighted, order, 0) for order in (0, 1)]
    z, zx, zy = smooth(z_rows[0], 0, 1), s2 * smooth(z_rows[0], 1, 1), s2 * smooth(z_rows[1], 0, 1)
    minor = wxx * wyy - wxy ** 2
    det = w * minor - wx * (wx * wyy - wxy * wy) + wy * (wx * wxy - wxx * wy)
    with np.errstate(invalid="ignore", divide="ignore"):  # Cramer's rule for the plane's offset
        at_pixel = (z * minor - wx * (zx * wyy - wxy * zy) + wy * (zx * wxy - wxx * zy)) / det
        determined = det / (np.maximum(w, 1e-12) ** 3 * s4)
    return at_pixel, w, determined


def _fit_ground(dsm: np.ndarray, seeds: np.ndarray, cell_m: float, window_px: int) -> np.ndarray:
    """The seeds' local plane at every pixel, from the finest scale with enough seeds in reach
    (fine scales follow the terrain, coarse ones bridge buildings); NaN where no scale has."""
    fitted = np.full(dsm.shape, np.nan)
    height, weight = dsm.astype(np.float64), seeds.astype(np.float64)
    widest = max(1.0, _fill_radius(window_px) / _TRUNCATE)
    sigma = min(widest, max(1.0, _FINEST_SCALE_M / cell_m))
    while True:
        value, support, determined = _plane_fit(height, weight, sigma)
        take = np.isnan(fitted) & (support > _MIN_SUPPORT) & (determined > _MIN_DETERMINED)
        fitted[take] = value[take]
        if sigma >= widest or not np.isnan(fitted).any():  # coarser scales only fill what is left
            return fitted
        sigma = min(widest, 2 * sigma)


def ground_surface(dsm: np.ndarray, cell_m: float, window_px: int) -> np.ndarray:
    """DTM of a DSM block (float32, NaN = nodata), by the progressive morphological filter."""
    surface = dsm
    off_ground = np.zeros(dsm.shape, bool)
    previous = 3  # Zhang et al.: the first window (3 px) takes the base step alone
    for side in _windows(window_px):
        opened = _opening(surface, side)
        step = min(_MAX_STEP_M, _STEP_M + _SLOPE * (side - previous) * cell_m)
        with np.errstate(invalid="ignore"):
            off_ground |= (surface - opened) > step
        surface, previous = opened, side
    seeds = ~off_ground & np.isfinite(dsm) & ~_rough(dsm)
    fitted = _fit_ground(dsm, seeds, cell_m, window_px) - _RETURNS_SPREAD_M
    # The opened surface lies below the terrain (an opening never rises above the DSM): a bound.
    return np.where(np.isfinite(fitted), np.fmax(fitted, surface), surface).astype(np.float32)


def estimate_dtm(dsm_path: str, band: int, area: Grid, window_m: float, out_path: str,
                 is_cancelled: Callable[[], bool] = lambda: False) -> str:
    """Write the DTM of ``dsm_path`` (its own CRS and pixels) covering ``area`` to ``out_path``."""
    own = grid_of(dsm_path)
    cell_m = own.gsd_metres()
    window_px = window_pixels(window_m, cell_m)
    halo = filter_halo(window_px)
    col0, row0, col1, row1 = pixel_window(own, area, margin=2)  # bilinear reads reach one pixel out
    if col1 <= col0 or row1 <= row0:
        raise EngineError(f"the DSM '{dsm_path}' does not overlap the output extent")
    reader = BandReader(dsm_path, (band,), own, "nearest", PLAUSIBLE_HEIGHT_M)
    x0, px, _, y0, _, py = own.geotransform
    try:
        out = gdal.GetDriverByName("GTiff").Create(
            out_path, col1 - col0, row1 - row0, 1, gdal.GDT_Float32,
            ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1", "PREDICTOR=3", "BIGTIFF=IF_SAFER"])
    except RuntimeError as exc:
        raise EngineError(f"cannot write the estimated DTM into '{Path(out_path).parent}': {exc}") from None
    if out is None:
        raise EngineError(f"cannot write the estimated DTM into '{Path(out_path).parent}'")
    try:
        out.SetGeoTransform((x0 + col0 * px, px, 0.0, y0 + row0 * py, 0.0, py))
        out.SetProjection(own.crs_wkt)
        out.GetRasterBand(1).SetNoDataValue(float("nan"))
        for by in range(row0, row1, _BLOCK):
            for bx in range(col0, col1, _BLOCK):
                if is_cancelled():
                    raise Cancelled("cancelled by the user")
                w, h = min(_BLOCK, col1 - bx), min(_BLOCK, row1 - by)
                # The halo is clipped to the raster, not to the area: the same pixels as in one pass.
                rx0, ry0 = max(0, bx - halo), max(0, by - halo)
                rx1, ry1 = min(own.width, bx + w + halo), min(own.height, by + h + halo)
                data, valid = reader.read(rx0, ry0, rx1 - rx0, ry1 - ry0)
                dsm = np.where(valid, data[0], np.nan).astype(np.float32)
                dtm = ground_surface(dsm, cell_m, window_px)
                core = dtm[by - ry0:by - ry0 + h, bx - rx0:bx - rx0 + w]
                out.GetRasterBand(1).WriteArray(core, bx - col0, by - row0)
        out.FlushCache()
    finally:
        out = None
        reader.close()
    return out_path


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".aux.xml")):
        try:
            leftover.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def estimated_ground(sources: Sequence["Source"], area: Grid, folder: Path, window_m: float,
                     warn: Callable[[str], None],
                     is_cancelled: Callable[[], bool] = lambda: False) -> Iterator[List["Source"]]:
    """The sources with every DSM that needs one given an estimated DTM (a scratch GeoTIFF in
    ``folder``, removed on exit, whether the run succeeded or not)."""
    if window_m <= 0:
        raise EngineError("the ground filter window must be a positive distance in metres")
    needed = [s for s in sources if s.estimate_ground and not s.subtract_path]
    if needed and not Path(folder).is_dir():
        raise EngineError(f"output folder '{folder}' does not exist")
    scratch: List[Path] = []
    try:
        resolved = []
        for source in sources:
            if source.estimate_ground and not source.subtract_path:
                warn(f"no DTM was given for the DSM '{source.path}': the DTM was estimated from the DSM by a "
                     f"ground filter ({window_m:g} m window), so heights above ground are approximate (give a "
                     "DTM for exact ones; widen the window if buildings larger than it come out as ground)")
                path = Path(folder) / f".modalseg-scratch-{uuid.uuid4().hex[:8]}-dtm.tif"
                scratch.append(path)
                estimate_dtm(source.path, source.bands[0], area, window_m, str(path), is_cancelled)
                source = replace(source, subtract_path=str(path), subtract_band=1)
            resolved.append(source)
        yield resolved
    finally:
        for path in scratch:
            _remove(path)
