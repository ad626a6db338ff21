"""False-colour infrared orthophotos: what an IRC image gives, declared and undeclared.

    python -m benchmarks.false_colour [--models PACKAGE ...] [--write]

The held-out optical area (``models.data.holdout``: the BD ORTHO orthophoto, labels from its LiDAR
cloud) has an RGB and an IRC (near-infrared, red, green) image of the same ground. Each bundled
package with an optical input is run on it through ``segment``'s engine path, optical alone and
with the area's nDSM, three ways: the RGB image; the IRC image left as *true colour* (its NIR read
as red: what an undeclared IRC layer gets); the IRC image declared *false-colour infrared*
(``engine.false_colour``: red and green where they belong, blue a copy of green). mIoU over
ground, building, low vegetation and tree (``models.held_out``). ``--write`` stores the figures as
``metrics.false_colour`` in each package: ``segment`` logs (and warns on) the declared IRC figure of
the subset in use when its optical layer is a declared false-colour one.

First it prints, on the RGB orthophotos the bundled optical models train on (never the held-out
area), how closely blue follows green: the reason the estimate is a copy of green.
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
TRAINING_RGB = (SHARED / "point_clouds" / "bdortho_pacasam_792000_6272000_left_rgb_south.tif",
                SHARED / "lidarhd_houses" / "lidarprod_870000_6618000_rgb.tif",
                SHARED / "lidarhd_fields" / "ebb_rgb.tif")
DEFAULT_MODELS = ("modalseg-optical-urban", "modalseg-sgma-urban", "modalseg-dual-urban")
# how the optical modality is fed: (raster of the area, optical type it is declared as)
WAYS = {"RGB image": ("rgb", "rgb"), "IRC as true colour": ("irc", "rgb"), "IRC declared": ("irc", "irc")}
PROTOCOL = ("the held-out BD ORTHO optical area (models/data/holdout.py: never trained on nor selected on; labels "
            "from its LiDAR cloud, ground and building), its IRC image declared false-colour infrared (red and "
            "green fed as red and green, blue a copy of green) through segment; mIoU over classes 1-4; "
            "true_colour: the area's RGB image, undeclared: the IRC image fed as RGB (NIR read as red)")


def green_blue_agreement(path: Path) -> str:
    """Correlation of green and blue, and blue's mean gap to green relative to its spread."""
    rgb = gdal.Open(str(path)).ReadAsArray()[:3].astype(np.float64).reshape(3, -1)
    correlation = np.corrcoef(rgb[1], rgb[2])[0, 1]
    gap = np.mean(np.abs(rgb[2] - rgb[1])) / np.std(rgb[2])
    return f"{path.name}: corr(green, blue) {correlation:.3f}, mean |blue - green| {gap:.2f} std of blue"


def area_figures(package, area, subset, optical: Tuple[str, str], folder: Path) -> Dict[str, object]:
    """``models.held_out.figures`` of ``segment`` on the area from ``subset``, the optical layer given as ``optical``."""
    from modalseg.engine.metrics import confusion_from_values
    from modalseg.models.held_out import figures, segment_area

    predicted = segment_area(package, area, subset, folder, optical=optical)
    labels = gdal.Open(str(area.label)).ReadAsArray()
    values = package.metadata.class_values
    return figures(confusion_from_values(labels, predicted, values), values)


def measure(package, area, folder: Path) -> Dict[str, object]:
    """``metrics.false_colour`` of ``package``: the declared IRC image's figures per optical subset,
    with the RGB image's and the undeclared IRC image's mIoU beside them."""
    table: Dict[str, Dict[str, object]] = {way: {} for way in WAYS}
    for subset in (("optical",), ("optical", "ndsm")):
        for way, optical in WAYS.items():
            table[way]["+".join(subset)] = area_figures(package, area, subset, optical, folder)
    return {"protocol": PROTOCOL, "subsets": table["IRC declared"],
            "true_colour": {k: f["miou"] for k, f in table["RGB image"].items()},
            "undeclared": {k: f["miou"] for k, f in table["IRC as true colour"].items()}}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS),
                        help="package folders or names of bundled packages")
    parser.add_argument("--write", action="store_true",
                        help="store the figures as metrics.false_colour in each package (what segment logs and "
                             "warns on for a declared false-colour layer) and its card")
    args = parser.parse_args(argv)
    expose_plugin_package()
    from modalseg.engine import load_package
    from modalseg.models.held_out import OPTICAL_GROUP, held_out_areas, store_and_report

    print("Blue against green on the RGB orthophotos the bundled optical models train on:")
    for path in TRAINING_RGB:
        print("  " + green_blue_agreement(path))
    print(f"\nHeld-out optical area, mIoU % (classes 1-4) through segment: {', '.join(WAYS)}")
    print(f"{'model':24s} {'inputs':14s} " + " ".join(f"{way:>20s}" for way in WAYS))
    for model in args.models:
        folder = Path(model) if Path(model).is_dir() else REPO_ROOT / "resources" / "models" / model
        package = load_package(str(folder))
        area = next(a for a in held_out_areas(package.metadata.classes, log=lambda text: None)
                    if a.group == OPTICAL_GROUP)
        with tempfile.TemporaryDirectory() as scratch:
            figures = measure(package, area, Path(scratch))
        for subset, declared in figures["subsets"].items():
            scores = (figures["true_colour"][subset], figures["undeclared"][subset], declared["miou"])
            print(f"{package.metadata.name:24s} {subset:14s} " + " ".join(f"{s:20.1f}" for s in scores))
        if args.write:
            store_and_report(package, "false_colour", figures)


if __name__ == "__main__":
    main()
