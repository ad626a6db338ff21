"""Heights above an *estimated* ground, for training chips: what a user who has a DSM alone gets.

When a DSM comes without a DTM, the engine estimates the DTM with its ground filter
(``engine.ground.ground_surface``) and feeds ``max(DSM - DTM, 0)``. That nDSM differs from the
LiDAR one the tiles carry (the filter's DTM sits a few decimetres low on slopes, so low vegetation
and ground rise), so a model trained only on LiDAR nDSMs loses ~10 points on DSM-only input
(benchmarks/dsm_only). The sampler therefore swaps a share of chips' nDSM for this one, computed
here once per tile with the engine's own function and window, and kept in memory.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ...engine.ground import ground_surface, window_pixels
from ...engine.reader import PLAUSIBLE_HEIGHT_M
from .rasters import RasterStack

DSM_KEY = "dsm"  # the stack file the estimate starts from

Layer = Tuple[np.ndarray, np.ndarray]  # 1 x H x W heights (metres), H x W valid mask


def estimated_ndsm(stack: RasterStack, window_m: float) -> Layer:
    """The whole stack's nDSM over the ground filter's DTM of its DSM (the engine's maths: implausible
    heights are nodata, heights below the estimated ground are 0)."""
    dsm, valid = stack.read(DSM_KEY)
    valid = valid & (np.abs(dsm[0]) <= PLAUSIBLE_HEIGHT_M)
    surface = np.where(valid, dsm[0], np.nan).astype(np.float32)
    dtm = ground_surface(surface, stack.gsd, window_pixels(window_m, stack.gsd))
    valid = valid & np.isfinite(dtm)
    heights = np.where(valid, np.maximum(surface - dtm, 0.0), 0.0).astype(np.float32)
    return heights[None], valid


class EstimatedGroundCache:
    """``estimated_ndsm`` per stack name, computed on first use (once per tile per training run)."""

    def __init__(self, window_m: float) -> None:
        self.window_m = float(window_m)
        self._layers: Dict[str, Layer] = {}

    def available(self, stack: RasterStack) -> bool:
        return DSM_KEY in stack.files

    def read(self, stack: RasterStack, x: int, y: int, w: int, h: int) -> Layer:
        """A window of the stack's estimated nDSM (same contract as ``RasterStack.read``)."""
        if stack.name not in self._layers:
            self._layers[stack.name] = estimated_ndsm(stack, self.window_m)
        data, valid = self._layers[stack.name]
        return data[:, y:y + h, x:x + w], valid[y:y + h, x:x + w]
