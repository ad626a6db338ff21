"""fp32 against int8 for every bundled package, side by side in one run, on this CPU.

    python -m benchmarks.precision [--size 4096] [--repeats 5] [--e2e-repeats 3] [--threads 2]
                                   [--memory-sizes 2048 8192] [--no-held-out] [--work /tmp/modalseg-bench]

Per bundled package (its shipped ``<name>.int8.onnx``, or one made for this run with
``models.quantize``'s default calibration when the package ships none, said so):

* tiles/s of the bare runtime: the same 16 real-sized tiles (the generated scene, read and normalised
  by the engine) through each graph, ``--repeats`` runs alternated, median;
* end-to-end ``run_segmentation`` on the generated ``--size``² scene (optical uint16 + a height raster
  in another CRS and pixel size, bound as nDSM), ``--e2e-repeats`` runs alternated, median;
* mIoU on the held-out set (``models.held_out``: whole held-out tiles and the optical area through
  ``segment``), per subset and Last-1, and on the right-20 % validation strips of
  ``benchmarks.accuracy`` (secondary: those tiles' left parts were trained on);
* engine overhead with int8: the engine on a 2048² scene against the bare runtime on the same tiles;
* memory with int8: peak RSS of a 2048² and an 8192² run, each in a fresh process.

Two or three trainings may share the cores: runs alternate and medians are reported, and the CPU
time of this process (all its threads) is printed beside the wall time: it barely moves with other
jobs' load, so it separates the arithmetic int8 saves from the load. Re-run on a quiet machine for
wall-time figures to quote. The last lines are ``<package> int8: speed-up 2.4x, mIoU cost 0.3``
(end-to-end ratio, held-out mIoU cost averaged over the subsets).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from .common import REPO_ROOT, cpu_description, expose_plugin_package, make_scene, peak_rss_mb, \
    shared_data_folder
from .timing import alternate

BUNDLED = REPO_ROOT / "resources" / "models"
TILE_COUNT = 16
URBAN_KINDS = {"optical", "ndsm"}  # what the generated scene and models.quantize's default calibration hold


def scene_sources(scene: Dict[str, str], package) -> list:
    from modalseg.engine import LayerInput, bind_modalities

    # The scene's heights (100 +- 10 m) stand in for an nDSM: time, not accuracy, is measured on it.
    layers = {"optical": LayerInput(scene["optical"]), "elevation": LayerInput(scene["dsm"], elevation_type="ndsm")}
    return bind_modalities(package.metadata, layers)[0]


def prepared_batches(package, sources, batch: int, limit: int = 0) -> list:
    """The scene's tiles as the engine feeds them (read, normalised), in memory: the bare runtime's input."""
    from modalseg.engine import GridRequest
    from modalseg.engine.binding import reference_order
    from modalseg.engine.grid import reference_grid
    from modalseg.engine.inputs import open_inputs

    meta = package.metadata
    grid = reference_grid(reference_order(sources), GridRequest())
    with tempfile.TemporaryDirectory() as scratch, open_inputs(sources, meta, grid, Path(scratch), print) as inputs:
        pipeline = inputs.pipeline(batch_size=batch)
        tiles = inputs.plan.all_tiles()[:limit or None]
        return [pipeline.prepare(tiles[i:i + batch]).feeds for i in range(0, len(tiles), batch)]


def graphs(onnx_path: Path, work: Path, threads: int) -> Tuple[object, object, str]:
    """(fp32 package, int8 package, where the int8 graph comes from)."""
    from modalseg.engine.package import load_package, load_variant
    from modalseg.models.quantize import default_layer_sets, quantize_package

    package = load_package(onnx_path)
    fp32 = replace(package, variants={})
    if "int8" in package.variants:
        return fp32, load_variant(package, "int8"), "shipped with the package"
    copy = work / f"{package.metadata.name}-int8"
    if not copy.exists():
        quantize_package(package.onnx_path, default_layer_sets(shared_data_folder()), "int8", copy, threads=threads,
                         log=lambda text: None)
    return fp32, load_variant(load_package(copy), "int8"), "NOT shipped: made for this run (default calibration)"


def bare_runtime(package, batches: list, threads: int) -> Callable[[], None]:
    from modalseg.engine.runtime import make_runner

    runner = make_runner(package, "onnx", "cpu", threads)
    runner.run(batches[0])  # warm-up: the engine pays it, and so does not the bare loop

    def run() -> None:
        for feeds in batches:
            runner.run(feeds)

    return run


def segment_run(package, sources, out: Path, threads: int) -> Callable[[], None]:
    from modalseg.engine import GridRequest, OutputPaths, RunOptions, run_segmentation

    def run() -> None:
        run_segmentation(sources, package, GridRequest(),
                         OutputPaths(str(out / "classes.tif"), str(out / "robustness.tif")), RunOptions(threads=threads))

    return run


def tile_count(batches: list) -> int:
    return sum(next(iter(feeds.values())).shape[0] for feeds in batches)


def strips_miou(package, threads: int) -> Dict[str, float]:
    """Average mIoU over subsets per group of the accuracy benchmark's validation strips (percent)."""
    from . import accuracy

    areas, groups = accuracy.validation_areas(shared_data_folder())
    result = accuracy.evaluate(accuracy.OnnxPredictor(package, threads), areas, groups,
                               accuracy.package_cfg(package.metadata))
    return {group: 100 * r["average"] for group, r in result.items()}


def memory_child(onnx_path: str, size: int, work: Path, threads: int) -> None:
    """One int8 run in this fresh process; prints its peak RSS."""
    from modalseg.engine import GridRequest, OutputPaths, RunOptions, load_package, run_segmentation

    package = load_package(onnx_path)
    sources = scene_sources(make_scene(work, size), package)
    out = work / f"precision_memory_{size}"
    out.mkdir(exist_ok=True)
    report = run_segmentation(sources, package, GridRequest(),
                              OutputPaths(str(out / "classes.tif"), str(out / "robustness.tif")),
                              RunOptions(threads=threads, precision="int8"))
    print(f"peak RSS {peak_rss_mb():.1f} MB [{report.device}]", flush=True)


def memory_ratio(onnx_path: Path, sizes: List[int], work: Path, threads: int) -> Dict[int, float]:
    peaks = {}
    for size in sizes:
        make_scene(work, size)  # generated outside the measured process
        done = subprocess.run([sys.executable, "-m", "benchmarks.precision", "--memory-child", str(onnx_path),
                               str(size), "--work", str(work), "--threads", str(threads)],
                              capture_output=True, text=True, check=True, cwd=str(REPO_ROOT))
        line = [text for text in done.stdout.splitlines() if text.startswith("peak RSS")][-1]
        peaks[size] = float(line.split()[2])
    return peaks


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the end-to-end scene (px)")
    parser.add_argument("--repeats", type=int, default=5, help="alternated runs of the tiles/s measure")
    parser.add_argument("--e2e-repeats", type=int, default=3, help="alternated end-to-end runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[2048, 8192])
    parser.add_argument("--no-held-out", action="store_true", help="skip the accuracy figures")
    parser.add_argument("--models", type=Path, default=BUNDLED)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modalseg-bench")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    expose_plugin_package()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), args.work, args.threads)
        return
    from modalseg.engine.package import list_packages
    from modalseg.models.quantize import held_out_cost

    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    scene = make_scene(args.work, args.size)
    overhead_scene = make_scene(args.work, 2048)
    out = args.work / "precision_out"
    out.mkdir(exist_ok=True)
    print(f"{cpu_description()}; {args.threads} threads; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the start")
    summary = []
    for onnx_path, meta in list_packages(args.models):
        kinds = {m.kind for m in meta.modalities}
        if not kinds <= URBAN_KINDS:  # the scene and the calibration tiles are optical + nDSM
            print(f"\n== {meta.name}: skipped (takes {', '.join(sorted(kinds - URBAN_KINDS))}; this benchmark's "
                  "scene and calibration tiles are optical + nDSM)")
            continue
        fp32, int8, origin = graphs(onnx_path, args.work, args.threads)
        name = fp32.metadata.name
        print(f"\n== {name} {fp32.metadata.version}: int8 graph {origin}; "
              f"{fp32.onnx_path.stat().st_size / 1e6:.1f} MB fp32, {int8.onnx_path.stat().st_size / 1e6:.1f} MB int8; "
              f"{int8.metadata.extra['precision']['quantised']}", flush=True)
        sources = scene_sources(scene, fp32)
        batches = prepared_batches(fp32, sources, 4, TILE_COUNT)
        speed = alternate({"fp32": bare_runtime(fp32, batches, args.threads),
                           "int8": bare_runtime(int8, batches, args.threads)}, args.repeats)
        print(f"  bare runtime, {TILE_COUNT} tiles of {fp32.metadata.tile_size} px in batches of 4 (median of "
              f"{args.repeats} alternated): fp32 {TILE_COUNT / speed['fp32'][0]:.1f} tiles/s, int8 "
              f"{TILE_COUNT / speed['int8'][0]:.1f} tiles/s, {speed['fp32'][0] / speed['int8'][0]:.2f}x; CPU time "
              f"{speed['fp32'][1] / speed['int8'][1]:.2f}x", flush=True)
        e2e = alternate({"fp32": segment_run(fp32, sources, out, args.threads),
                         "int8": segment_run(int8, sources, out, args.threads)}, args.e2e_repeats)
        speed_up = e2e["fp32"][0] / e2e["int8"][0]
        print(f"  segment {args.size}² (median of {args.e2e_repeats} alternated): fp32 {e2e['fp32'][0]:.1f} s, "
              f"int8 {e2e['int8'][0]:.1f} s, {speed_up:.2f}x (target >= 2); CPU time fp32 {e2e['fp32'][1]:.1f} s, "
              f"int8 {e2e['int8'][1]:.1f} s, {e2e['fp32'][1] / e2e['int8'][1]:.2f}x", flush=True)
        overhead_sources = scene_sources(overhead_scene, int8)
        bare_batches = prepared_batches(int8, overhead_sources, 4)
        tiles = tile_count(bare_batches)
        times = alternate({"bare": bare_runtime(int8, bare_batches, args.threads),
                           "engine": segment_run(int8, overhead_sources, out, args.threads)}, args.e2e_repeats)
        del bare_batches
        print(f"  engine overhead with int8, 2048² (median of {args.e2e_repeats} alternated): engine "
              f"{times['engine'][0]:.1f} s, bare runtime {times['bare'][0]:.1f} s on the same {tiles} tiles, "
              f"{times['engine'][0] / times['bare'][0]:.3f}x (target <= 1.05); CPU time "
              f"{times['engine'][1] / times['bare'][1]:.3f}x", flush=True)
        if args.memory_sizes:
            peaks = memory_ratio(int8.onnx_path, args.memory_sizes, args.work, args.threads)
            low, high = min(peaks), max(peaks)
            print(f"  memory with int8: peak RSS " + ", ".join(f"{s}² {p:.0f} MB" for s, p in peaks.items()) +
                  f"; {high}² / {low}² {peaks[high] / peaks[low]:.2f}x", flush=True)
        cost = float("nan")
        if not args.no_held_out:
            held = held_out_cost(fp32, int8, shared_data_folder(), args.threads, log=lambda text: None)
            print(f"  held-out mIoU ({held['protocol'][:150]}...):")
            for subset, row in held["subsets"].items():
                print(f"    {subset:<14} fp32 {row['fp32_miou']}  int8 {row['miou']}  cost {row['miou_cost']}")
            print(f"    Last-1         fp32 {held['last1']['fp32_miou']}  int8 {held['last1']['miou']}  cost "
                  f"{held['last1']['miou_cost']}  (target <= 0.5; average cost target <= 1)")
            cost = held["average_cost"]
            strips = {p: strips_miou(g, args.threads) for p, g in (("fp32", fp32), ("int8", int8))}
            print("  validation strips (secondary; average mIoU over subsets): " + ", ".join(
                f"{group} fp32 {strips['fp32'][group]:.1f} int8 {strips['int8'][group]:.1f}" for group in strips["fp32"]))
        summary.append(f"{name} int8: speed-up {speed_up:.1f}x, mIoU cost {cost:.1f}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {load} at the end")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
