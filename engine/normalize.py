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


def normalize(data: np.ndarray, valid: np.ndarray, spec: Normalization, stats: Optional[Range] = None) -> np.ndarray:
    """``data`` (bands x h x w float32) in raw units → network input; invalid pixels become 0."""
    bands = data.shape[0]
    if spec.type == "meanstd":
        mean = np.asarray(spec.mean, np.float32).reshape(bands, 1, 1)
        std = np.asarray(spec.std, np.float32).reshape(bands, 1, 1)
        out = (data - mean) / std
    else:
        lo, hi = value_range(spec, stats)
        lo, hi = lo.reshape(bands, 1, 1), hi.reshape(bands, 1, 1)
        out = (data - lo) / (hi - lo)
        if spec.clip:
            np.clip(out, 0.0, 1.0, out=out)
    out = out.astype(np.float32, copy=False)
    out[:, ~valid] = 0.0
    return out
