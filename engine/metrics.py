"""The one metrics module: confusion matrix and every score derived from it (numpy only).

Conventions (ISPRS protocol, as in the seed papers): rows = reference, columns = prediction;
OA over *all* classes; per class IoU = TP/(TP+FP+FN), F1 = 2TP/(2TP+FP+FN), precision,
recall; mIoU / mF1 averaged over the chosen foreground classes only, skipping classes absent
from both reference and prediction (their IoU is undefined, reported as NaN); Cohen's kappa.
SGMA's subset evaluator: mIoU of every non-empty modality subset, Average / Top-1 / Last-1 =
mean / max / min over the subsets.
"""
from __future__ import annotations

from itertools import combinations
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np


def confusion_matrix(reference: np.ndarray, prediction: np.ndarray, num_classes: int,
                     ignore_index: Optional[int] = None,
                     valid: Optional[np.ndarray] = None) -> np.ndarray:
    """``num_classes`` x ``num_classes`` int64 counts of (reference, prediction) index pairs.

    Pixels whose reference equals ``ignore_index``, outside ``valid``, or whose reference or
    prediction is outside ``0..num_classes-1`` are not counted.
    """
    ref = np.asarray(reference).ravel().astype(np.int64)
    pred = np.asarray(prediction).ravel().astype(np.int64)
    if ref.shape != pred.shape:
        raise ValueError(f"reference ({ref.size} px) and prediction ({pred.size} px) differ in size")
    keep = (ref >= 0) & (ref < num_classes) & (pred >= 0) & (pred < num_classes)
    if ignore_index is not None:
        keep &= ref != ignore_index
    if valid is not None:
        keep &= np.asarray(valid, bool).ravel()
    idx = ref[keep] * num_classes + pred[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_from_values(reference: np.ndarray, prediction: np.ndarray, class_values: Sequence[int],
                          ignore_values: Iterable[int] = (0,)) -> np.ndarray:
    """Confusion matrix of rasters holding class *values* (e.g. 1..6), in ``class_values`` order.

    Returns (N+1) x (N+1): the last index is "unclassified", a prediction outside the class
    list (e.g. output nodata over a labelled pixel). It counts as a miss of the reference
    class, so OA and IoU are not flattered; its row is always empty because reference values
    outside the list (and ``ignore_values``) are not counted. Means should use 0..N-1.
    """
    n = len(class_values)
    lut = np.full(65536, n, np.int64)
    for i, v in enumerate(class_values):
        lut[int(v)] = i
    ref = np.asarray(reference).astype(np.int64).ravel()
    pred = np.asarray(prediction).astype(np.int64).ravel()
    in_range = (ref >= 0) & (ref < 65536)
    r = np.where(in_range, lut[np.clip(ref, 0, 65535)], n)
    keep = in_range & (r < n)
    for v in ignore_values:
        keep &= ref != v
    p = np.where((pred >= 0) & (pred < 65536), lut[np.clip(pred, 0, 65535)], n)
    return confusion_matrix(r[keep], p[keep], n + 1)


def per_class(cm: np.ndarray) -> Dict[str, np.ndarray]:
    """TP, FP, FN, IoU, F1, precision, recall per class (NaN where undefined)."""
    m = np.asarray(cm, np.float64)
    tp = np.diag(m)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "iou": iou, "f1": f1, "precision": precision, "recall": recall}


def overall_accuracy(cm: np.ndarray) -> float:
    m = np.asarray(cm, np.float64)
    total = m.sum()
    return float(np.trace(m) / total) if total else float("nan")


def kappa(cm: np.ndarray) -> float:
    """Cohen's kappa: (po - pe) / (1 - pe)."""
    m = np.asarray(cm, np.float64)
    n = m.sum()
    if n == 0:
        return float("nan")
    po = np.trace(m) / n
    pe = float((m.sum(0) * m.sum(1)).sum()) / (n * n)
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def mean_over(values: np.ndarray, classes: Optional[Sequence[int]] = None) -> float:
    """Mean over the chosen classes (indices), skipping undefined (NaN) entries."""
    v = np.asarray(values, np.float64)
    if classes is not None:
        v = v[list(classes)]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def summarize(cm: np.ndarray, class_names: Sequence[str],
              foreground: Optional[Sequence[int]] = None, min_support: int = 0) -> Dict[str, object]:
    """All scores of one confusion matrix; ``foreground`` = class indices the means use.

    ``min_support``: foreground classes with fewer reference pixels are left out of the means
    (a class with 3 reference pixels in a validation strip says nothing about the model); their
    per-class figures are still reported.
    """
    pc = per_class(cm)
    fg = list(range(len(class_names))) if foreground is None else list(foreground)
    support = np.asarray(cm).sum(1)
    if min_support > 0:
        fg = [c for c in fg if support[c] >= min_support]
    return {
        "oa": overall_accuracy(cm), "kappa": kappa(cm),
        "miou": mean_over(pc["iou"], fg), "mf1": mean_over(pc["f1"], fg),
        "iou": {n: float(v) for n, v in zip(class_names, pc["iou"])},
        "f1": {n: float(v) for n, v in zip(class_names, pc["f1"])},
        "precision": {n: float(v) for n, v in zip(class_names, pc["precision"])},
        "recall": {n: float(v) for n, v in zip(class_names, pc["recall"])},
        "support": {n: int(v) for n, v in zip(class_names, np.asarray(cm).sum(1))},
        "foreground": [class_names[i] for i in fg],
    }


def modality_subsets(modalities: Sequence[str]) -> List[Tuple[str, ...]]:
    """Every non-empty subset, smallest first, in modality order (7 for 3 modalities)."""
    mods = list(modalities)
    return [c for k in range(1, len(mods) + 1) for c in combinations(mods, k)]


def subset_table(scores: Mapping[Tuple[str, ...], float]) -> Dict[str, float]:
    """SGMA's row summary: Average / Top-1 / Last-1 = mean / max / min over the subsets."""
    v = np.array([s for s in scores.values() if np.isfinite(s)], np.float64)
    if not v.size:
        return {"average": float("nan"), "top1": float("nan"), "last1": float("nan")}
    return {"average": float(v.mean()), "top1": float(v.max()), "last1": float(v.min())}


class SubsetEvaluator:
    """Accumulate one confusion matrix per modality subset and summarise them SGMA-style."""

    def __init__(self, modalities: Sequence[str], class_names: Sequence[str],
                 foreground: Optional[Sequence[int]] = None, min_support: int = 0) -> None:
        self.modalities = list(modalities)
        self.min_support = min_support
        self.class_names = list(class_names)
        self.foreground = foreground
        n = len(class_names)
        self.cms: Dict[Tuple[str, ...], np.ndarray] = {s: np.zeros((n, n), np.int64)
                                                       for s in modality_subsets(modalities)}

    def update(self, subset: Iterable[str], reference: np.ndarray, prediction: np.ndarray,
               ignore_index: Optional[int] = None) -> None:
        key = tuple(m for m in self.modalities if m in set(subset))
        if key not in self.cms:
            raise KeyError(f"unknown modality subset {key}")
        self.cms[key] += confusion_matrix(reference, prediction, len(self.class_names), ignore_index)

    def results(self) -> Dict[str, object]:
        rows = {"+".join(s): summarize(cm, self.class_names, self.foreground, self.min_support)
                for s, cm in self.cms.items() if cm.sum()}
        table = subset_table({k: v["miou"] for k, v in rows.items()})
        return {"subsets": rows, **{f"miou_{k}": v for k, v in table.items()}}
