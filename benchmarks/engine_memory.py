"""Peak memory of one segmentation at growing raster sizes (same tiles, same model).

    python -m benchmarks.engine_memory [--sizes 2048 4096 8192] [--work /tmp/modalseg-bench]

Each size runs in a fresh process so peak RSS is its own. Target: 8192² within 1.25x of 2048²
(the accumulator holds a band of tile rows, never the raster).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import expose_plugin_package, make_scene, make_unet_package, peak_rss_mb, sources_for


def child(size: int, work: Path) -> None:
    expose_plugin_package()
    from modalseg.engine import GridRequest, OutputPaths, RunOptions, load_package, run_segmentation

    scene = make_scene(work, size)
    package = load_package(make_unet_package(work))
    sources, _ = sources_for(scene, package)
    out = work / f"memory_{size}"
    out.mkdir(exist_ok=True)
    before = peak_rss_mb()
    start = time.perf_counter()
    report = run_segmentation(sources, package, GridRequest(),
                              OutputPaths(str(out / "classes.tif"), str(out / "robustness.tif")),
                              RunOptions(tile_size=512, overlap=77, batch_size=1))
    print(f"{size:6d}² {report.tiles:5d} tiles {time.perf_counter() - start:8.1f} s  "
          f"peak RSS {peak_rss_mb():8.1f} MB (before the run {before:.1f} MB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modalseg-bench")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    peaks = {}
    for size in args.sizes:
        make_scene(args.work, size)  # generated outside the measured process
        result = subprocess.run([sys.executable, "-m", "benchmarks.engine_memory", "--child", str(size),
                                 "--work", str(args.work)], capture_output=True, text=True, check=True,
                                cwd=str(Path(__file__).resolve().parents[1]))
        line = [l for l in result.stdout.splitlines() if "peak RSS" in l][-1]
        print(line, flush=True)
        peaks[size] = float(line.split("peak RSS")[1].split("MB")[0])
    smallest, largest = min(peaks), max(peaks)
    print(f"peak RSS {largest}² / {smallest}²: {peaks[largest] / peaks[smallest]:.3f} (target <= 1.25)")


if __name__ == "__main__":
    main()
