"""``modalseg:rasterize_point_cloud`` inside QGIS and through ``qgis_process``: real LiDAR HD clouds,
styled labels, the reference grid, messages for bad input, and the plugin without laspy."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.point_clouds import flat_scene
from tests.plugin.helpers import PLUGIN_DIR, read_raster, recording_feedback

HOUSES = "lidarhd_houses_870000_6618000.laz"
PACASAM = "lidarhd_pacasam_792000_6272000_left.laz"
ORTHO_NORTH = "bdortho_pacasam_792000_6272000_left_rgb_north.tif"
OUTPUTS = ("LABELS", "DSM", "DTM", "NDSM", "OPTICAL", "NIR")


def outputs_in(folder: Path, names=OUTPUTS):
    return {name: str(folder / f"{name.lower()}.tif") for name in names}


def test_houses_cloud_gives_styled_labels_and_heights(qgis_app, shared_data, package_metadata, tmp_path):
    import processing
    from qgis.core import QgsProject

    feedback = recording_feedback()
    params = {"POINT_CLOUDS": [str(shared_data / "point_clouds" / HOUSES)], **outputs_in(tmp_path)}
    nir = Path(params["NIR"])
    results = processing.runAndLoadResults("modalseg:rasterize_point_cloud", params, feedback=feedback)
    try:
        assert results["NIR"] is None and not nir.exists()  # the NIR field holds zeros only
        assert any("NIR values of zero" in line for line in feedback.warnings), feedback.warnings
        assert any("208 (468 points), 214 (10 points)" in line for line in feedback.warnings)
        assert any("heights in metre" in line for line in feedback.infos)
        labels = read_raster(results["LABELS"])
        reference = read_raster(str(shared_data / "lidarhd_houses" / "lidarprod_870000_6618000_label.tif"))
        assert labels["size"] == reference["size"] and np.allclose(labels["geotransform"], reference["geotransform"])
        both = (labels["data"] != 0) & (reference["data"] != 0)
        assert np.mean(labels["data"][both] == reference["data"][both]) >= 0.98
        by_source = {Path(layer.source()).name: layer for layer in QgsProject.instance().mapLayers().values()}
        styled = by_source["labels.tif"]
        assert styled.renderer().type() == "paletted"
        assert {int(c.value): c.label for c in styled.renderer().classes()} == \
            {c.value: c.name for c in package_metadata.classes}
        dsm = read_raster(results["DSM"])
        assert dsm["nodata"] == [-9999.0] and 179 < dsm["data"][dsm["data"] != -9999].min() < 181
        del styled, by_source
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_outputs_on_the_orthophoto_grid(qgis_app, shared_data, tmp_path):
    import processing

    ortho = str(shared_data / "point_clouds" / ORTHO_NORTH)
    results = processing.run("modalseg:rasterize_point_cloud", {
        "POINT_CLOUDS": [str(shared_data / "point_clouds")], "REFERENCE": ortho,  # a folder of tiles
        **outputs_in(tmp_path, ("LABELS", "NDSM"))})
    grid = read_raster(ortho)
    for name in ("LABELS", "NDSM"):
        info = read_raster(results[name])
        assert info["size"] == grid["size"] and info["geotransform"] == grid["geotransform"], name
        assert info["srs"].IsSame(grid["srs"])


def test_bad_inputs_name_the_file_and_leave_nothing(qgis_app, shared_data, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "out"
    out.mkdir()
    text = tmp_path / "readme.laz"
    text.write_text("not a cloud")
    with pytest.raises(QgsProcessingException, match="'.*readme.laz' is not a readable LAS/LAZ point cloud"):
        processing.run("modalseg:rasterize_point_cloud", {"POINT_CLOUDS": [str(text)], **outputs_in(out)})
    no_crs = flat_scene(tmp_path / "no_crs.las", crs_wkt="")
    with pytest.raises(QgsProcessingException, match="has no coordinate system in its header"):
        processing.run("modalseg:rasterize_point_cloud", {"POINT_CLOUDS": [str(no_crs)], **outputs_in(out)})
    with pytest.raises(QgsProcessingException, match="can fall inside the reference raster"):
        processing.run("modalseg:rasterize_point_cloud", {
            "POINT_CLOUDS": [str(shared_data / "point_clouds" / HOUSES)],
            "REFERENCE": str(shared_data / "point_clouds" / ORTHO_NORTH), **outputs_in(out)})
    assert sorted(os.listdir(out)) == []
    fixed = processing.run("modalseg:rasterize_point_cloud", {
        "POINT_CLOUDS": [str(no_crs)], "SOURCE_CRS": "EPSG:2154", "CLASS_MAP": [2, "ground", 6, "other"],
        **outputs_in(out, ("LABELS",))})
    assert set(np.unique(read_raster(fixed["LABELS"])["data"]).tolist()) == {1, 6}


def test_cancel_leaves_no_output(qgis_app, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("modalseg:rasterize_point_cloud")
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    params = {"POINT_CLOUDS": [str(flat_scene(tmp_path / "scene.las"))], **outputs_in(tmp_path)}
    context = QgsProcessingContext()
    with pytest.raises(QgsProcessingException, match="Cancelled by the user"):
        algorithm.run(params, context, feedback, {}, False)
    assert not any(tmp_path.glob("*.tif")) and not any(tmp_path.glob(".*"))
    del algorithm, context


def test_qgis_process_help_and_run(qgis_process, shared_data, tmp_path):
    help_text = qgis_process(["help", "modalseg:rasterize_point_cloud"])
    assert help_text.returncode == 0, help_text.stderr
    for name in ("POINT_CLOUDS", "REFERENCE", "CLASS_MAP", "LABELS", "NDSM"):
        assert name in help_text.stdout
    labels = tmp_path / "labels.tif"
    result = qgis_process(["run", "modalseg:rasterize_point_cloud", "--json", "--",
                           f"POINT_CLOUDS={shared_data / 'point_clouds' / 'autzen_trim.laz'}", "PIXEL_SIZE=2",
                           f"LABELS={labels}", f"DSM={tmp_path / 'dsm.tif'}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reply = json.loads(result.stdout)
    assert any("output heights in foot" in line for line in reply["log"]["info"]), reply["log"]
    assert set(np.unique(read_raster(str(labels))["data"]).tolist()) <= {0, 1}


def test_plugin_without_laspy_says_what_is_missing(qgis_process, tmp_path):
    """qgis_process without the venv's packages: the plugin loads, the algorithm names laspy."""
    from tests.plugin.helpers import qgis_process_binary, qgis_process_env

    import subprocess  # nosec B404 - an argument list, no shell

    env = qgis_process_env(tmp_path / "profile")
    # Debian's Python alone (no laspy, no lazrs): embedded Python takes its prefix from the python3
    # on PATH, so PATH holds only the system folders, and the venv's site-packages are left out.
    env["PYTHONPATH"] = ""
    env["PATH"] = "/usr/bin:/bin"
    env.pop("VIRTUAL_ENV", None)
    env["QGIS_PLUGINPATH"] = str(PLUGIN_DIR)
    binary = qgis_process_binary()
    subprocess.run([binary, "plugins", "enable", "modalseg"], env=env, capture_output=True, timeout=120,  # nosec
                   check=False)
    cloud = tmp_path / "scene.las"  # never opened: the missing packages are found first
    cloud.write_bytes(b"")
    result = subprocess.run([binary, "run", "modalseg:rasterize_point_cloud", "--", f"POINT_CLOUDS={cloud}",  # nosec
                             f"DSM={tmp_path / 'dsm.tif'}"], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode != 0
    assert "laspy, lazrs" in result.stdout + result.stderr and "Install dependencies" in result.stdout + result.stderr


WORKFLOW = Path(__file__).resolve().parents[2] / "resources" / "lidar_labels_workflow.model3"


def test_no_labels_workflow_model_runs_end_to_end(qgis_process, shared_data, tmp_path):
    """point cloud + orthophoto -> rasterize_point_cloud -> finetune -> segment -> evaluate, kept short
    on CPU (one epoch, a few seconds of training: what it learns is the benchmark's business)."""
    clouds = shared_data / "point_clouds"
    out = {name: tmp_path / file for name, file in (
        ("lidar_labels", "labels.tif"), ("ndsm_from_the_point_cloud", "ndsm.tif"),
        ("finetuned_model_package_folder", "package"), ("classified_raster", "classes.tif"),
        ("accuracy_csv", "accuracy.csv"), ("accuracy_report_html", "accuracy.html"))}
    result = qgis_process(["run", str(WORKFLOW), "--json", "--", f"point_cloud={clouds / PACASAM}",
                           f"orthophoto={clouds / ORTHO_NORTH}", "epochs=1", "time_budget=0.1", "chip_size=128",
                           *(f"{name}={path}" for name, path in out.items())], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reply = json.loads(result.stdout)
    grid = read_raster(str(clouds / ORTHO_NORTH))
    for name in ("lidar_labels", "ndsm_from_the_point_cloud", "classified_raster"):
        info = read_raster(reply["results"][name])
        assert info["size"] == grid["size"] and info["geotransform"] == grid["geotransform"], name
    labels = read_raster(str(out["lidar_labels"]))["data"]
    assert {1, 2} <= set(np.unique(labels).tolist())
    assert list(out["finetuned_model_package_folder"].glob("*.onnx"))
    report = out["accuracy_csv"].read_text(encoding="utf-8")
    assert "miou" in report.lower() and out["accuracy_report_html"].is_file()
    assert any(line.startswith("Validation mIoU:") for line in reply["log"]["info"]), reply["log"]["info"][-20:]
