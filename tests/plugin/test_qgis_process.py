"""The same job from the command line: ``qgis_process run modalseg:segment`` and the example model."""
import csv
import json

import numpy as np

from tests.plugin.helpers import REPO_ROOT, read_raster

EXAMPLE_MODEL = REPO_ROOT / "resources" / "segment_class_areas.model3"


def test_provider_is_listed_and_documented(qgis_process):
    listing = qgis_process(["list"])
    assert listing.returncode == 0, listing.stderr
    assert "modalseg:segment" in listing.stdout
    help_text = qgis_process(["help", "modalseg:segment"])
    assert help_text.returncode == 0, help_text.stderr
    for name in ("OPTICAL", "ELEVATION_TYPE", "MODEL_FILE", "TILE_SIZE", "ROBUSTNESS"):
        assert name in help_text.stdout


def test_segment_through_qgis_process(qgis_process, demo, model_package, package_metadata, tmp_path):
    classes, robustness = tmp_path / "classes.tif", tmp_path / "robustness.tif"
    result = qgis_process(["run", "modalseg:segment", "--json", "--",
                           f"OPTICAL={demo['rgb']}", f"ELEVATION={demo['ndsm']}", "ELEVATION_TYPE=2",
                           f"MODEL_FILE={model_package}", f"OUTPUT={classes}", f"ROBUSTNESS={robustness}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reply = json.loads(result.stdout)
    assert reply["results"]["OUTPUT"] == str(classes)
    bound = [line for line in reply["log"]["info"] if line.startswith("bound ")]
    assert len(bound) == 2, reply["log"]  # the log says how each layer was bound
    reference = read_raster(demo["rgb"])
    info = read_raster(str(classes))
    assert info["size"] == reference["size"]
    assert np.allclose(info["geotransform"], reference["geotransform"])
    values = set(np.unique(info["data"]).tolist()) - {info["nodata"][0]}
    assert values and values <= set(package_metadata.class_values)
    assert read_raster(str(robustness))["count"] == 2


def test_bad_input_through_qgis_process(qgis_process, demo, tmp_path):
    classes = tmp_path / "classes.tif"
    result = qgis_process(["run", "modalseg:segment", "--", f"OPTICAL={demo['rgb']}",
                           f"MODEL_FILE={tmp_path / 'missing.onnx'}", f"OUTPUT={classes}"])
    assert result.returncode != 0
    assert "does not exist" in result.stdout + result.stderr
    assert not classes.exists()


def test_example_model3(qgis_process, demo, model_package, package_metadata, tmp_path):
    """segment -> raster unique values report, as committed under resources/."""
    classes, table, report = tmp_path / "classes.tif", tmp_path / "areas.csv", tmp_path / "areas.html"
    result = qgis_process(["run", str(EXAMPLE_MODEL), "--", f"optical={demo['rgb']}",
                           f"elevation={demo['ndsm']}", f"model_file={model_package}",
                           f"classified_raster={classes}", f"class_areas_table={table}",
                           f"class_areas_report_html={report}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert classes.exists() and report.exists()
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    values = {int(float(row["value"])) for row in rows}
    assert values and values <= set(package_metadata.class_values)
    counted = sum(int(row["count"]) for row in rows)
    info = read_raster(str(classes))
    assert counted == int(np.sum(info["data"] != info["nodata"][0]))
