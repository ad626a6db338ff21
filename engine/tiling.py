"""Tile layout on the reference grid, blend windows, and independent 2-D blocks of output pixels.

A *block* is a rectangle of output pixels plus the tiles that touch it (its halo). Blocks are
independent: a block's pixels come out identical whether it runs alone or inside a whole-raster run,
so a distributed runner can hand blocks to workers unchanged. Splitting the columns into blocks
bounds memory by the block width instead of the raster width, at the price of recomputing the
halo's tile column at each block border.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Tuple

import numpy as np

from .errors import EngineError
from .vocabulary import BLEND_WINDOWS, check_key


def _starts(length: int, tile: int, stride: int) -> List[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # snap the last tile inside the raster
    return starts


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    row: int  # index of the tile row
    column: int


@dataclass(frozen=True)
class TilePlan:
    width: int
    height: int
    tile_width: int
    tile_height: int
    overlap: int
    xs: Tuple[int, ...]
    ys: Tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)

    def tiles_in(self, rows: Tuple[int, int], columns: Tuple[int, int]) -> List[Tile]:
        """Tiles of tile rows ``rows[0]..rows[1]`` and tile columns ``columns[0]..columns[1]`` (inclusive),
        row by row."""
        return [Tile(self.xs[c], self.ys[r], r, c) for r in range(rows[0], rows[1] + 1)
                for c in range(columns[0], columns[1] + 1)]

    def all_tiles(self) -> List[Tile]:
        return self.tiles_in((0, len(self.ys) - 1), (0, len(self.xs) - 1))

    def final_row_end(self, tile_row: int) -> int:
        """Output rows above this are final once tile rows ``<= tile_row`` are accumulated."""
        return _final_end(self.ys, tile_row, self.height)


def _final_end(starts: Tuple[int, ...], index: int, length: int) -> int:
    return starts[index + 1] if index + 1 < len(starts) else length


def plan_tiles(width: int, height: int, tile_size: int, overlap: int, size_multiple: int) -> TilePlan:
    if tile_size % size_multiple:
        raise EngineError(f"tile size {tile_size} must be a multiple of {size_multiple} for this model")
    if not 0 <= overlap < tile_size:
        raise EngineError(f"overlap ({overlap} px) must be at least 0 and smaller than the tile size ({tile_size} px)")
    # Rasters smaller than a tile get the smallest allowed tile that covers them (padded, masked).
    tile_w = min(tile_size, math.ceil(width / size_multiple) * size_multiple)
    tile_h = min(tile_size, math.ceil(height / size_multiple) * size_multiple)
    stride_x, stride_y = max(1, tile_w - overlap), max(1, tile_h - overlap)
    return TilePlan(width, height, tile_w, tile_h, overlap, tuple(_starts(width, tile_w, stride_x)),
                    tuple(_starts(height, tile_h, stride_y)))


def _ramp(length: int, kind: str) -> np.ndarray:
    t = (np.arange(length, dtype=np.float64) + 0.5) / length
    return 0.5 - 0.5 * np.cos(np.pi * t) if kind == "hann" else t


@lru_cache(maxsize=64)
def _axis_weights(size: int, overlap: int, kind: str, before: bool, after: bool) -> np.ndarray:
    w = np.ones(size, dtype=np.float64)
    ramp_length = min(overlap, size // 2)
    if kind == "crop":  # keep the tile's centre only (Deepness-style stitching, for comparison)
        half = overlap // 2
        if before:
            w[:half] = 0.0
        if after and half:
            w[size - half:] = 0.0
    elif kind != "none" and ramp_length > 0:
        ramp = _ramp(ramp_length, kind)
        if before:
            w[:ramp_length] = ramp
        if after:
            w[-ramp_length:] = ramp[::-1]
    return w


def blend_window(plan: TilePlan, tile: Tile, kind: str) -> np.ndarray:
    """Weights of one tile: tapered only on sides that have a neighbour, so raster borders keep full
    weight and every pixel has a positive total weight. ``hann``/``linear`` taper over the overlap,
    ``none`` averages overlaps evenly, ``crop`` keeps only the tile centre (hard seams; comparison only)."""
    check_key(BLEND_WINDOWS, kind, "blend window")
    return _window(plan.tile_width, plan.tile_height, plan.overlap, kind, tile.column > 0,
                   tile.column < len(plan.xs) - 1, tile.row > 0, tile.row < len(plan.ys) - 1)


@lru_cache(maxsize=32)
def _window(width: int, height: int, overlap: int, kind: str, left: bool, right: bool, top: bool,
            bottom: bool) -> np.ndarray:
    """At most nine distinct windows per run (corners, edges, inside): built once, shared read-only."""
    window = np.outer(_axis_weights(height, overlap, kind, top, bottom),
                      _axis_weights(width, overlap, kind, left, right)).astype(np.float32)
    window.flags.writeable = False
    return window


@dataclass(frozen=True)
class Span:
    """One axis of a block: output pixels [start, end) and the tiles first..last that touch them."""
    start: int
    end: int
    first_tile: int
    last_tile: int


@dataclass(frozen=True)
class Block:
    rows: Span
    columns: Span


def _spans(starts: Tuple[int, ...], tile: int, length: int, per: int) -> List[Span]:
    n = len(starts)
    per = n if per <= 0 else per
    spans = []
    for first in range(0, n, per):
        last = min(n, first + per) - 1
        start = 0 if first == 0 else _final_end(starts, first - 1, length)
        # Tiles before ``first`` that reach into the span are its halo.
        halo_first = first
        while halo_first > 0 and starts[halo_first - 1] + tile > start:
            halo_first -= 1
        spans.append(Span(start, _final_end(starts, last, length), halo_first, last))
    return spans


def plan_blocks(plan: TilePlan, tile_rows_per_block: int = 0, max_block_width: int = 0) -> List[Block]:
    """Blocks of ``tile_rows_per_block`` tile rows (0 = all) and about ``max_block_width`` pixels
    (0 = the whole width): at most ``ceil(width / max_block_width)`` runs of equally many tile columns."""
    columns = len(plan.xs)
    per_column = 0
    if max_block_width > 0 and plan.width > max_block_width:
        per_column = math.ceil(columns / math.ceil(plan.width / max_block_width))
    return [Block(rows, cols)
            for rows in _spans(plan.ys, plan.tile_height, plan.height, tile_rows_per_block)
            for cols in _spans(plan.xs, plan.tile_width, plan.width, per_column)]
