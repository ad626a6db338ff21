"""A DSM without a DTM: how good is the estimated DTM, and how much does segmentation lose?

    python -m benchmarks.dsm_only [--model PACKAGE] [--window METRES]

On every shared LiDAR HD tile that has a DTM (``../shared/data/lidarhd_*``):

* ground error: median and mean absolute difference, on ground pixels (label 1), between the nDSM
  from the DTM the engine estimates (``engine.ground``) and the tile's own nDSM (DSM − DTM of the
  LiDAR);
* mIoU (classes 1–4, ``engine.metrics``) of ``run_segmentation`` from the DSM alone (Auto elevation
  type: the DTM is estimated) and from DSM + DTM, elevation only. Target: within 3 points, pooled
  over all tiles (one confusion matrix).

The ground filter's constants were tuned on these tiles, so the pooled figures are also printed for
the tuning tiles and, separately, for the held-out tiles (``models.data.holdout``, marked ``*``):
only the latter say what a DSM never looked at gets.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from osgeo import gdal

from .common import REPO_ROOT, expose_plugin_package

SHARED = REPO_ROOT.parent / "shared" / "data"
SCORED_CLASSES = (1, 2, 3, 4)  # ground, building, low vegetation, tree


def tiles() -> List[Tuple[str, Path]]:
    """(name, DSM path) of every lidarhd tile with a DTM and labels beside its DSM."""
    found = []
    for dsm in sorted(SHARED.glob("lidarhd_*/*_dsm.tif")):
        stem = str(dsm)[:-len("_dsm.tif")]
        if all(Path(f"{stem}_{part}.tif").exists() for part in ("dtm", "ndsm", "label")):
            found.append((Path(stem).name, dsm))
    return found


def _read(path: Path) -> np.ndarray:
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    data = band.ReadAsArray().astype(np.float32)
    nodata = band.GetNoDataValue()
    if nodata is not None:
        data[data == nodata] = np.nan
    return data


def ground_error(dsm: Path, window_m: float, scratch: Path) -> Tuple[np.ndarray, int]:
    """|estimated nDSM − LiDAR nDSM| on every ground pixel, and how many there are."""
    from modalseg.engine.grid import grid_of
    from modalseg.engine.ground import estimate_dtm

    estimated = estimate_dtm(str(dsm), 1, grid_of(str(dsm)), window_m, str(scratch / "dtm.tif"))
    surface = _read(dsm)
    # estimate_dtm covers the DSM plus a margin clipped to it: the same pixels here
    ndsm_estimated = np.maximum(surface - _read(Path(estimated)), 0.0)
    ndsm = _read(Path(str(dsm).replace("_dsm.tif", "_ndsm.tif")))
    labels = gdal.Open(str(dsm).replace("_dsm.tif", "_label.tif")).ReadAsArray()
    ground = (labels == 1) & np.isfinite(ndsm) & np.isfinite(ndsm_estimated)
    return np.abs(ndsm_estimated[ground] - ndsm[ground]), int(ground.sum())


def segment(package, dsm: Path, with_dtm: bool, window_m: float, out: Path) -> np.ndarray:
    """Confusion matrix (class values of the package, + unclassified) of an elevation-only run."""
    from modalseg.engine import GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, run_segmentation
    from modalseg.engine.metrics import confusion_from_values

    layers = {"elevation": LayerInput(str(dsm))}
    if with_dtm:
        layers["dtm"] = LayerInput(str(dsm).replace("_dsm.tif", "_dtm.tif"))
    sources, _ = bind_modalities(package.metadata, layers)
    report = run_segmentation(sources, package, GridRequest(), OutputPaths(classes=str(out / "classes.tif")),
                              RunOptions(ground_window_m=window_m))
    predicted = gdal.Open(report.outputs["classes"]).ReadAsArray()
    labels = gdal.Open(str(dsm).replace("_dsm.tif", "_label.tif")).ReadAsArray()
    return confusion_from_values(labels, predicted, package.metadata.class_values)


def miou(cm: np.ndarray, class_values) -> float:
    from modalseg.engine.metrics import mean_over, per_class

    indices = [list(class_values).index(v) for v in SCORED_CLASSES]
    support = cm.sum(1)
    return 100.0 * mean_over(per_class(cm)["iou"], [i for i in indices if support[i] > 0])


def held_out(dsm: Path) -> bool:
    from modalseg.models.data.holdout import is_held_out

    return is_held_out(dsm.parent.name, dsm.name[:-len("_dsm.tif")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"))
    parser.add_argument("--window", type=float, default=None, help="ground filter window (m); default: engine's")
    parser.add_argument("--tiles", nargs="*", default=None, metavar="SUBSTRING",
                        help="only the tiles whose name holds one of these (to iterate faster)")
    args = parser.parse_args()
    expose_plugin_package()
    from modalseg.engine import load_package
    from modalseg.engine.vocabulary import DEFAULT_GROUND_WINDOW_M

    window = args.window or DEFAULT_GROUND_WINDOW_M
    package = load_package(args.model)
    found = tiles()
    if args.tiles:
        found = [(name, dsm) for name, dsm in found if any(part in name for part in args.tiles)]
    if not found:
        raise SystemExit(f"no lidarhd tile with a DTM under {SHARED}")
    print(f"model {package.metadata.name} {package.metadata.version}, ground window {window:g} m, "
          f"mIoU over classes {SCORED_CLASSES}")
    print(f"{'tile (* held out)':44s} {'ground px':>9s} {'median err':>10s} {'mean err':>8s} {'mIoU DSM':>9s} "
          f"{'mIoU +DTM':>9s} {'label px':>9s}")
    totals: Dict[Tuple[str, bool], np.ndarray] = {}
    errors: Dict[str, List[np.ndarray]] = {}
    for name, dsm in found:
        group = "held-out tiles" if held_out(dsm) else "tuning tiles"
        with tempfile.TemporaryDirectory() as folder:
            error, count = ground_error(dsm, window, Path(folder))
            scores = {}
            for with_dtm in (False, True):
                cm = segment(package, dsm, with_dtm, window, Path(folder))
                for key in ((group, with_dtm), ("all tiles", with_dtm)):
                    totals[key] = totals.get(key, 0) + cm
                scores[with_dtm] = miou(cm, package.metadata.class_values)
        for key in (group, "all tiles"):
            errors.setdefault(key, []).append(error)
        median, mean = (f(error) if count else float("nan") for f in (np.median, np.mean))
        label = name[:42] + (" *" if group == "held-out tiles" else "")
        print(f"{label:44s} {count:9d} {median:10.2f} {mean:8.2f} {scores[False]:9.1f} {scores[True]:9.1f} "
              f"{int(cm.sum()):9d}")
    from modalseg.engine.metrics import per_class

    indices = [list(package.metadata.class_values).index(v) for v in SCORED_CLASSES]
    for group in ("all tiles", "tuning tiles", "held-out tiles"):
        if group not in errors:
            continue
        pooled = np.concatenate(errors[group])
        alone, both = (miou(totals[(group, k)], package.metadata.class_values) for k in (False, True))
        print(f"{group} (pooled): ground error median {np.median(pooled):.2f} m, mean {np.mean(pooled):.2f} m over "
              f"{pooled.size} ground px; mIoU DSM alone {alone:.1f} vs DSM + DTM {both:.1f} "
              f"(difference {both - alone:+.1f} points; target <= 3)")
        for key, label in ((False, "DSM alone"), (True, "DSM + DTM")):
            iou = per_class(totals[(group, key)])["iou"]
            print(f"  IoU per class, {label}: "
                  + ", ".join(f"{v}: {100 * iou[i]:.1f}" for v, i in zip(SCORED_CLASSES, indices)))


if __name__ == "__main__":
    main()
