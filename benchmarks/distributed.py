"""The Dask runner against the single-process run: the same job, its bits, its time and its memory.

    python -m benchmarks.distributed [--size 8192] [--quick] [--work /tmp/modalseg-bench-dask]

One generated job (RGB uint8 + nDSM float32, ``--size`` px square, 0.5 m) runs single-process, on a
LocalCluster of 1 worker and of 2 workers (started before the clock, like an existing cluster),
with the same blocks, batches and one runtime thread everywhere (clusters warmed: the engine and
ONNX Runtime imported on every worker before the clock), so every run must give the same
bits; each output of each run is compared with the single-process one (``identical`` or the number
of differing values). Printed: wall times and ratios; the time per block on one worker and the
scheduling overhead per block (1-worker tasks minus the single-process run, per block) apart from
the assembly of the parts into the outputs, which the client does serially; peak RSS per worker
at growing raster sizes; a model of a 10⁴-sheet job on N workers from those measured costs.

The network is a 1x1-convolution package (tests/fixtures/onnx_models ``pixelwise``): it makes the
engine's own work (reading, normalising, blending, writing) and Dask's overhead visible instead of
the network's compute, which is measured apart for the bundled modalseg-sgma-urban (per 512² tile,
one thread) and added to the model. This machine has 2 cores shared with training jobs this
session: times are noisy; ratios say more than seconds.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .common import REPO_ROOT, expose_plugin_package, peak_rss_mb

TILE, OVERLAP, ROWS_PER_BLOCK, BLOCK_WIDTH = 512, 32, 2, 1024
SHEETS, SHEET_PX = 10_000, 5000  # a national job: 10⁴ sheets of 5000² px (1 km² at 0.2 m)
PIXEL = 0.5


def make_scene(folder: Path, size: int) -> Dict[str, str]:
    """RGB + nDSM of ``size``² px, written in strips (bounded memory), cached in ``folder``."""
    from osgeo import gdal

    paths = {"optical": folder / f"rgb_{size}.tif", "ndsm": folder / f"ndsm_{size}.tif"}
    if all(p.exists() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()}
    folder.mkdir(parents=True, exist_ok=True)
    options = ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1"]
    rgb = gdal.GetDriverByName("GTiff").Create(str(paths["optical"]), size, size, 3, gdal.GDT_Byte, options)
    ndsm = gdal.GetDriverByName("GTiff").Create(str(paths["ndsm"]), size, size, 1, gdal.GDT_Float32, options)
    for ds in (rgb, ndsm):
        ds.SetGeoTransform((870000.0, PIXEL, 0.0, 6618000.0 + size * PIXEL, 0.0, -PIXEL))
        ds.SetProjection("EPSG:2154")
    cols = np.arange(size, dtype=np.float32)
    for y in range(0, size, 512):
        rows = np.arange(y, min(y + 512, size), dtype=np.float32)[:, None]
        for band in range(3):
            wave = np.sin(rows * (0.01 + 0.004 * band)) * np.cos(cols * (0.013 - 0.003 * band))
            rgb.GetRasterBand(band + 1).WriteArray(((wave + 1) * 127).astype(np.uint8), 0, y)
        ndsm.GetRasterBand(1).WriteArray(np.maximum(np.sin(rows * 0.02) * np.sin(cols * 0.017) * 15, 0), 0, y)
    rgb = ndsm = None  # closing flushes the files
    return {k: str(v) for k, v in paths.items()}


def _package(work: Path):
    import sys

    sys.path.insert(0, str(REPO_ROOT))  # tests.fixtures: the hand-built ONNX packages
    from modalseg.engine import load_package
    from tests.fixtures.onnx_models import make_pixelwise

    onnx = work / "pixelwise" / "pixelwise.onnx"
    return load_package(onnx if onnx.exists() else make_pixelwise(work / "pixelwise"))


def run_job(package, scene: Dict[str, str], out: Path, scheduler: Optional[str] = None):
    from modalseg.engine import GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, run_segmentation

    out.mkdir(parents=True, exist_ok=True)
    sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(scene["optical"]),
                                                    "elevation": LayerInput(scene["ndsm"], elevation_type="ndsm")})
    outputs = OutputPaths(str(out / "classes.tif"), str(out / "robustness.tif"), str(out / "probabilities.tif"))
    lines: List[str] = []
    started = time.perf_counter()
    run_segmentation(sources, package, GridRequest(), outputs,
                     RunOptions(tile_size=TILE, overlap=OVERLAP, batch_size=4, threads=1,
                                tile_rows_per_block=ROWS_PER_BLOCK, max_block_width=BLOCK_WIDTH, scheduler=scheduler),
                     log=lines.append)
    return time.perf_counter() - started, outputs, lines


def differences(a, b) -> str:
    from osgeo import gdal

    counts = []
    for (name, first), (_, second) in zip(a.named(), b.named()):
        x, y = gdal.Open(first), gdal.Open(second)
        differing = 0
        for row in range(0, x.RasterYSize, 1024):
            h = min(1024, x.RasterYSize - row)
            differing += int(np.count_nonzero(x.ReadAsArray(0, row, x.RasterXSize, h) !=
                                              y.ReadAsArray(0, row, y.RasterXSize, h)))
        counts.append(f"{name} {'identical' if differing == 0 else f'{differing} values differ'}")
    return ", ".join(counts)


def on_cluster(workers: int, job):
    """``job(address)`` on a fresh LocalCluster of ``workers`` processes; returns its result, the
    cluster's start-up seconds and the peak RSS (MB) of each worker."""
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        # a long-running cluster has imported the engine and the runtime already
        client.run(lambda: __import__("modalseg.engine.distributed") and __import__("onnxruntime"))
        startup = time.perf_counter() - started
        result = job(cluster.scheduler_address)
        peaks = sorted(client.run(peak_rss_mb).values())
    return result, startup, peaks


def network_seconds_per_tile() -> float:
    """One 512² tile through the bundled modalseg-sgma-urban graph, one thread (median of 3)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    path = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban" / "modalseg-sgma-urban.onnx"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for spec in session.get_inputs():
        shape = [1 if i == 0 else (TILE if i >= 2 else d) for i, d in enumerate(spec.shape)]
        feeds[spec.name] = np.random.default_rng(0).random([s if isinstance(s, int) else 1 for s in shape],
                                                           dtype=np.float32)
    session.run(None, feeds)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="side of the job in px")
    parser.add_argument("--quick", action="store_true", help="a 2048² job and memory at 1024² and 2048² (~1 min)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modalseg-bench-dask")
    args = parser.parse_args()
    expose_plugin_package()
    from modalseg.engine.tiling import plan_blocks, plan_tiles

    size = 2048 if args.quick else args.size
    memory_sizes = [size // 4, size // 2] if size >= 4096 else [size // 2]
    package = _package(args.work)
    scene = make_scene(args.work, size)
    plan = plan_tiles(size, size, TILE, OVERLAP, package.metadata.size_multiple)
    blocks = len(plan_blocks(plan, ROWS_PER_BLOCK, BLOCK_WIDTH))
    print(f"job: {size}² px ({size * size / 1e6:.0f} Mpx), {plan.count} tiles of {TILE}² (overlap {OVERLAP}), "
          f"{blocks} blocks of {ROWS_PER_BLOCK} tile rows x about {BLOCK_WIDTH} px; 1 runtime thread; "
          f"{os.cpu_count()} cores shared with other jobs (times are noisy)", flush=True)

    single, single_outputs, _ = run_job(package, scene, args.work / "single")
    print(f"single process   {single:8.1f} s   ({1000 * single / blocks:.0f} ms per block)", flush=True)
    times, assembly = {}, {}
    for workers in (1, 2):
        (seconds, outputs, lines), startup, peaks = on_cluster(
            workers, lambda address: run_job(package, scene, args.work / f"dask{workers}", address))
        times[workers] = seconds
        assembly[workers] = next(float(line.split("assembling their parts ")[1].split(" s")[0])
                                 for line in lines if "assembling their parts" in line)
        print(f"Dask {workers} worker(s) {seconds:8.1f} s   single / this {single / seconds:5.2f}   "
              f"(cluster start {startup:.1f} s, not counted; of it assembling the parts into the outputs "
              f"{assembly[workers]:.1f} s); peak RSS per worker {', '.join(f'{p:.0f}' for p in peaks)} MB; "
              f"{differences(single_outputs, outputs)}", flush=True)
    per_task = (times[1] - assembly[1]) / blocks  # one worker: tasks run one after another
    overhead = per_task - single / blocks
    assembly_per_mpx = assembly[1] / (size * size / 1e6)
    print(f"2 workers / 1 worker speed-up {times[1] / times[2]:.2f}; per block on 1 worker {per_task:.2f} s, "
          f"scheduling overhead {1000 * overhead:+.0f} ms per block against the single process (tasks only); "
          f"the serial assembly {assembly_per_mpx:.2f} s per Mpx (one output file per output)", flush=True)
    print("peak RSS per worker vs raster size (2 workers, fresh cluster each):", flush=True)
    for memory_size in memory_sizes:
        scene_m = make_scene(args.work, memory_size)
        _, _, peaks = on_cluster(2, lambda address: run_job(package, scene_m, args.work / f"mem{memory_size}", address))
        print(f"  {memory_size:6d}²: {', '.join(f'{p:.0f}' for p in peaks)} MB", flush=True)
    print(f"  {size:6d}²: see the 2-worker run above", flush=True)

    network = network_seconds_per_tile() * plan.count / blocks
    blocks_per_sheet = (SHEET_PX / size) ** 2 * blocks
    total_blocks = SHEETS * blocks_per_sheet
    serial = SHEETS * SHEET_PX ** 2 / 1e6 * assembly_per_mpx / 3600
    print(f"model of a {SHEETS:,}-sheet job ({SHEET_PX}² px per sheet = {blocks_per_sheet:.1f} blocks of this shape): "
          f"tasks of {per_task:.2f} s per block (this 1x1 network) or {per_task + network:.2f} s (+ the bundled "
          f"modalseg-sgma-urban network, {network:.1f} s per block measured on 1 thread), spread over N workers; "
          f"then one mosaic per output written by the client, serially: {serial:.1f} h at the measured rate",
          flush=True)
    for workers in (1, 8, 64, 512):
        light = total_blocks * per_task / workers / 3600
        real = total_blocks * (per_task + network) / workers / 3600
        print(f"  N={workers:4d}: tasks {light:8.2f} h (1x1 network), {real:8.2f} h (modalseg-sgma-urban); "
              f"+ {serial:.1f} h assembly", flush=True)


if __name__ == "__main__":
    main()
