"""Seams: blended tiles vs centre-crop stitching (Deepness style) vs no overlap, same model, same data.

    python -m benchmarks.seams [--model PACKAGE] [--optical RGB.tif --ndsm NDSM.tif]

Seam score = mean absolute class-probability jump between neighbouring pixels across tile boundaries
divided by the same statistic on the lines next to each boundary, inside the tiles (1.0 = seams
invisible; target <= 1.2 when blended), with 128 px tiles so the real sample holds many boundaries.
Agreement = share of pixels with the same class from tile 256 / overlap 64 and tile 384 / overlap 128
(target >= 99.5 %). Defaults: the bundled reference model on the real LiDAR HD fields sample.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import List, Tuple

import numpy as np
from osgeo import gdal

from .common import REPO_ROOT, expose_plugin_package, shared_data_folder

FIELDS = shared_data_folder() / "lidarhd_fields"


def _boundaries(starts: Tuple[int, ...], tile: int, overlap: int, length: int) -> List[int]:
    """Where the stitched result switches from one tile to the next (middle of each overlap)."""
    cuts = []
    for previous, start in zip(starts, starts[1:]):
        end_previous = previous + tile
        cuts.append((start + end_previous) // 2 if overlap else start)
    return [c for c in cuts if 0 < c < length]


def _line_jumps(probabilities: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Mean probability jump between line i and i+1 (columns for axis 2, rows for axis 1)."""
    jump = np.abs(np.diff(probabilities, axis=axis)).sum(0)
    both = (valid[:, 1:] & valid[:, :-1]) if axis == 2 else (valid[1:, :] & valid[:-1, :])
    totals = np.where(both, jump, 0).sum(axis=axis - 1)
    counts = both.sum(axis=axis - 1)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def seam_score(probabilities: np.ndarray, valid: np.ndarray, xs_cuts: List[int], ys_cuts: List[int],
               reach: int = 8) -> float:
    """Jump across each boundary line over the jumps of the lines within ``reach`` px of it (inside
    the tiles), averaged over boundaries; comparing locally keeps scene content out of the score."""
    ratios = []
    for cuts, axis in ((xs_cuts, 2), (ys_cuts, 1)):
        jumps = _line_jumps(probabilities, valid, axis)
        for c in cuts:
            i = c - 1  # jump between line c-1 and c
            near = [j for j in range(i - reach, i + reach + 1) if j != i and 0 <= j < len(jumps)]
            baseline = np.nanmean(jumps[near])
            if np.isfinite(jumps[i]) and baseline > 0:
                ratios.append(jumps[i] / baseline)
    return float(np.mean(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "tests" / "fixtures" / "models" / "reference"))
    parser.add_argument("--optical", default=str(FIELDS / "ebb_rgb.tif"))
    parser.add_argument("--ndsm", default=str(FIELDS / "ebb_ndsm.tif"))
    args = parser.parse_args()
    expose_plugin_package()
    from modalseg.engine import (GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, load_package,
                                 run_segmentation)
    from modalseg.engine.tiling import plan_tiles
    from modalseg.engine.writers import FLOAT_NODATA

    package = load_package(args.model)
    sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(args.optical),
                                                    "elevation": LayerInput(args.ndsm, elevation_type="ndsm")})
    work = Path(tempfile.mkdtemp(prefix="modalseg-seams-"))
    print(f"model {package.metadata.name}; data {args.optical} + {args.ndsm}")

    def run(tile: int, overlap: int, blend: str):
        out = work / f"{tile}_{overlap}_{blend}"
        out.mkdir(exist_ok=True)
        report = run_segmentation(sources, package, GridRequest(),
                                  OutputPaths(str(out / "c.tif"), probabilities=str(out / "p.tif")),
                                  RunOptions(tile_size=tile, overlap=overlap, blend=blend))
        probabilities = gdal.Open(str(out / "p.tif")).ReadAsArray()
        classes = gdal.Open(str(out / "c.tif")).ReadAsArray()
        valid = (probabilities != FLOAT_NODATA).all(0)
        plan = plan_tiles(report.grid.width, report.grid.height, tile, overlap, package.metadata.size_multiple)
        xs_cuts = _boundaries(plan.xs, plan.tile_width, overlap, report.grid.width)
        ys_cuts = _boundaries(plan.ys, plan.tile_height, overlap, report.grid.height)
        return probabilities, classes, valid, seam_score(probabilities, valid, xs_cuts, ys_cuts)

    print(f"{'stitching':34s} seam score (1.0 = invisible; target <= 1.2 blended)")
    for label, tile, overlap, blend in [("blended (hann), tile 128 / 32", 128, 32, "hann"),
                                        ("blended (linear), tile 128 / 32", 128, 32, "linear"),
                                        ("centre crop, tile 128 / 32", 128, 32, "crop"),
                                        ("no overlap, tile 128", 128, 0, "none")]:
        print(f"{label:34s} {run(tile, overlap, blend)[3]:.3f}")
    _, a, valid_a, _ = run(256, 64, "hann")
    _, b, valid_b, _ = run(384, 128, "hann")
    both = valid_a & valid_b
    print(f"agreement tile 256/64 vs 384/128 (blended): {100 * np.mean(a[both] == b[both]):.3f} % of "
          f"{int(both.sum())} px (target >= 99.5 %)")
    _, a, _, _ = run(256, 64, "crop")
    _, b, _, _ = run(384, 128, "crop")
    print(f"agreement tile 256/64 vs 384/128 (centre crop): {100 * np.mean(a[both] == b[both]):.3f} %")


if __name__ == "__main__":
    main()
