"""Metrics reproduce hand-computed confusion matrices exactly."""
import math

import numpy as np
import pytest

from modalseg.engine.metrics import (SubsetEvaluator, confusion_from_values, confusion_matrix, kappa,
                                     mean_over, modality_subsets, overall_accuracy, per_class,
                                     subset_table, summarize)

REF = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 255])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 0])
# by hand: rows = reference, columns = prediction; the 255 pixel is ignored
CM = np.array([[2, 1, 0],
               [0, 1, 1],
               [1, 0, 3]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(REF, PRED, 3, ignore_index=255)
    np.testing.assert_array_equal(cm, CM)
    # a validity mask removes pixels too: drop the first one (ref 0, pred 0)
    valid = np.ones(10, bool)
    valid[0] = False
    np.testing.assert_array_equal(confusion_matrix(REF, PRED, 3, 255, valid)[0], [1, 1, 0])


def test_per_class_scores_by_hand():
    pc = per_class(CM)
    np.testing.assert_allclose(pc["iou"], [2 / 4, 1 / 3, 3 / 5])
    np.testing.assert_allclose(pc["f1"], [4 / 6, 2 / 4, 6 / 8])
    np.testing.assert_allclose(pc["precision"], [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(pc["recall"], [2 / 3, 1 / 2, 3 / 4])
    assert overall_accuracy(CM) == pytest.approx(6 / 9)
    # po = 6/9, pe = (3*3 + 2*2 + 4*4) / 81 = 29/81 -> kappa = 25/52
    assert kappa(CM) == pytest.approx(25 / 52)


def test_summary_means_over_foreground_only():
    s = summarize(CM, ["clutter", "a", "b"], foreground=[1, 2])
    assert s["miou"] == pytest.approx((1 / 3 + 3 / 5) / 2)
    assert s["mf1"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert s["oa"] == pytest.approx(6 / 9)  # OA still over all classes (ISPRS)
    assert s["support"] == {"clutter": 3, "a": 2, "b": 4}


def test_absent_class_is_nan_and_skipped():
    cm = np.array([[5, 0, 0], [1, 3, 0], [0, 0, 0]])
    pc = per_class(cm)
    assert math.isnan(pc["iou"][2])
    assert mean_over(pc["iou"]) == pytest.approx((5 / 6 + 3 / 4) / 2)


def test_perfect_and_kappa_zero():
    assert kappa(np.diag([4, 6])) == pytest.approx(1.0)
    # prediction independent of reference: every cell = row * col / n -> kappa 0
    assert kappa(np.array([[2, 2], [2, 2]])) == pytest.approx(0.0)


def test_confusion_from_values_counts_unclassified_as_miss():
    ref = np.array([[1, 1, 2], [2, 0, 3]])
    pred = np.array([[1, 2, 2], [0, 1, 3]])  # pred 0 over a labelled pixel = unclassified
    cm = confusion_from_values(ref, pred, [1, 2, 3])
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 1  # 1 -> 1
    expected[0, 1] = 1  # 1 -> 2
    expected[1, 1] = 1  # 2 -> 2
    expected[1, 3] = 1  # 2 -> unclassified
    expected[2, 2] = 1  # 3 -> 3 ; the reference 0 is ignored
    np.testing.assert_array_equal(cm, expected)
    assert per_class(cm)["iou"][1] == pytest.approx(1 / 3)  # tp 1, fp 1, fn 1


def test_subset_evaluator_average_top_last():
    assert modality_subsets(["rgb", "dsm", "nir"]) == [
        ("rgb",), ("dsm",), ("nir",), ("rgb", "dsm"), ("rgb", "nir"), ("dsm", "nir"), ("rgb", "dsm", "nir")]
    ev = SubsetEvaluator(["rgb", "dsm"], ["a", "b"])
    ref = np.array([0, 0, 1, 1])
    ev.update(["rgb"], ref, np.array([0, 0, 1, 1]))  # perfect: mIoU 1
    ev.update(["dsm"], ref, np.array([0, 1, 1, 1]))  # IoU a 1/2, b 2/3
    ev.update(["dsm", "rgb"], ref, np.array([1, 1, 1, 1]))  # IoU a 0, b 1/2
    r = ev.results()
    rows = [1.0, (1 / 2 + 2 / 3) / 2, (0 + 1 / 2) / 2]
    assert r["subsets"]["rgb+dsm"]["miou"] == pytest.approx(0.25)
    assert r["miou_average"] == pytest.approx(np.mean(rows))
    assert r["miou_top1"] == pytest.approx(max(rows))
    assert r["miou_last1"] == pytest.approx(min(rows))
    assert subset_table({("x",): 0.2, ("y",): 0.6}) == pytest.approx(
        {"average": 0.4, "top1": 0.6, "last1": 0.2})


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)


def test_min_support_keeps_tiny_classes_out_of_the_mean():
    cm = np.array([[90, 0, 0], [0, 9, 1], [1, 0, 0]])  # class 2: one reference pixel, missed
    assert summarize(cm, ["a", "b", "c"])["miou"] == pytest.approx((90 / 91 + 0.9 + 0.0) / 3)
    s = summarize(cm, ["a", "b", "c"], min_support=5)
    assert s["miou"] == pytest.approx((90 / 91 + 0.9) / 2)
    assert s["foreground"] == ["a", "b"] and s["iou"]["c"] == 0.0
