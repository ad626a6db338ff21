"""Turn raw pixel values into network input exactly as a package declares (one implementation,
shared by inference and training)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .errors import EngineError
from .package import Normalization

Range = Tuple[np.ndarray, np.ndarray]  # per-band (low, high)


def percentile_range(data: np.ndarray, valid: np.ndarray, low: float, high: float) -> Range:
    """Per-band percentiles over valid pixels (``data`` is bands x h x w)."""
    if not valid.any():
        raise EngineError("a layer has no valid pixel inside the output extent (nodata everywhere)")
    values = data[:, valid]
    lo, hi = np.percentile(values, [low, high], axis=1).astype(np.float32)
    return lo, np.maximum(hi, lo + 1e-6)


def value_range(spec: Normalization, stats: Optional[Range]) -> Optional[Range]:
    """(low, high) per band for range-based recipes; ``None`` for mean/std."""
    if spec.type == "minmax":
        return np.asarray(spec.min, np.float32), np.asarray(spec.max, np.float32)
    if spec.type == "percentile":
        if stats is None:
            raise EngineError("percentile normalisation needs statistics of the whole layer")
        return stats
    return None


def normalize(data: np.ndarray, valid: np.ndarray, spec: Normalization, stats: Optional[Range] = None,
              out: Optional[np.ndarray] = None) -> np.ndarray:
    """``data`` (bands x h x w float32) in raw units → network input; invalid pixels become 0.

    Written into ``out`` when given (a slot of the batch array: no copy per tile)."""
    bands = data.shape[0]
    if spec.type == "meanstd":
        offset = np.asarray(spec.mean, np.float32).reshape(bands, 1, 1)
        scale = 1.0 / np.asarray(spec.std, np.float32).reshape(bands, 1, 1)
    else:
        lo, hi = value_range(spec, stats)
        offset = lo.reshape(bands, 1, 1).astype(np.float32)
        scale = (1.0 / (hi - lo)).reshape(bands, 1, 1).astype(np.float32)
    out = np.subtract(data, offset, out=out, dtype=np.float32)
    np.multiply(out, scale, out=out)
    if spec.type != "meanstd" and spec.clip:
        np.clip(out, 0.0, 1.0, out=out)
    if not valid.all():
        np.multiply(out, valid, out=out)  # invalid pixels are finite here: the readers zero them
    return out
