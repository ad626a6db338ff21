"""Class-map clean-up on hand-made maps: what changes, what must not."""
import numpy as np

from modalseg.engine.postprocess import apply_majority_smoothing, clean_class_map

NODATA = 0


def test_majority_smoothing_ignores_and_keeps_nodata():
    classes = np.full((20, 20), 1, np.uint8)
    classes[:, 10:] = 2
    classes[5, 5] = 2                       # a speck inside class 1
    classes[12:20, 0:6] = NODATA            # a nodata block next to class 1
    smoothed = apply_majority_smoothing(classes, 1, NODATA)
    assert smoothed[5, 5] == 1
    assert np.array_equal(smoothed == NODATA, classes == NODATA)  # nodata neither grows nor shrinks
    # a class-1 pixel beside the nodata block: its valid neighbours are class 1, nodata does not vote
    assert smoothed[11, 2] == 1
    assert np.array_equal(smoothed[:, 11:], classes[:, 11:])      # inside class 2 nothing moves
    assert np.array_equal(apply_majority_smoothing(classes, 0, NODATA), classes)


def test_clean_class_map_smooths_then_applies_the_minimum_unit():
    classes = np.full((30, 30), 1, np.uint8)
    classes[2:5, 2:5] = 3                   # 9 px: survives radius-1 smoothing (core pixel keeps it)
    smoothed_only = clean_class_map(classes, NODATA, smoothing_radius=1)
    assert (smoothed_only == 3).sum() > 0
    cleaned = clean_class_map(classes, NODATA, smoothing_radius=1, min_pixels=10)
    assert (cleaned == 3).sum() == 0 and np.all(cleaned == 1)
