"""Tile layout on the reference grid, blend windows, and independent blocks of output rows.

A *block* is a range of output rows plus the tiles that touch it (its halo). Blocks are independent:
a block's rows come out identical whether it runs alone or inside a whole-raster run, so a
distributed runner can hand blocks to workers unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Tuple

import numpy as np

from .errors import EngineError

BLEND_WINDOWS = ("hann", "linear", "none", "crop")


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

    def tiles_in_rows(self, first_row: int, last_row: int) -> List[Tile]:
        return [Tile(x, self.ys[r], r, c) for r in range(first_row, last_row + 1) for c, x in enumerate(self.xs)]

    def final_row_end(self, tile_row: int) -> int:
        """Output rows above this are final once tile rows ``<= tile_row`` are accumulated."""
        return self.ys[tile_row + 1] if tile_row + 1 < len(self.ys) else self.height


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
    if kind not in BLEND_WINDOWS:
        raise EngineError(f"blend window must be one of {', '.join(BLEND_WINDOWS)}")
    wx = _axis_weights(plan.tile_width, plan.overlap, kind, tile.column > 0, tile.column < len(plan.xs) - 1)
    wy = _axis_weights(plan.tile_height, plan.overlap, kind, tile.row > 0, tile.row < len(plan.ys) - 1)
    return np.outer(wy, wx).astype(np.float32)


@dataclass(frozen=True)
class Block:
    first_output_row: int
    end_output_row: int
    first_tile_row: int
    last_tile_row: int


def plan_blocks(plan: TilePlan, tile_rows_per_block: int = 0) -> List[Block]:
    """Split the output rows into blocks of about ``tile_rows_per_block`` tile rows (0 = one block)."""
    n = len(plan.ys)
    per = n if tile_rows_per_block <= 0 else tile_rows_per_block
    blocks = []
    for first in range(0, n, per):
        last = min(n, first + per) - 1
        start = 0 if first == 0 else plan.final_row_end(first - 1)
        end = plan.final_row_end(last)
        # Tiles of earlier rows that reach into this block are its halo.
        halo_first = first
        while halo_first > 0 and plan.ys[halo_first - 1] + plan.tile_height > start:
            halo_first -= 1
        blocks.append(Block(start, end, halo_first, last))
    return blocks
