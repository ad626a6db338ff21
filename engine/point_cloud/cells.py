"""Points binned into the cells of one window of the output grid, and the window's rasters.

Per cell, while chunks stream in: the highest point (its height and LAS code), the lowest
terrain point (ground or water) and the sums of point colours. Only these running values are
kept, so memory is set by the window size, never by the number of points. Finishing a window
fills empty cells within the nodata distance from the nearest occupied cell, interpolates the
terrain linearly under buildings and other gaps, and masks the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import ndimage
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import QhullError

from .classes import CODE_COUNT, TERRAIN_CODES
from .clouds import PointChunk

HEIGHT_NODATA = -9999.0
COLOUR_NODATA = 0
COLOUR_SCALE_16_TO_8 = 256.0  # LAS colours are 16-bit; the rasters hold 8-bit values
DEEP_GAP_CELLS = 3     # terrain gaps reaching farther than this from terrain are interpolated linearly
SMALL_GAP_PASSES = 16  # 3 x 3 averaging passes that fill the rest from their edges

_TERRAIN = np.zeros(CODE_COUNT, bool)
_TERRAIN[list(TERRAIN_CODES)] = True


def _group_last(cell: np.ndarray, value: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sort groups the points by cell: (cells, each cell's point with the largest value, the sort
    order, the last position of each cell in it)."""
    order = np.lexsort((value, cell))
    sorted_cells = cell[order]
    last = np.flatnonzero(np.r_[sorted_cells[1:] != sorted_cells[:-1], True])
    return sorted_cells[last], order[last], order, last


class ColourSums:
    """Sum and count of one group of colour bands per cell (RGB, or NIR alone)."""

    def __init__(self, bands: int, cells: int):
        self.sums = np.zeros((bands, cells), np.float64)
        self.counts = np.zeros(cells, np.uint32)

    def add(self, cells: np.ndarray, order: np.ndarray, last: np.ndarray, colour: np.ndarray) -> None:
        starts = np.r_[0, last[:-1] + 1]
        self.sums[:, cells] += np.add.reduceat(colour[:, order].astype(np.float64), starts, axis=1)
        self.counts[cells] += np.diff(np.r_[starts, len(order)]).astype(np.uint32)

    def means(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts


@dataclass(frozen=True)
class WindowRasters:
    """Finished arrays of a window's core (None for what was not asked for)."""

    dsm: np.ndarray
    top_code: np.ndarray
    valid: np.ndarray
    dtm: Optional[np.ndarray]
    colours: Dict[str, np.ndarray]


class WindowCells:
    """Running per-cell values of a window; ``origin`` is the top-left corner of its first cell."""

    def __init__(self, origin: Tuple[float, float], pixel: Tuple[float, float], shape: Tuple[int, int],
                 colour_groups: Dict[str, int], terrain: bool):
        self.x0, self.y0 = origin
        self.pw, self.ph = pixel
        self.height, self.width = shape
        cells = self.height * self.width
        self.top_z = np.full(cells, -np.inf, np.float32)
        self.top_code = np.zeros(cells, np.uint8)
        self.ground_z = np.full(cells, np.inf, np.float32) if terrain else None
        self.colours = {name: ColourSums(bands, cells) for name, bands in colour_groups.items()}
        self.points = 0

    def add(self, chunk: PointChunk, colours: Dict[str, Optional[np.ndarray]]) -> int:
        """Bin the chunk's points (``colours``: per group, the chunk's 16-bit colours or None); returns
        how many fell inside the window."""
        col = np.floor((chunk.x - self.x0) / self.pw)
        row = np.floor((self.y0 - chunk.y) / self.ph)
        inside = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        if not inside.any():
            return 0
        cell = (row[inside] * self.width + col[inside]).astype(np.int64)
        z = chunk.z[inside]
        code = chunk.code[inside]
        cells, top, order, last = _group_last(cell, z)
        higher = z[top] > self.top_z[cells]
        self.top_z[cells[higher]] = z[top][higher]
        self.top_code[cells[higher]] = code[top][higher]
        if self.ground_z is not None:
            terrain = _TERRAIN[code]
            if terrain.any():
                # the lowest terrain point: the largest of the negated heights
                ground_cells, low, _, _ = _group_last(cell[terrain], -z[terrain])
                lowest = z[terrain][low]
                self.ground_z[ground_cells] = np.minimum(self.ground_z[ground_cells], lowest)
        for name, colour in colours.items():
            if colour is not None and name in self.colours:
                self.colours[name].add(cells, order, last, colour[:, inside])
        self.points += int(inside.sum())
        return int(inside.sum())

    def finish(self, max_distance: float, core: Tuple[slice, slice]) -> WindowRasters:
        """The window's rasters, cropped to ``core`` (the window without its halo)."""
        shape = (self.height, self.width)
        occupied = np.isfinite(self.top_z).reshape(shape)
        if not occupied.any():  # a window of the grid that no point reaches
            size = np.zeros(shape, bool)[core].shape
            nothing = np.full(size, HEIGHT_NODATA, np.float32)
            return WindowRasters(nothing, np.zeros(size, np.uint8), np.zeros(size, bool),
                                 None if self.ground_z is None else nothing,
                                 {name: np.zeros((sums.sums.shape[0],) + size, np.uint8)
                                  for name, sums in self.colours.items()})
        distance, nearest = _nearest_occupied(occupied)
        valid = distance <= max_distance
        dsm = np.where(valid, self.top_z[nearest], HEIGHT_NODATA).astype(np.float32)
        top_code = self.top_code[nearest]
        dtm = None
        if self.ground_z is not None:
            dtm = _terrain(self.ground_z.reshape(shape), valid)
        colours = {}
        for name, sums in self.colours.items():
            colours[name] = _colour_raster(sums, shape, valid)[(slice(None),) + core]
        return WindowRasters(dsm[core], top_code[core], valid[core], None if dtm is None else dtm[core], colours)


def _nearest_occupied(occupied: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distance in cells to the nearest occupied cell, and that cell's flat index."""
    distance, (rows, cols) = ndimage.distance_transform_edt(~occupied, return_indices=True)
    return distance, rows * occupied.shape[1] + cols


def _colour_raster(sums: ColourSums, shape: Tuple[int, int], valid: np.ndarray) -> np.ndarray:
    """Mean colour per cell as 8-bit, empty valid cells from the nearest coloured cell; 0 (nodata)
    elsewhere. A mean that rounds to black becomes 1, so it is not read as nodata."""
    coloured = (sums.counts > 0).reshape(shape)
    out = np.zeros((sums.sums.shape[0],) + shape, np.uint8)
    if not coloured.any():
        return out
    distance, nearest = _nearest_occupied(coloured)
    means = np.rint(sums.means() / COLOUR_SCALE_16_TO_8)
    filled = np.clip(means[:, nearest], 1, 255)
    keep = valid & np.isfinite(distance)
    out[:, keep] = filled[:, keep].astype(np.uint8)
    return out


def _terrain(ground_z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Lowest terrain height per cell, with the valid cells that have no terrain point filled.

    Wide gaps (under buildings, dense canopy: cells farther than DEEP_GAP_CELLS from any terrain
    cell) are interpolated linearly between the terrain cells around them; the rest, the empty
    cells of a sparse cloud and the edges of wide gaps, are filled outward from their neighbours by
    normalised 3 x 3 averaging. Only the terrain cells around wide gaps are triangulated, which
    keeps the Delaunay small and the memory bounded however sparse the cloud."""
    has_ground = np.isfinite(ground_z)
    dtm = np.full(ground_z.shape, HEIGHT_NODATA, np.float32)
    if not has_ground.any():
        return dtm
    filled = np.where(has_ground, ground_z, 0.0).astype(np.float64)
    known = has_ground.copy()
    distance, nearest = _nearest_occupied(has_ground)
    deep = distance > DEEP_GAP_CELLS
    if (deep & valid).any():
        around = ndimage.binary_dilation(deep, iterations=DEEP_GAP_CELLS + 1)
        rim = has_ground & around
        cells = np.argwhere(around & ~has_ground & valid)
        try:
            values = LinearNDInterpolator(np.argwhere(rim), ground_z[rim])(cells)
        except (QhullError, ValueError):  # fewer than three rim cells, or all on one line
            values = np.full(len(cells), np.nan)
        inside = np.isfinite(values)
        filled[tuple(cells[inside].T)] = values[inside]
        known[tuple(cells[inside].T)] = True
    small = valid & ~known
    for _ in range(SMALL_GAP_PASSES):
        if not small.any():
            break
        weight = ndimage.uniform_filter(known.astype(np.float64), 3, mode="constant")
        total = ndimage.uniform_filter(np.where(known, filled, 0.0), 3, mode="constant")
        reached = small & (weight > 0)
        filled[reached] = total[reached] / weight[reached]
        known |= reached
        small &= ~reached
    if small.any():  # outside the hull of the terrain around a wide gap: the nearest terrain cell
        filled[small] = ground_z.reshape(-1)[nearest[small]]
    dtm[valid] = filled[valid].astype(np.float32)
    return dtm
