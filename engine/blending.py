"""Weighted accumulation of tile outputs in a band of rows, so memory follows tile rows, not the raster."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np


@dataclass
class FinishedRows:
    """Final blended rows as weighted sums: dividing by ``weight`` gives probabilities, but the class
    map (an argmax) and the robustness shares (normalised by their own sum) need no division, so
    it is only done for the outputs that want it."""
    y: int  # first output row
    scores: np.ndarray  # classes x h x w float32: blended probabilities times ``weight``
    robustness: Optional[np.ndarray]  # modalities x h x w, times ``weight``
    weight: np.ndarray  # h x w float32, > 0 exactly where some valid tile pixel landed
    x: int = 0  # first output column

    @property
    def valid(self) -> np.ndarray:
        return self.weight > 0

    def probabilities(self) -> np.ndarray:
        return self.scores / np.where(self.weight > 0, self.weight, 1.0)


def divide_by_band_sum(bands: np.ndarray) -> np.ndarray:
    """``bands`` (bands x h x w) divided in place by their sum per pixel, so shares sum to 1; a pixel
    whose bands are all 0 stays 0."""
    bands /= np.maximum(bands.sum(axis=0, keepdims=True), 1e-12)
    return bands


def weighted_softmax(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``softmax(logits, axis=0) * weights`` for one tile (classes x h x w), computed in place in
    ``logits``: one pass fewer and no temporaries, since this runs for every tile."""
    peak = logits.max(axis=0)
    np.subtract(logits, peak, out=logits)
    np.exp(logits, out=logits)
    scale = logits.sum(axis=0)
    np.divide(weights, scale, out=scale)
    np.multiply(logits, scale, out=logits)
    return logits


class StripAccumulator:
    """Holds output rows ``[top, top + capacity)`` of columns ``[left, left + width)``; ``add`` blends
    a tile in, ``pop_until`` hands out finished rows and slides the band down."""

    def __init__(self, left: int, width: int, height: int, capacity: int, classes: int, modalities: int,
                 top: int, with_robustness: bool):
        self.left, self.width, self.height, self.capacity, self.top = left, width, height, capacity, top
        self.probabilities = np.zeros((classes, capacity, width), np.float32)
        self.robustness = np.zeros((modalities, capacity, width), np.float32) if with_robustness else None
        self.weight = np.zeros((capacity, width), np.float32)  # > 0 exactly where some tile had data
        self.filled = 0  # rows [0, filled) of the band may hold data; the rest is still zero

    def add(self, x: int, y: int, weights: np.ndarray, probabilities: np.ndarray,
            robustness: Optional[np.ndarray]) -> None:
        """Blend one tile whose top-left output pixel is (x, y). ``probabilities`` and ``robustness``
        come already multiplied by ``weights`` (blend window x validity; see ``weighted_softmax``);
        parts beyond the raster are dropped."""
        r0, c0 = y - self.top, x - self.left
        h = min(weights.shape[0], self.height - y)
        w = min(weights.shape[1], self.width - c0)
        if r0 < 0 or r0 + h > self.capacity or c0 < 0:
            raise RuntimeError("tile outside the accumulation band")  # a planning bug, not user input
        rows, cols = slice(r0, r0 + h), slice(c0, c0 + w)
        self.probabilities[:, rows, cols] += probabilities[:, :h, :w]
        if self.robustness is not None and robustness is not None:
            self.robustness[:, rows, cols] += robustness[:, :h, :w]
        self.weight[rows, cols] += weights[:h, :w]
        self.filled = max(self.filled, r0 + h)

    def pop_until(self, end_row: int, chunk_rows: int = 32) -> Iterator[FinishedRows]:
        """Finished rows up to ``end_row`` in chunks of ``chunk_rows`` (so what consumers derive from
        them stays small however wide the raster), as views: each chunk must be used before the next
        is asked for; then the band slides down."""
        n = min(end_row - self.top, self.capacity)
        if n <= 0:
            return
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n))
            yield FinishedRows(self.top + start, self.probabilities[:, rows],
                               None if self.robustness is None else self.robustness[:, rows],
                               self.weight[rows], self.left)
        # Slide only the rows that hold data: after a tile row that is the overlap, not the whole band.
        keep = max(0, self.filled - n)
        for array in (self.probabilities, self.robustness, self.weight):
            if array is not None:
                if keep:  # numpy buffers the copy itself when the two row ranges overlap
                    array[..., :keep, :] = array[..., n:n + keep, :]
                array[..., keep:max(self.filled, keep), :] = 0
        self.filled = keep
        self.top += n
