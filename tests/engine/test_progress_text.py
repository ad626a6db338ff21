"""What a run tells the user while it works: the tile count it announces is the count it reaches,
and a resampled run says "resampling to the output grid" once, not once per strip."""
import re

import numpy as np

from modalseg.engine import GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, load_package, \
    run_segmentation
from tests.fixtures.onnx_models import make_pixelwise
from tests.fixtures.paths import REFERENCE_PACKAGE
from tests.fixtures.rasters import smooth_field, write_raster

GT = (500000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0)  # EPSG:32631, 1 m pixels


def _scene(folder, h: int, w: int):
    optical = (np.stack([smooth_field((h, w), s) for s in (1, 2, 3)]) * 255).astype(np.uint8)
    ndsm = (smooth_field((h, w), 4) * 20).astype(np.float32)
    return {"optical": LayerInput(str(write_raster(folder / "optical.tif", optical, 32631, GT))),
            "elevation": LayerInput(str(write_raster(folder / "ndsm.tif", ndsm, 32631, GT)))}


def _run(package, layers, out, **options):
    sources, _ = bind_modalities(package.metadata, layers)
    out.mkdir()
    logs, texts = [], []
    report = run_segmentation(sources, package, GridRequest(),
                              OutputPaths(classes=str(out / "c.tif"), robustness=str(out / "r.tif")),
                              RunOptions(**options), progress=lambda fraction, text: texts.append(text),
                              log=logs.append)
    return report, logs, [t for t in texts if t]


def test_the_tile_count_announced_is_the_count_reached(tmp_path):
    # Column blocks recompute a halo tile column at each block edge: more network runs than tiles.
    layers = _scene(tmp_path, 150, 230)
    report, logs, texts = _run(load_package(REFERENCE_PACKAGE), layers, tmp_path / "out", tile_size=48, overlap=16,
                               max_block_width=100)
    announced = int(re.search(r"; (\d+) tiles of", next(line for line in logs if "tiles of" in line)).group(1))
    counted = [tuple(map(int, re.fullmatch(r"tile (\d+)/(\d+)", t).groups())) for t in texts if t.startswith("tile ")]
    assert announced == report.tiles
    assert {total for _, total in counted} == {announced}
    assert counted[-1] == (announced, announced)
    assert [done for done, _ in counted] == sorted(done for done, _ in counted)


def test_resampling_to_the_output_grid_is_said_once(tmp_path):
    # The pixelwise model declares 2-8 m: the 1 m scene runs at 2 m and is resampled back in 256-row strips.
    package = load_package(make_pixelwise(tmp_path / "m", gsd={"native": 4.0, "min": 2.0, "max": 8.0}))
    _, _, texts = _run(package, _scene(tmp_path, 600, 60), tmp_path / "out", tile_size=32, overlap=8)
    assert texts.count("resampling to the output grid") == 1, texts
