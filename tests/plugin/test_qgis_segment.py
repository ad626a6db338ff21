"""``modalseg:segment`` through QGIS Processing on the real LiDAR HD demo tile."""
import os
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.helpers import read_raster, write_like

USED_KINDS = ("optical", "dsm", "ndsm")  # what the demo run below provides


@pytest.fixture()
def processing_run(qgis_app):
    import processing

    return processing.run


def _params(demo, model_package, out: Path, **extra):
    params = {"OPTICAL": demo["rgb"], "ELEVATION": demo["dsm"], "ELEVATION_TYPE": 1, "DTM": demo["dtm"],
              "MODEL_FILE": str(model_package), "OUTPUT": str(out / "classes.tif"),
              "ROBUSTNESS": str(out / "robustness.tif"), "PROBABILITIES": str(out / "probabilities.tif"),
              "CONFIDENCE": str(out / "confidence.tif")}
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def demo_run(qgis_app, demo, model_package, tmp_path_factory):
    import processing

    out = tmp_path_factory.mktemp("demo-run")
    results = processing.run("modalseg:segment", _params(demo, model_package, out))
    return {name: results[name] for name in ("OUTPUT", "ROBUSTNESS", "PROBABILITIES", "CONFIDENCE")}


def test_outputs_are_on_the_reference_grid(demo_run, demo):
    reference = read_raster(demo["rgb"])
    for name, path in demo_run.items():
        assert path and os.path.exists(path), name
        info = read_raster(path)
        assert info["driver"] == "GTiff"
        assert info["size"] == reference["size"], name
        assert np.allclose(info["geotransform"], reference["geotransform"]), name
        assert info["srs"].IsSame(reference["srs"]), name


def test_classes_are_the_model_classes_with_names_and_colours(demo_run, package_metadata):
    info = read_raster(demo_run["OUTPUT"])
    nodata = info["nodata"][0]
    values = set(np.unique(info["data"][0]).tolist()) - {nodata}
    assert values, "no valid pixel was classified"
    assert values <= set(package_metadata.class_values)
    assert info["has_colour_table"]
    names = info["category_names"]
    for cls in package_metadata.classes:
        assert names[cls.value] == cls.name


def test_robustness_has_one_band_per_modality_and_sums_to_one(demo_run, package_metadata):
    classes = read_raster(demo_run["OUTPUT"])
    valid = classes["data"][0] != classes["nodata"][0]
    info = read_raster(demo_run["ROBUSTNESS"])
    used = [m.name for m in package_metadata.modalities if m.kind in USED_KINDS]
    assert info["count"] == len(used)
    assert list(info["descriptions"]) == used
    total = info["data"].astype(np.float64).sum(axis=0)
    assert np.all(np.abs(total[valid] - 1.0) <= 0.01)
    assert np.all((info["data"][:, valid] >= -1e-6) & (info["data"][:, valid] <= 1 + 1e-6))


def test_probabilities_and_confidence(demo_run, package_metadata):
    probabilities = read_raster(demo_run["PROBABILITIES"])
    confidence = read_raster(demo_run["CONFIDENCE"])
    classes = read_raster(demo_run["OUTPUT"])
    valid = classes["data"][0] != classes["nodata"][0]
    assert probabilities["count"] == len(package_metadata.classes)
    assert np.allclose(probabilities["data"][:, valid].sum(axis=0), 1.0, atol=0.01)
    assert np.allclose(confidence["data"][0][valid], probabilities["data"][:, valid].max(axis=0), atol=1e-3)


def test_nodata_where_the_inputs_have_no_data(processing_run, demo, model_package, tmp_path):
    rgb = read_raster(demo["rgb"])["data"].copy()
    ndsm = read_raster(demo["ndsm"])["data"].copy()
    hole = (slice(None), slice(30, 70), slice(50, 120))
    rgb[hole] = 0
    ndsm[hole] = -9999.0
    optical = write_like(demo["rgb"], tmp_path / "rgb_hole.tif", rgb.astype(np.uint8), 0)
    elevation = write_like(demo["ndsm"], tmp_path / "ndsm_hole.tif", ndsm.astype(np.float32), -9999.0)
    results = processing_run("modalseg:segment", {
        "OPTICAL": optical, "ELEVATION": elevation, "ELEVATION_TYPE": 2, "MODEL_FILE": str(model_package),
        "OUTPUT": str(tmp_path / "classes.tif"), "ROBUSTNESS": str(tmp_path / "robustness.tif")})
    classes = read_raster(results["OUTPUT"])
    nodata = classes["nodata"][0]
    assert nodata is not None
    inside = classes["data"][0][30:70, 50:120]
    assert np.all(inside == nodata)
    assert np.mean(classes["data"][0] != nodata) > 0.5  # the rest of the tile is classified
    robustness = read_raster(results["ROBUSTNESS"])
    assert robustness["nodata"][0] == -1.0  # finite: no NaN in any output
    assert np.all(robustness["data"][:, 30:70, 50:120] == -1.0)
    assert np.isfinite(robustness["data"]).all()


def test_outputs_are_styled_when_loaded(qgis_app, demo, model_package, package_metadata, tmp_path):
    import processing
    from qgis.core import QgsProject

    from modalseg.processing_provider.styling import OVERLAY_OPACITY

    results = processing.runAndLoadResults("modalseg:segment", _params(demo, model_package, tmp_path))
    try:
        by_source = {Path(layer.source()).name: layer for layer in QgsProject.instance().mapLayers().values()}
        classified = by_source[Path(results["OUTPUT"]).name]
        assert classified.renderer().type() == "paletted"
        labels = {int(c.value): c.label for c in classified.renderer().classes()}
        assert labels == {c.value: c.name for c in package_metadata.classes}
        colours = {int(c.value): c.color.name() for c in classified.renderer().classes()}
        assert colours == {c.value: c.color.lower() for c in package_metadata.classes}
        for name in ("CONFIDENCE", "PROBABILITIES"):  # the robustness composite: tests/plugin/test_styling.py
            overlay = by_source[Path(results[name]).name]
            assert overlay.renderer().type() == "singlebandpseudocolor", name
            assert overlay.renderer().opacity() == pytest.approx(OVERLAY_OPACITY), name
            assert overlay.renderer().classificationMin() == 0.0 and overlay.renderer().classificationMax() == 1.0
        del classified, overlay, by_source
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_batch_style_run_with_two_inputs(qgis_app, demo, model_package, tmp_path):
    """As the batch dialog does: one algorithm, one context, several parameter rows."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback

    rgb = read_raster(demo["rgb"])
    x0, px, _, y0, _, py = rgb["geotransform"]
    # Second row: the lower-right part of the tile, as its own smaller raster.
    crop = write_like(demo["rgb"], tmp_path / "rgb_crop.tif", rgb["data"][:, 45:, 80:].astype(np.uint8), None,
                      geotransform=(x0 + 80 * px, px, 0.0, y0 + 45 * py, 0.0, py))
    rows = [(demo["rgb"], (200, 125)), (crop, (120, 80))]
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("modalseg:segment")
    context = QgsProcessingContext()
    feedback = QgsProcessingFeedback()
    for i, (optical, size) in enumerate(rows):
        params = {"OPTICAL": optical, "ELEVATION": demo["ndsm"], "ELEVATION_TYPE": 2,
                  "MODEL_FILE": str(model_package), "OUTPUT": str(tmp_path / f"row{i}.tif")}
        results, ok = algorithm.run(params, context, feedback)
        assert ok, f"row {i} failed"
        assert read_raster(results["OUTPUT"])["size"] == size
    del algorithm, context


def test_output_extent_resolution_and_crs(processing_run, demo, model_package, tmp_path):
    rgb = read_raster(demo["rgb"])
    x0, _, _, y0, _, _ = rgb["geotransform"]
    extent = f"{x0 + 10},{x0 + 60},{y0 - 40},{y0 - 10} [EPSG:2154]"
    results = processing_run("modalseg:segment", {
        "OPTICAL": demo["rgb"], "ELEVATION": demo["ndsm"], "ELEVATION_TYPE": 2, "MODEL_FILE": str(model_package),
        "OUTPUT_EXTENT": extent, "OUTPUT_RESOLUTION": 1.0, "OUTPUT": str(tmp_path / "sub.tif")})
    info = read_raster(results["OUTPUT"])
    assert info["size"] == (50, 30)
    assert np.allclose(info["geotransform"], (x0 + 10, 1.0, 0.0, y0 - 10, 0.0, -1.0))

    results = processing_run("modalseg:segment", {
        "OPTICAL": demo["rgb"], "MODEL_FILE": str(model_package), "OUTPUT_CRS": "EPSG:3857",
        "OUTPUT": str(tmp_path / "webmercator.tif")})
    info = read_raster(results["OUTPUT"])
    assert info["srs"].GetAuthorityCode(None) == "3857"


def test_cloud_optimized_outputs(processing_run, demo, model_package, demo_run, tmp_path):
    from osgeo import gdal

    results = processing_run("modalseg:segment", _params(demo, model_package, tmp_path, CLOUD_OPTIMIZED=True))
    for name in ("OUTPUT", "ROBUSTNESS"):
        ds = gdal.Open(results[name])
        assert ds.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
        ds = None
        assert np.array_equal(read_raster(results[name])["data"], read_raster(demo_run[name])["data"]), name
    assert read_raster(results["OUTPUT"])["category_names"] == read_raster(demo_run["OUTPUT"])["category_names"]


# -- bad input --------------------------------------------------------------------------------------------
def _expect_failure(run, params, output: Path, *fragments):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as caught:
        run("modalseg:segment", params)
    message = str(caught.value).lower()
    for fragment in fragments:
        assert fragment.lower() in message, message
    assert not output.exists(), "a failed run left an output file behind"
    assert not any(output.parent.glob("*.tif")), "a failed run left a file behind"


def test_no_modality_given(processing_run, model_package, tmp_path):
    out = tmp_path / "classes.tif"
    _expect_failure(processing_run, {"MODEL_FILE": str(model_package), "OUTPUT": str(out)}, out,
                    "at least one input layer")


def test_layer_with_the_wrong_band_count(processing_run, demo, model_package, tmp_path):
    out = tmp_path / "classes.tif"
    _expect_failure(processing_run, {"OPTICAL": demo["dsm"], "MODEL_FILE": str(model_package),
                                     "OUTPUT": str(out)}, out, "band", "optical")
    _expect_failure(processing_run, {"OPTICAL": demo["rgb"], "OPTICAL_BANDS": [1, 2],
                                     "MODEL_FILE": str(model_package), "OUTPUT": str(out)}, out, "2 band")


def test_layers_that_do_not_overlap(processing_run, demo, model_package, tmp_path):
    ndsm = read_raster(demo["ndsm"])
    x0, px, _, y0, _, py = ndsm["geotransform"]
    far = write_like(demo["ndsm"], tmp_path / "far.tif", ndsm["data"].astype(np.float32), -9999.0,
                     geotransform=(x0 + 100_000, px, 0.0, y0, 0.0, py))
    out = tmp_path / "out" / "classes.tif"
    _expect_failure(processing_run, {"OPTICAL": demo["rgb"], "ELEVATION": far, "ELEVATION_TYPE": 2,
                                     "MODEL_FILE": str(model_package), "OUTPUT": str(out)}, out, "overlap")


def test_missing_model_file(processing_run, demo, tmp_path):
    out = tmp_path / "classes.tif"
    _expect_failure(processing_run, {"OPTICAL": demo["rgb"], "MODEL_FILE": str(tmp_path / "nope.onnx"),
                                     "OUTPUT": str(out)}, out, "nope.onnx", "does not exist")


def test_model_file_that_is_not_a_package(processing_run, demo, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX graph")
    out = tmp_path / "classes.tif"
    _expect_failure(processing_run, {"OPTICAL": demo["rgb"], "MODEL_FILE": str(broken), "OUTPUT": str(out)},
                    out, "broken.onnx")


def test_output_that_is_not_geotiff(processing_run, demo, model_package, tmp_path):
    out = tmp_path / "classes.img"
    _expect_failure(processing_run, {"OPTICAL": demo["rgb"], "MODEL_FILE": str(model_package), "OUTPUT": str(out)},
                    out, "GeoTIFF")


def test_cancel_leaves_no_output(qgis_app, demo, model_package, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("modalseg:segment")
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    out = tmp_path / "classes.tif"
    params = {"OPTICAL": demo["rgb"], "MODEL_FILE": str(model_package), "OUTPUT": str(out),
              "ROBUSTNESS": str(tmp_path / "robustness.tif")}
    context = QgsProcessingContext()
    with pytest.raises(QgsProcessingException, match="Cancelled by the user"):
        algorithm.run(params, context, feedback, {}, False)
    assert not any(tmp_path.glob("*.tif"))
    del algorithm, context


@pytest.mark.parametrize("device, advised", [(0, True), (1, False)])  # DEVICES: auto, cpu
def test_a_cpu_run_beside_an_nvidia_gpu_says_how_to_use_the_gpu(qgis_app, demo, model_package, tmp_path,
                                                                 monkeypatch, device, advised):
    """This onnxruntime (CI's) has no CUDA provider; the GPU probes are told an NVIDIA GPU is there."""
    import processing

    from modalseg.environment import probes
    from tests.plugin.helpers import recording_feedback

    monkeypatch.setattr(probes, "detect_nvidia_gpu", lambda: probes.GpuInfo(True, ["NVIDIA RTX A2000"]))
    feedback = recording_feedback()
    processing.run("modalseg:segment", {"OPTICAL": demo["rgb"], "ELEVATION": demo["ndsm"], "ELEVATION_TYPE": 2,
                                        "MODEL_FILE": str(model_package), "DEVICE": device,
                                        "OUTPUT": str(tmp_path / "classes.tif")}, feedback=feedback)
    advice = [w for w in feedback.warnings if "NVIDIA RTX A2000" in w]
    assert advice == ([
        "Warning: this machine has NVIDIA RTX A2000, but the run used the CPU: the installed onnxruntime has no "
        "CUDA support. Run 'Install dependencies' with 'CUDA builds' (it installs onnxruntime-gpu) to run on the "
        "GPU, several times faster."] if advised else [])
