"""The same real scene stored in the value ranges analysts have: do the class maps agree?

    python -m benchmarks.value_ranges [--model PACKAGE] [--scene houses|fields]

The optical tile of a shared LiDAR HD scene (uint8) is rewritten as uint16 12-bit (x 16), float32
reflectance (/ 255) and Sentinel-2-like int16 reflectance (x 10 000 / 255); each is segmented
optical-only and with the scene's nDSM, and the share of valid pixels whose class equals the uint8
run's is printed (target: >= 95 %), with the warning the engine gave.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
from osgeo import gdal

from .common import REPO_ROOT, expose_plugin_package

SHARED = REPO_ROOT.parent / "shared" / "data"
SCENES = {"houses": SHARED / "lidarhd_houses" / "lidarprod_870000_6618000",
          "fields": SHARED / "lidarhd_fields" / "ebb"}
# name -> (GDAL type, how the uint8 values are stored)
ENCODINGS: Dict[str, Tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "uint8": (gdal.GDT_Byte, lambda v: v),
    "uint16 12-bit (x16)": (gdal.GDT_UInt16, lambda v: v * 16.0),
    "float32 reflectance (/255)": (gdal.GDT_Float32, lambda v: v / 255.0),
    "int16 Sentinel-2 (x10000/255)": (gdal.GDT_Int16, lambda v: np.round(v * 10000.0 / 255.0)),
}


def write_encoded(source: Path, target: Path, gdal_type: int, encode: Callable[[np.ndarray], np.ndarray]) -> Path:
    """``source`` (uint8) with its values re-encoded; nodata pixels keep nodata 0 (0 encodes as 0)."""
    ds = gdal.Open(str(source))
    out = gdal.GetDriverByName("GTiff").Create(str(target), ds.RasterXSize, ds.RasterYSize, ds.RasterCount,
                                               gdal_type)
    out.SetGeoTransform(ds.GetGeoTransform())
    out.SetProjection(ds.GetProjection())
    for index in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(index)
        values = encode(band.ReadAsArray().astype(np.float64))
        if band.GetNoDataValue() is not None:
            out.GetRasterBand(index).SetNoDataValue(band.GetNoDataValue())
        out.GetRasterBand(index).WriteArray(values)
    out = None
    return target


def classify(package, layers, out: Path) -> Tuple[np.ndarray, List[str]]:
    from modalseg.engine import GridRequest, OutputPaths, bind_modalities, run_segmentation

    sources, _ = bind_modalities(package.metadata, layers)
    report = run_segmentation(sources, package, GridRequest(), OutputPaths(classes=str(out)))
    return gdal.Open(report.outputs["classes"]).ReadAsArray(), report.warnings


def agreement(a: np.ndarray, b: np.ndarray, nodata: int) -> float:
    valid = (a != nodata) & (b != nodata)
    return float(np.mean(a[valid] == b[valid])) if valid.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"))
    parser.add_argument("--scene", choices=sorted(SCENES), default="houses")
    args = parser.parse_args()
    expose_plugin_package()
    from modalseg.engine import LayerInput, load_package
    from modalseg.engine.writers import class_nodata_value

    stem = SCENES[args.scene]
    if not Path(f"{stem}_rgb.tif").exists():
        raise SystemExit(f"the shared scene '{stem}_rgb.tif' is absent")
    package = load_package(args.model)
    nodata = class_nodata_value(package.metadata.classes)
    print(f"model {package.metadata.name} {package.metadata.version}, scene {Path(stem).name}")
    print(f"{'optical stored as':32s} {'optical only':>13s} {'+ nDSM':>8s}  engine warning")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        baseline: Dict[bool, np.ndarray] = {}
        for index, (name, (gdal_type, encode)) in enumerate(ENCODINGS.items()):
            optical = write_encoded(Path(f"{stem}_rgb.tif"), work / f"optical_{index}.tif", gdal_type, encode)
            scores, warnings = [], []
            for with_ndsm in (False, True):
                layers = {"optical": LayerInput(str(optical))}
                if with_ndsm:
                    layers["elevation"] = LayerInput(f"{stem}_ndsm.tif")
                classes, warned = classify(package, layers, work / f"classes_{index}_{with_ndsm}.tif")
                warnings += [w for w in warned if "stretched" in w]
                baseline.setdefault(with_ndsm, classes)
                scores.append(100.0 * agreement(baseline[with_ndsm], classes, nodata))
            said = warnings[0] if warnings else "(none)"
            print(f"{name:32s} {scores[0]:12.1f}% {scores[1]:7.1f}%  {said[:160]}")


if __name__ == "__main__":
    main()
