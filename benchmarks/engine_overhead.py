"""End-to-end engine time against the bare runtime on exactly the same tiles.

    python -m benchmarks.engine_overhead [--size 4096] [--batch 1] [--repeats 3] [--work /tmp/modalseg-bench]

Bare runs and engine runs alternate (``--repeats`` of each) because a shared 2-core machine drifts
by ±10 % between minutes; the ratio is taken on the fastest run of each (and on the medians).
Also printed: the time the engine spent inside the runtime's calls, then Mpx/s of the package's
default tile settings against tile 512 with 15 % overlap. Target: ratio <= 1.05 on CPU with
blending on.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .common import expose_plugin_package, make_scene, make_unet_package, sources_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modalseg-bench")
    args = parser.parse_args()
    expose_plugin_package()
    from modalseg.engine import GridRequest, OutputPaths, RunOptions, load_package, run_segmentation
    from modalseg.engine.binding import reference_order
    from modalseg.engine.grid import reference_grid
    from modalseg.engine.inputs import open_inputs
    from modalseg.engine.runtime import make_runner

    scene = make_scene(args.work, args.size)
    package = load_package(make_unet_package(args.work))
    sources, _ = sources_for(scene, package)
    megapixels = args.size * args.size / 1e6
    out = args.work / "out"
    out.mkdir(exist_ok=True)
    print(f"scene {args.size} x {args.size} px ({megapixels:.1f} Mpx): optical uint16 EPSG:32631 0.5 m + "
          f"DSM float32 EPSG:3857 0.7 m; model {package.metadata.description}")

    def engine_run(tile: int, overlap: int) -> float:
        options = RunOptions(tile_size=tile, overlap=overlap, batch_size=args.batch, blend="hann")
        start = time.perf_counter()
        report = run_segmentation(sources, package, GridRequest(),
                                  OutputPaths(str(out / "classes.tif"), str(out / "robustness.tif")), options)
        seconds = time.perf_counter() - start
        print(f"engine   tile {tile:4d} overlap {overlap:3d}: {report.tiles:4d} tiles, {seconds:7.2f} s, "
              f"{megapixels / seconds:6.3f} Mpx/s, {report.model_seconds:6.2f} s inside the runtime  "
              f"[{report.device}]", flush=True)
        return seconds

    # Bare runtime: the same tiles, prepared in memory beforehand, through the same session settings.
    tile, overlap = 512, round(0.15 * 512)
    grid = reference_grid(reference_order(sources), GridRequest())
    with open_inputs(sources, package.metadata, grid, out, print, tile_size=tile, overlap=overlap) as inputs:
        tiles = inputs.plan.all_tiles()
        pipeline = inputs.pipeline(batch_size=args.batch)
        batches = [pipeline.prepare(tiles[i:i + args.batch]).feeds for i in range(0, len(tiles), args.batch)]

    def bare_run() -> float:
        runner = make_runner(package, "onnx", "cpu")
        runner.run(batches[0])  # warm-up: the first run of a session is slower; the engine pays it, bare does not
        start = time.perf_counter()
        for feeds in batches:
            runner.run(feeds)
        seconds = time.perf_counter() - start
        print(f"bare     tile {tile:4d} overlap {overlap:3d}: {len(tiles):4d} tiles, {seconds:7.2f} s, "
              f"{megapixels / seconds:6.3f} Mpx/s  [onnxruntime session.run only]", flush=True)
        return seconds

    bare, engine = [], []
    for _ in range(args.repeats):
        bare.append(bare_run())
        engine.append(engine_run(tile, overlap))
    del batches
    print(f"ratio engine / bare runtime: {min(engine) / min(bare):.3f} fastest runs, "
          f"{statistics.median(engine) / statistics.median(bare):.3f} medians  (target <= 1.05)")
    meta = package.metadata
    default = engine_run(meta.tile_size, meta.overlap)
    print(f"default tiles ({meta.tile_size} px, overlap {meta.overlap} px) vs 512 px / 15 %: "
          f"{min(engine) / default:.2f}x the throughput")


if __name__ == "__main__":
    main()
