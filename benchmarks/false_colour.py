"""False-colour infrared orthophotos: what an IRC image gives, declared and undeclared.

    python -m benchmarks.false_colour [--models PACKAGE ...]

The held-out optical area (``models.data.holdout``: the BD ORTHO orthophoto, labels from its LiDAR
cloud) has an RGB and an IRC (near-infrared, red, green) image of the same ground. Each bundled
package with an optical input is run on it through ``segment``'s engine path, optical alone and
with the area's nDSM, three ways: the RGB image; the IRC image left as *true colour* (its NIR read
as red: what an undeclared IRC layer gets); the IRC image declared *false-colour infrared*
(``engine.false_colour``: red and green where they belong, blue a copy of green). mIoU over
ground, building, low vegetation and tree (``models.held_out``).

First it prints, on the RGB orthophotos the bundled optical models train on (never the held-out
area), how closely blue follows green: the reason the estimate is a copy of green.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
from osgeo import gdal

from .common import REPO_ROOT, expose_plugin_package

SHARED = REPO_ROOT.parent / "shared" / "data"
TRAINING_RGB = (SHARED / "point_clouds" / "bdortho_pacasam_792000_6272000_left_rgb_south.tif",
                SHARED / "lidarhd_houses" / "lidarprod_870000_6618000_rgb.tif",
                SHARED / "lidarhd_fields" / "ebb_rgb.tif")
DEFAULT_MODELS = ("modalseg-optical-urban", "modalseg-sgma-urban", "modalseg-dual-urban")
WAYS = ("RGB image", "IRC as true colour", "IRC declared")


def green_blue_agreement(path: Path) -> str:
    """Correlation of green and blue, and blue's mean gap to green relative to its spread."""
    rgb = gdal.Open(str(path)).ReadAsArray()[:3].astype(np.float64).reshape(3, -1)
    correlation = np.corrcoef(rgb[1], rgb[2])[0, 1]
    gap = np.mean(np.abs(rgb[2] - rgb[1])) / np.std(rgb[2])
    return f"{path.name}: corr(green, blue) {correlation:.3f}, mean |blue - green| {gap:.2f} std of blue"


def layers_for(way: str, area, subset) -> Dict[str, object]:
    from modalseg.engine import LayerInput

    layers: Dict[str, object] = {}
    if "optical" in subset:
        if way == "RGB image":
            layers["optical"] = LayerInput(str(area.rasters["rgb"]))
        else:
            layers["optical"] = LayerInput(str(area.rasters["irc"]),
                                           optical_type="irc" if way == "IRC declared" else "rgb")
    if "ndsm" in subset:
        layers["elevation"] = LayerInput(str(area.rasters["ndsm"]), elevation_type="ndsm")
    return layers


def area_miou(package, area, layers, folder: Path) -> float:
    from modalseg.engine import GridRequest, OutputPaths, RunOptions, bind_modalities, run_segmentation
    from modalseg.engine.metrics import confusion_from_values
    from modalseg.models.held_out import figures

    sources, _ = bind_modalities(package.metadata, layers)
    out = folder / "classes.tif"
    run_segmentation(sources, package, GridRequest(), OutputPaths(str(out)), RunOptions(threads=1))
    predicted = gdal.Open(str(out)).ReadAsArray()
    labels = gdal.Open(str(area.label)).ReadAsArray()
    return figures(confusion_from_values(labels, predicted, package.metadata.class_values),
                   package.metadata.class_values)["miou"]


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS),
                        help="package folders or names of bundled packages")
    args = parser.parse_args(argv)
    expose_plugin_package()
    from modalseg.engine import load_package
    from modalseg.models.held_out import OPTICAL_GROUP, held_out_areas

    print("Blue against green on the RGB orthophotos the bundled optical models train on:")
    for path in TRAINING_RGB:
        print("  " + green_blue_agreement(path))
    print(f"\nHeld-out optical area, mIoU % (classes 1-4) through segment's engine path: {', '.join(WAYS)}")
    print(f"{'model':24s} {'inputs':14s} " + " ".join(f"{way:>20s}" for way in WAYS))
    for model in args.models:
        folder = Path(model) if Path(model).is_dir() else REPO_ROOT / "resources" / "models" / model
        package = load_package(str(folder))
        area = next(a for a in held_out_areas(package.metadata.classes, log=lambda text: None)
                    if a.group == OPTICAL_GROUP)
        for subset in (("optical",), ("optical", "ndsm")):
            with tempfile.TemporaryDirectory() as scratch:
                scores = [area_miou(package, area, layers_for(way, area, subset), Path(scratch)) for way in WAYS]
            print(f"{package.metadata.name:24s} {'+'.join(subset):14s} " + " ".join(f"{s:20.1f}" for s in scores))


if __name__ == "__main__":
    main()
