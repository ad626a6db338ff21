"""Optional clean-up of a class map: majority smoothing, then a minimum mapping unit (small regions
take their neighbours' class). Both work on the whole class map, after the blended run."""
from __future__ import annotations

import numpy as np

from .errors import EngineError


def clean_class_map(classes: np.ndarray, nodata: int, smoothing_radius: int = 0, min_pixels: int = 0) -> np.ndarray:
    """Majority smoothing (if ``smoothing_radius`` > 0) then the minimum mapping unit (if
    ``min_pixels`` > 1): smoothing rounds ragged edges, the unit then removes the specks left."""
    return apply_minimum_mapping_unit(apply_majority_smoothing(classes, smoothing_radius, nodata), min_pixels, nodata)


def apply_majority_smoothing(classes: np.ndarray, radius: int, nodata: int) -> np.ndarray:
    """Every valid pixel takes the most frequent class among the valid pixels of the disk of
    ``radius`` pixels around it (morphological majority filter); nodata neither votes nor changes."""
    if radius <= 0:
        return classes
    try:
        from skimage.filters.rank import majority
        from skimage.morphology import disk
    except ImportError:
        raise EngineError("smoothing needs scikit-image; install it") from None
    valid = classes != nodata
    smoothed = majority(classes.astype(np.uint8, copy=False), disk(radius), mask=valid)
    return np.where(valid, smoothed, classes).astype(classes.dtype, copy=False)


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
