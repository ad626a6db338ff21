"""rasterize_point_cloud: agreement with the shared LiDAR HD rasters, speed and memory, and the
no-labels workflow's pay-off (the fine-tuned package against the starting one on held-out ground).

    python -m benchmarks.point_cloud [--work DIR] [--points 20000000] [--minutes 3] [--skip-finetune]

1. Labels and DSM of the two shared clouds against ``lidarhd_fields/`` and ``lidarhd_houses/``.
2. Points per second and peak memory (each run in a fresh process) for the largest shared cloud and
   for generated clouds of 2 M and ``--points`` points over the same 1 km^2 (density grows tenfold,
   the grid stays): bounded memory means the two generated runs peak alike.
3. The workflow on the real BD ORTHO tiles: LiDAR labels and nDSM of the north half train the
   package (``modalseg:finetune`` through Processing); both packages segment the south half, which
   training never saw, and ``modalseg:evaluate`` scores them against its LiDAR labels.
"""
from __future__ import annotations

import argparse
import json
import subprocess  # nosec B404 - the benchmark runs itself with an argument list
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT, expose_plugin_package, peak_rss_mb, shared_data_folder

SHARED_PAIRS = (("fields", "lidarhd_fields_ebb.laz", "lidarhd_fields/ebb"),
                ("houses", "lidarhd_houses_870000_6618000.laz", "lidarhd_houses/lidarprod_870000_6618000"))
PACASAM = "lidarhd_pacasam_792000_6272000_left.laz"
ORTHO = "bdortho_pacasam_792000_6272000_left_rgb_{}.tif"
START_PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban" / "modalseg-sgma-urban.onnx"
SIDE_M = 1000.0
CHUNK = 1_000_000


def _classes():
    from modalseg.engine.package import read_sidecar_metadata

    return read_sidecar_metadata(START_PACKAGE).classes


def _read(path: str) -> np.ndarray:
    from osgeo import gdal

    ds = gdal.Open(path)
    data = ds.ReadAsArray()
    ds = None
    return data


def agreement(shared: Path, work: Path) -> None:
    from modalseg.engine.point_cloud import RasterOutputs, rasterize_point_cloud

    print("1. agreement with the shared rasters (same grid, 0.5 m)")
    for name, cloud, stem in SHARED_PAIRS:
        out = work / f"agree_{name}"
        out.mkdir(parents=True, exist_ok=True)
        report = rasterize_point_cloud([str(shared / "point_clouds" / cloud)],
                                       RasterOutputs(labels=str(out / "labels.tif"), dsm=str(out / "dsm.tif")),
                                       _classes(), log=lambda text: None)
        labels, reference = _read(report.outputs["labels"]), _read(str(shared / f"{stem}_label.tif"))
        both = (labels != 0) & (reference != 0)
        dsm, reference_dsm = _read(report.outputs["dsm"]), _read(str(shared / f"{stem}_dsm.tif"))
        valid = (dsm != -9999) & (reference_dsm != -9999)
        print(f"   {name}: grid {labels.shape[1]} x {labels.shape[0]} = reference {reference.shape[1]} x "
              f"{reference.shape[0]}; labels agree on {100 * np.mean(labels[both] == reference[both]):.2f} % of "
              f"{both.sum():,} pixels labelled in both (target >= 98 %); DSM median |error| "
              f"{np.median(np.abs(dsm[valid] - reference_dsm[valid])):.4f} m over {valid.sum():,} px (target <= 0.05)")


def generate_cloud(path: Path, points: int, seed: int = 0) -> Path:
    """A 1 km^2 LAZ of ``points`` points in Lambert-93, written chunk by chunk: gently rolling ground
    (class 2) with 8 m buildings (6) on a block pattern and 12 m trees (5) scattered between them."""
    import laspy
    from osgeo import osr

    if path.exists():
        return path
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(2154)
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([700000.0, 6600000.0, 0.0])
    header.vlrs.append(laspy.vlrs.known.WktCoordinateSystemVlr(srs.ExportToWkt()))
    header.global_encoding.wkt = True
    rng = np.random.default_rng(seed)
    partial = path.with_name(path.name + ".partial")
    with laspy.open(str(partial), mode="w", header=header, do_compress=True) as writer:
        for start in range(0, points, CHUNK):
            n = min(CHUNK, points - start)
            x, y = rng.uniform(0, SIDE_M, n), rng.uniform(0, SIDE_M, n)
            ground = 100 + 5 * np.sin(x / 150.0) * np.cos(y / 200.0)
            building = ((x % 60) < 25) & ((y % 60) < 25)
            tree = ~building & (rng.random(n) < 0.15)
            chunk = laspy.ScaleAwarePointRecord.zeros(n, header=header)
            chunk.x, chunk.y = x + 700000.0, y + 6600000.0
            chunk.z = ground + np.where(building, 8.0, np.where(tree, rng.uniform(0, 12, n), 0.0))
            chunk.classification = np.where(building, 6, np.where(tree, 5, 2)).astype(np.uint8)
            writer.write_points(chunk)
    partial.rename(path)
    return path


def measure(cloud: str, out: str) -> None:
    """One rasterisation of every height output + labels in this process; prints a JSON line."""
    from modalseg.engine.point_cloud import RasterOutputs, rasterize_point_cloud

    Path(out).mkdir(parents=True, exist_ok=True)
    outputs = RasterOutputs(**{kind: f"{out}/{kind}.tif" for kind in ("dsm", "dtm", "ndsm", "labels")})
    started = time.perf_counter()
    report = rasterize_point_cloud([cloud], outputs, _classes(), log=lambda text: None)
    seconds = time.perf_counter() - started
    print(json.dumps({"points": report.points_read, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                      "grid": [report.grid.width, report.grid.height], "windows": report.windows}))


def _measured(cloud: Path, work: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.point_cloud", "--measure", str(cloud),  # nosec
                             "--work", str(work)], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def speed_and_memory(shared: Path, work: Path, points: int) -> None:
    print("2. speed and peak memory (dsm + dtm + ndsm + labels, each run in a fresh process)")
    runs = [("largest shared cloud (lidarhd_fields_ebb.laz)", shared / "point_clouds" / SHARED_PAIRS[0][1])]
    for count in sorted({2_000_000, points}):
        runs.append((f"generated {count / 1e6:g} M points over 1 km^2",
                     generate_cloud(work / f"generated_{count}.laz", count)))
    for label, cloud in runs:
        figures = _measured(cloud, work / "measure")
        print(f"   {label}: {figures['points']:,} points in {figures['seconds']:.1f} s = "
              f"{figures['points'] / figures['seconds']:,.0f} points/s; peak RSS {figures['peak_rss_mb']:.0f} MB; "
              f"grid {figures['grid'][0]} x {figures['grid'][1]} in {figures['windows']} window(s)")


def _processing():
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")  # Debian's Processing plugin
    from processing.core.Processing import Processing

    Processing.initialize()
    import modalseg

    plugin = modalseg.classFactory(None)
    plugin.initProcessing()
    import processing

    return app, plugin, processing


def finetune_pay_off(shared: Path, work: Path, minutes: float) -> None:
    print(f"3. no-labels workflow on the BD ORTHO tiles: fine-tune on the north half ({minutes:g} min budget), "
          "score on the south half")
    app, plugin, processing = _processing()
    clouds = shared / "point_clouds"
    halves = {}
    for half in ("north", "south"):
        ortho = str(clouds / ORTHO.format(half))
        rasters = processing.run("modalseg:rasterize_point_cloud", {
            "POINT_CLOUDS": [str(clouds / PACASAM)], "REFERENCE": ortho,
            "LABELS": str(work / f"{half}_labels.tif"), "NDSM": str(work / f"{half}_ndsm.tif")})
        halves[half] = {"ortho": ortho, **rasters}
    north, south = halves["north"], halves["south"]
    tuned = processing.run("modalseg:finetune", {
        "OPTICAL": north["ortho"], "ELEVATION": north["NDSM"], "ELEVATION_TYPE": 2, "LABEL_RASTER": north["LABELS"],
        "MODEL_FILE": str(START_PACKAGE), "EPOCHS": 200, "TIME_BUDGET": minutes, "CHIP_SIZE": 128,
        "OUTPUT": str(work / "finetuned")})
    scores = {}
    for name, package in (("starting", str(START_PACKAGE)), ("fine-tuned", tuned["MODEL_OUT"])):
        classes = processing.run("modalseg:segment", {
            "OPTICAL": south["ortho"], "ELEVATION": south["NDSM"], "ELEVATION_TYPE": 2, "MODEL_FILE": package,
            "OUTPUT": str(work / f"south_{name}.tif"), "ROBUSTNESS": None})
        scores[name] = processing.run("modalseg:evaluate", {
            "INPUT": classes["OUTPUT"], "REFERENCE": south["LABELS"], "IGNORE_VALUE": 0, "MODEL_FILE": package,
            "TABLE": "TEMPORARY_OUTPUT"})
    print(f"   fine-tuning: {tuned['EPOCHS_RUN']} epochs; validation mIoU {tuned['START_VAL_MIOU']:.3f} -> "
          f"{tuned['VAL_MIOU']:.3f}")
    for name, score in scores.items():
        print(f"   {name} package on the held-out south half: mIoU {100 * score['MIOU']:.1f} %, "
              f"OA {100 * score['OA']:.1f} %")
    plugin.unload()
    app.exitQgis()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modalseg-bench-point-cloud")
    parser.add_argument("--points", type=int, default=20_000_000, help="points of the large generated cloud")
    parser.add_argument("--minutes", type=float, default=3.0, help="fine-tuning time budget")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measured run
    args = parser.parse_args()
    expose_plugin_package()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.measure:
        measure(args.measure, str(args.work / "measure"))
        return
    shared = shared_data_folder()
    if not shared.is_dir():
        sys.exit(f"needs the shared sample data at {shared}")
    agreement(shared, args.work)
    speed_and_memory(shared, args.work, args.points)
    if not args.skip_finetune:
        finetune_pay_off(shared, args.work, args.minutes)


if __name__ == "__main__":
    main()
