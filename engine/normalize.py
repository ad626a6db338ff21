"""Turn raw pixel values into network input exactly as a package declares (one implementation,
shared by inference and training)."""
from __future__ import annotations

from dataclasses import dataclass
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
    # A band of one value has no spread: a floor relative to its magnitude keeps 1 / (hi - lo) finite
    # (a float32 128 + 1e-6 is 128 again, and the whole layer became NaN).
    return lo, np.maximum(hi, lo + np.maximum(np.abs(lo), 1.0) * np.float32(1e-5))


def own_statistics(data: np.ndarray, valid: np.ndarray, spec: Normalization) -> Optional[Range]:
    """The statistics a recipe takes from the layer itself when ``data`` is the whole layer (a
    training chip, a validation chip): its percentiles for ``percentile``, nothing otherwise."""
    return percentile_range(data, valid, spec.low, spec.high) if spec.type == "percentile" else None


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


# An optical layer's robust range: percentiles over all bands together (one stretch for every band
# keeps the colour balance), so a few saturated or dead pixels do not set it.
FIT_PERCENTILES = (1.0, 99.0)
# For mean/std recipes the expected range is mean ± this many standard deviations (band means):
# the 1st–99th percentiles of the values the statistics describe.
_STD_SPAN = 2.33


@dataclass(frozen=True)
class ValueFit:
    """A linear stretch (per band: gain × value + offset) bringing a layer into its recipe's range."""

    gain: np.ndarray
    offset: np.ndarray
    found_low: float
    found_high: float
    target_low: float
    target_high: float
    reason: str
    low_percentile: float = FIT_PERCENTILES[0]
    high_percentile: float = FIT_PERCENTILES[1]


def recipe_range(spec: Normalization) -> Optional[Tuple[float, float]]:
    """The raw value range a fixed recipe was made for; ``None`` for percentile recipes, which fit
    any range by construction."""
    if spec.type == "minmax":
        return min(spec.min), max(spec.max)
    if spec.type == "meanstd":
        mean, std = float(np.mean(spec.mean)), float(np.mean(spec.std))
        return mean - _STD_SPAN * std, mean + _STD_SPAN * std
    return None


def fit_to_recipe(data: np.ndarray, valid: np.ndarray, spec: Normalization) -> Optional[ValueFit]:
    """A stretch for a layer (``data``: bands x h x w sample in physical units) whose values do not fit
    the range ``spec`` expects: far above it (e.g. 12-bit or reflectance × 10 000 for a 0–255
    recipe) or all within 0–1 (reflectance) for a recipe spanning much more. ``None`` when it fits."""
    target = recipe_range(spec)
    if target is None or not valid.any():
        return None
    target_low, target_high = target
    span = target_high - target_low
    values = data[:, valid]
    low, high = (float(v) for v in np.percentile(values, FIT_PERCENTILES))
    if high > target_high + span:
        reason = "far above the model's range"
    elif float(values.max()) <= 1.0 < span / 10.0:
        reason = "all within 0–1, like reflectance"
    else:
        return None
    if high <= low:
        return None  # a constant layer: nothing to stretch, the recipe handles it as it is
    gain = (target_high - target_low) / (high - low)
    bands = data.shape[0]
    return ValueFit(np.full(bands, gain, np.float32), np.full(bands, target_low - low * gain, np.float32),
                    float(values.min()), float(values.max()), target_low, target_high, reason)
