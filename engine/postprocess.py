"""Optional clean-up of a class map: minimum mapping unit (small regions take their neighbours' class)."""
from __future__ import annotations

import numpy as np

from .errors import EngineError


def apply_minimum_mapping_unit(classes: np.ndarray, min_pixels: int, nodata: int) -> np.ndarray:
    """Regions (4-connected, same class) smaller than ``min_pixels`` take the class of the nearest
    pixel of a region that is large enough; nodata stays nodata."""
    if min_pixels <= 1:
        return classes
    try:
        from scipy import ndimage
        from skimage.measure import label
    except ImportError:
        raise EngineError("the minimum mapping unit needs scikit-image and scipy; install them") from None
    regions = label(classes.astype(np.int32) + 1, connectivity=1, background=nodata + 1)
    sizes = np.bincount(regions.ravel())
    small = (sizes[regions] < min_pixels) & (classes != nodata)
    keep = ~small & (classes != nodata)
    if not small.any() or not keep.any():
        return classes
    # Index of the nearest kept pixel for every pixel (distance transform of the "not kept" set).
    _, (rows, cols) = ndimage.distance_transform_edt(~keep, return_indices=True)
    out = classes.copy()
    out[small] = classes[rows[small], cols[small]]
    return out
