"""End-to-end engine behaviour with hand-built ONNX models whose outputs are known exactly."""
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import (Cancelled, EngineError, GridRequest, LayerInput, OutputPaths, RunOptions,
                             bind_modalities, load_package, run_segmentation)
from modalseg.engine.writers import FLOAT_NODATA
from tests.fixtures.onnx_models import make_constant, make_pixelwise
from tests.fixtures.paths import REFERENCE_PACKAGE
from tests.fixtures.rasters import read, smooth_field, write_raster, wkt_of

GT = (500000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0)  # EPSG:32631, 1 m pixels


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"pixelwise": load_package(make_pixelwise(folder / "pixelwise")),
            "constant": load_package(make_constant(folder / "constant"))}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    h, w = 150, 230
    optical = np.stack([smooth_field((h, w), s) for s in (1, 2, 3)]) * 255
    ndsm = np.maximum(smooth_field((h, w), 4) * 24 - 4, 0)  # 0 m on the ground, as nDSMs are (Auto)
    return {
        "optical": write_raster(folder / "optical.tif", optical.astype(np.uint8), 32631, GT),
        "ndsm": write_raster(folder / "ndsm.tif", ndsm.astype(np.float32), 32631, GT),
        "optical_array": optical.astype(np.uint8), "ndsm_array": ndsm.astype(np.float32), "folder": folder,
    }


def _run(package, layers, out: Path, grid=GridRequest(), **options):
    sources, _ = bind_modalities(package.metadata, layers)
    paths = OutputPaths(classes=str(out / "classes.tif"), robustness=str(out / "robustness.tif"),
                        probabilities=str(out / "probabilities.tif"), confidence=str(out / "confidence.tif"))
    out.mkdir(parents=True, exist_ok=True)
    report = run_segmentation(sources, package, grid, paths, RunOptions(**options))
    return report, {k: read(Path(v)) for k, v in report.outputs.items()}


def _expected_pixelwise(optical: np.ndarray, ndsm: np.ndarray, gain: float = 4.0):
    logits = gain * optical.astype(np.float64) / 255.0
    probabilities = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    shares = np.exp(np.stack([optical.astype(np.float64).mean(0) / 255.0, ndsm.astype(np.float64) / 20.0]))
    return probabilities, shares / shares.sum(0)


def test_constant_model_gives_constant_mosaic(models, scene, tmp_path):
    report, out = _run(models["constant"], {"optical": LayerInput(str(scene["optical"])),
                                            "elevation": LayerInput(str(scene["ndsm"]))}, tmp_path)
    classes, gt, wkt, nodata = out["classes"]
    assert classes.shape == (150, 230)
    assert np.all(classes == 2)  # argmax of (0.1, 2.0, 0.5) is the second class, value 2
    assert gt == pytest.approx(GT)
    assert gdal.Open(str(tmp_path / "classes.tif")).GetSpatialRef().GetAuthorityCode(None) == "32631"
    assert nodata == 0
    assert report.class_counts == {1: 0, 2: 150 * 230, 3: 0}
    assert 0 < report.model_seconds < report.seconds
    confidence = out["confidence"][0]
    expected = np.exp(2.0) / (np.exp(0.1) + np.exp(2.0) + np.exp(0.5))
    assert np.allclose(confidence, expected, atol=1e-5)


@pytest.mark.parametrize("tile,overlap,blend", [(64, 16, "hann"), (48, 8, "linear"), (32, 0, "none")])
def test_pixelwise_model_is_reproduced_exactly_across_tile_borders(models, scene, tmp_path, tile, overlap, blend):
    _, out = _run(models["pixelwise"], {"optical": LayerInput(str(scene["optical"])),
                                        "elevation": LayerInput(str(scene["ndsm"]))}, tmp_path,
                  tile_size=tile, overlap=overlap, blend=blend, batch_size=3)
    probabilities, robustness = _expected_pixelwise(scene["optical_array"], scene["ndsm_array"])
    assert np.abs(out["probabilities"][0] - probabilities).max() < 1e-5
    assert np.abs(out["robustness"][0] - robustness).max() < 1e-5
    assert np.array_equal(out["classes"][0], probabilities.argmax(0) + 1)
    assert np.allclose(out["robustness"][0].sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("rows_per_block,block_width,cache_bytes", [(2, 0, None), (0, 100, None), (2, 64, None),
                                                                   (0, 100, 200_000)],
                         ids=["row-blocks", "column-blocks", "2d-blocks", "column-blocks-tiny-gdal-cache"])
def test_blocks_give_the_same_result_as_one_pass(scene, tmp_path, rows_per_block, block_width, cache_bytes):
    # A convolutional model: tiles disagree near their edges, so a block that missed a halo tile
    # (or blended a neighbour's) would change the blended values. With a tiny GDAL cache the output
    # blocks that two column blocks share are flushed half-written and completed later.
    package = load_package(REFERENCE_PACKAGE)
    layers = {"optical": LayerInput(str(scene["optical"])), "elevation": LayerInput(str(scene["ndsm"]))}
    _, whole = _run(package, layers, tmp_path / "whole", tile_size=48, overlap=16, max_block_width=0)
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(cache_bytes or previous)
    try:
        report, blocks = _run(package, layers, tmp_path / "blocks", tile_size=48, overlap=16,
                              tile_rows_per_block=rows_per_block, max_block_width=block_width)
    finally:
        gdal.SetCacheMax(previous)
    _, no_blend = _run(package, layers, tmp_path / "none", tile_size=48, overlap=16, blend="none")
    assert np.abs(whole["probabilities"][0] - no_blend["probabilities"][0]).max() > 1e-3  # tiles do disagree
    for name in ("probabilities", "robustness", "classes"):
        assert np.array_equal(whole[name][0], blocks[name][0], equal_nan=name != "classes"), name
    assert report.class_counts == {v: int((whole["classes"][0] == v).sum()) for v in report.class_counts}


def test_absent_optional_modality_gets_all_the_robustness(models, scene, tmp_path):
    report, out = _run(models["pixelwise"], {"optical": LayerInput(str(scene["optical"]))}, tmp_path)
    assert report.modalities == ["optical"]
    robustness = out["robustness"][0]
    assert robustness.shape == (150, 230)  # one band: the modality used
    assert np.allclose(robustness, 1.0)
    ds = gdal.Open(str(tmp_path / "robustness.tif"))
    assert ds.GetRasterBand(1).GetDescription() == "optical"


def test_other_crs_and_resolution_match_prewarped_input(models, scene, tmp_path):
    # The nDSM in Web Mercator at ~2 m: the engine must warp it exactly as gdal.Warp would.
    mercator = tmp_path / "ndsm_3857.tif"
    gdal.Warp(str(mercator), str(scene["ndsm"]), dstSRS="EPSG:3857", xRes=2.0, yRes=2.0, resampleAlg="bilinear")
    prewarped = tmp_path / "ndsm_prewarped.tif"
    gdal.Warp(str(prewarped), str(mercator), dstSRS=wkt_of(32631), outputBounds=(500000, 5999850, 500230, 6000000),
              width=230, height=150, resampleAlg="bilinear", outputType=gdal.GDT_Float32, dstNodata=float("nan"))
    optical = LayerInput(str(scene["optical"]))
    _, direct = _run(models["pixelwise"], {"optical": optical, "elevation": LayerInput(str(mercator))},
                     tmp_path / "a")
    _, reference = _run(models["pixelwise"], {"optical": optical, "elevation": LayerInput(str(prewarped))},
                        tmp_path / "b")
    a, b = direct["robustness"][0], reference["robustness"][0]
    assert np.array_equal(a == FLOAT_NODATA, b == FLOAT_NODATA)
    valid = a != FLOAT_NODATA
    assert valid.mean() > 0.9
    assert np.abs(a[valid] - b[valid]).max() < 1e-5


def test_nodata_in_any_modality_is_nodata_in_every_output(models, tmp_path):
    h, w = 70, 90
    optical = (np.stack([smooth_field((h, w), s) for s in (5, 6, 7)]) * 60000).astype(np.uint16)
    optical[:, 10:20, 10:30] = 65535  # optical nodata
    ndsm = np.maximum(smooth_field((h, w), 8) * 24 - 4, 0).astype(np.float32)  # 0 m on the ground
    ndsm[40:50, 50:60] = np.nan
    ndsm[0:5, :] = -9999  # declared nodata
    opt_path = write_raster(tmp_path / "o.tif", optical, 32631, GT, nodata=65535)
    ndsm_path = write_raster(tmp_path / "n.tif", ndsm, 32631, GT, nodata=-9999)
    report, out = _run(models["pixelwise"], {"optical": LayerInput(str(opt_path)),
                                             "elevation": LayerInput(str(ndsm_path))}, tmp_path / "out")
    classes = out["classes"][0]
    invalid = np.zeros((h, w), bool)
    invalid[10:20, 10:30] = invalid[40:50, 50:60] = invalid[0:5, :] = True
    assert np.all(classes[invalid] == 0)
    assert np.all(classes[~invalid] > 0)
    assert np.all(out["robustness"][0][:, invalid] == FLOAT_NODATA)  # a finite nodata, never NaN
    assert np.isfinite(out["robustness"][0]).all()
    assert np.allclose(out["robustness"][0][:, ~invalid].sum(axis=0), 1.0, atol=1e-5)
    # uint16 values far above the recipe's 0..255 are stretched onto it, said in a warning: the
    # 1st-99th percentiles of the valid pixels (all bands together) become 0 and 255.
    assert any(w.startswith(f"the optical layer '{opt_path}' holds values") and "stretched" in w
               for w in report.warnings)
    low, high = np.percentile(optical[:, optical[0] != 65535].astype(np.float64), [1, 99])
    stretched = np.clip((optical - low) * 255.0 / (high - low), 0, 255)
    probabilities, _ = _expected_pixelwise(stretched, np.where(invalid, 0, ndsm))
    assert np.abs(out["probabilities"][0][:, ~invalid] - probabilities[:, ~invalid]).max() < 1e-5


def test_raster_smaller_than_a_tile_is_padded_and_masked(models, tmp_path):
    optical = (np.stack([smooth_field((13, 21), s) for s in (1, 2, 3)]) * 255).astype(np.uint8)
    path = write_raster(tmp_path / "small.tif", optical, 32631, GT)
    _, out = _run(models["pixelwise"], {"optical": LayerInput(str(path))}, tmp_path / "out")
    probabilities, _ = _expected_pixelwise(optical, np.zeros((13, 21)))
    assert out["classes"][0].shape == (13, 21)
    assert np.abs(out["probabilities"][0] - probabilities).max() < 1e-5


def test_cancel_leaves_no_output(models, scene, tmp_path):
    sources, _ = bind_modalities(models["pixelwise"].metadata, {"optical": LayerInput(str(scene["optical"]))})
    calls = []

    def cancel_after_two_batches():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run_segmentation(sources, models["pixelwise"], GridRequest(),
                         OutputPaths(str(tmp_path / "c.tif"), str(tmp_path / "r.tif")),
                         RunOptions(tile_size=32, overlap=8, batch_size=1), is_cancelled=cancel_after_two_batches)
    assert list(tmp_path.iterdir()) == []


def test_runtime_failure_leaves_no_output_and_says_why(models, scene, tmp_path):
    # Reshape to a fixed 8x8 makes the graph fail at run time on 32x32 tiles.
    import onnx
    from onnx import helper, numpy_helper
    path = Path(models["pixelwise"].onnx_path)
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "fixed_shape"))
    node = next(n for n in model.graph.node if n.output[0] == "logits")
    node.output[0] = "raw_logits"
    model.graph.node.append(helper.make_node("Reshape", ["raw_logits", "fixed_shape"], ["logits"]))
    broken = tmp_path / "broken" / "broken.onnx"
    broken.parent.mkdir()
    onnx.save(model, str(broken))
    package = load_package(broken)
    out = tmp_path / "out"
    out.mkdir()
    sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(str(scene["optical"]))})
    with pytest.raises(EngineError, match="the model failed"):
        run_segmentation(sources, package, GridRequest(), OutputPaths(str(out / "c.tif"), str(out / "r.tif")),
                         RunOptions(tile_size=32, overlap=8))
    assert list(out.iterdir()) == []


def test_layers_that_do_not_overlap_are_rejected(models, scene, tmp_path):
    far = write_raster(tmp_path / "far.tif", np.ones((1, 20, 20), np.float32), 32631,
                       (600000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0))
    sources, _ = bind_modalities(models["pixelwise"].metadata, {"optical": LayerInput(str(scene["optical"])),
                                                                "elevation": LayerInput(str(far))})
    with pytest.raises(EngineError, match="does not overlap"):
        run_segmentation(sources, models["pixelwise"], GridRequest(), OutputPaths(str(tmp_path / "c.tif")))
    assert not (tmp_path / "c.tif").exists()


def test_layer_that_is_nodata_everywhere_is_rejected(models, scene, tmp_path):
    empty = write_raster(tmp_path / "empty.tif", np.full((1, 150, 230), -9999, np.float32), 32631, GT, nodata=-9999)
    sources, _ = bind_modalities(models["pixelwise"].metadata, {"optical": LayerInput(str(scene["optical"])),
                                                                "elevation": LayerInput(str(empty))})
    with pytest.raises(EngineError, match="nodata everywhere"):
        run_segmentation(sources, models["pixelwise"], GridRequest(), OutputPaths(str(tmp_path / "c.tif")))
    assert not (tmp_path / "c.tif").exists()


def test_output_extent_and_resolution_request(models, scene, tmp_path):
    grid = GridRequest(extent=(500020.0, 5999900.0, 500120.0, 5999980.0), resolution=2.0)
    report, out = _run(models["pixelwise"], {"optical": LayerInput(str(scene["optical"]))}, tmp_path, grid=grid)
    classes, gt, _, _ = out["classes"]
    assert classes.shape == (40, 50)
    assert gt == pytest.approx((500020.0, 2.0, 0.0, 5999980.0, 0.0, -2.0))
    assert report.grid.width == 50


def test_minimum_mapping_unit_removes_small_regions(models, tmp_path):
    optical = np.zeros((3, 40, 40), np.uint8)
    optical[0] = 200  # red everywhere ...
    optical[1, 10:12, 10:12] = 255  # ... but a 2x2 green speck
    optical[1, 20:35, 20:35] = 255  # and a large green square
    path = write_raster(tmp_path / "o.tif", optical, 32631, GT)
    _, raw = _run(models["pixelwise"], {"optical": LayerInput(str(path))}, tmp_path / "raw")
    _, clean = _run(models["pixelwise"], {"optical": LayerInput(str(path))}, tmp_path / "clean", min_mapping_unit=10)
    assert np.all(raw["classes"][0][10:12, 10:12] == 2)
    assert np.all(clean["classes"][0][10:12, 10:12] == 1)
    assert np.all(clean["classes"][0][20:35, 20:35] == 2)


def test_majority_smoothing_removes_specks_and_keeps_regions(models, tmp_path):
    optical = np.zeros((3, 40, 40), np.uint8)
    optical[0] = 200  # red everywhere ...
    optical[1, 10, 10] = 255  # ... one green pixel
    optical[1, 20:35, 20:35] = 255  # and a large green square
    path = write_raster(tmp_path / "o.tif", optical, 32631, GT)
    layers = {"optical": LayerInput(str(path))}
    _, raw = _run(models["pixelwise"], layers, tmp_path / "raw")
    report, smooth = _run(models["pixelwise"], layers, tmp_path / "smooth", smoothing_radius=2)
    raw_classes, classes = raw["classes"][0], smooth["classes"][0]
    assert raw_classes[10, 10] == 2 and classes[10, 10] == 1
    # the square survives: its interior and straight edges hold a majority; only corners round off
    assert np.all(classes[21:34, 21:34] == 2) and classes[20, 27] == 2
    assert classes[20, 20] == 1
    assert (classes == 2).sum() < (raw_classes == 2).sum()
    assert report.class_counts[2] == (classes == 2).sum()


def test_grid_outside_the_model_gsd_range_runs_resampled_and_comes_back(scene, tmp_path):
    # The pixelwise model declares 2-8 m; the 1 m scene runs on a 2 m grid and is resampled back.
    package = load_package(make_pixelwise(tmp_path / "m", gsd={"native": 4.0, "min": 2.0, "max": 8.0}))
    logs = []
    sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(str(scene["optical"])),
                                                    "elevation": LayerInput(str(scene["ndsm"]))})
    out = tmp_path / "out"
    out.mkdir()
    report = run_segmentation(sources, package, GridRequest(),
                              OutputPaths(str(out / "c.tif"), str(out / "r.tif"), str(out / "p.tif")),
                              RunOptions(tile_size=32, overlap=8), log=logs.append)
    assert any("115 x 75 px grid at 2 m" in line for line in logs)
    classes, gt, _, _ = read(out / "c.tif")
    assert classes.shape == (150, 230) and gt == pytest.approx(GT)
    probabilities = read(out / "p.tif")[0]
    expected, _ = _expected_pixelwise(scene["optical_array"], scene["ndsm_array"])
    # Smooth inputs: the 2 m round trip stays close to the 1 m truth, and sums to 1.
    valid = probabilities[0] != FLOAT_NODATA
    assert np.allclose(probabilities[:, valid].sum(axis=0), 1.0, atol=1e-5)
    assert np.mean(np.abs(probabilities - expected)[:, valid]) < 0.02
    assert np.mean(classes == expected.argmax(0) + 1) > 0.95
    assert np.allclose(read(out / "r.tif")[0].sum(0), 1.0, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["c.tif", "c.tif.aux.xml", "p.tif", "r.tif"]
    assert report.tiles == 5 * 3  # 115 x 75 px in 32 px tiles with 24 px stride


def test_centre_crop_stitching_covers_every_pixel(models, scene, tmp_path):
    _, out = _run(models["pixelwise"], {"optical": LayerInput(str(scene["optical"]))}, tmp_path,
                  tile_size=48, overlap=16, blend="crop")
    probabilities, _ = _expected_pixelwise(scene["optical_array"], np.zeros((150, 230)))
    assert np.abs(out["probabilities"][0] - probabilities).max() < 1e-5


REFERENCE = REFERENCE_PACKAGE.parent


@pytest.mark.skipif(not (REFERENCE / "reference.onnx").exists(), reason="reference package not built")
def test_torch_and_onnx_runtimes_agree_on_real_data(tmp_path, shared_data):
    houses = shared_data / "lidarhd_houses"
    package = load_package(REFERENCE)
    layers = {"optical": LayerInput(str(houses / "lidarprod_870000_6618000_rgb.tif")),
              "elevation": LayerInput(str(houses / "lidarprod_870000_6618000_ndsm.tif"))}
    _, onnx_out = _run(package, layers, tmp_path / "onnx", runtime="onnx")
    from modalseg.models.networks.registry import load_network

    _, torch_out = _run(package, layers, tmp_path / "torch", runtime="torch", network_loader=load_network)
    assert np.max(np.abs(onnx_out["probabilities"][0] - torch_out["probabilities"][0])) < 1e-3
    assert np.mean(onnx_out["classes"][0] == torch_out["classes"][0]) > 0.999


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_reader_and_writer_threads_run_below_the_runtime_priority():
    """Helper threads take the lowest priority; the caller's thread (the runtime's) keeps its own."""
    from modalseg.engine.pipeline import _yield_to_the_runtime

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def helper():
        _yield_to_the_runtime()
        seen["helper"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    assert seen["helper"] == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_cloud_optimized_outputs_keep_values_names_and_gain_overviews(models, tmp_path):
    # 700 x 600 px: big enough for the COG driver to build overviews (256 px blocks).
    optical = (np.stack([smooth_field((600, 700), s) for s in (1, 2, 3)]) * 255).astype(np.uint8)
    layers = {"optical": LayerInput(str(write_raster(tmp_path / "optical.tif", optical, 32631, GT)))}
    _, plain = _run(models["pixelwise"], layers, tmp_path / "plain", tile_size=256, overlap=32)
    report, cog = _run(models["pixelwise"], layers, tmp_path / "cog", tile_size=256, overlap=32,
                       cloud_optimized=True)
    for name in ("classes", "robustness", "probabilities", "confidence"):
        assert np.array_equal(plain[name][0], cog[name][0], equal_nan=True), name
        ds = gdal.Open(report.outputs[name])
        assert ds.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
        assert ds.GetRasterBand(1).GetOverviewCount() >= 1, name
        assert ds.GetGeoTransform() == GT
    classes = gdal.Open(report.outputs["classes"])  # kept: a band must not outlive its dataset
    band = classes.GetRasterBand(1)
    classes.GetProjection()  # GDAL's GeoTIFF driver loads the .aux.xml sidecar (category names) lazily
    assert band.GetRasterCategoryNames()[1:4] == ["red wins", "green wins", "blue wins"]
    assert band.GetColorTable() is not None and band.GetNoDataValue() == 0
    robustness = gdal.Open(report.outputs["robustness"])
    assert robustness.GetRasterBand(1).GetDescription() == "optical"
    leftovers = [p.name for p in (tmp_path / "cog").iterdir() if p.name.startswith(".")]
    assert leftovers == []
