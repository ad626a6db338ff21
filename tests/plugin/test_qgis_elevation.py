"""``modalseg:segment`` in QGIS with the layers analysts have: a DSM alone (its DTM estimated, the
ground window an advanced parameter) and a 12-bit optical layer (stretched), on the real demo tile."""
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.helpers import BUNDLED_MODELS, read_raster, recording_feedback

SGMA = BUNDLED_MODELS / "modalseg-sgma-urban" / "modalseg-sgma-urban.onnx"



@pytest.fixture()
def segment(qgis_app):
    import processing

    def run(out: Path, **parameters):
        out.mkdir(parents=True, exist_ok=True)
        feedback = recording_feedback()
        results = processing.run("modalseg:segment", {"MODEL_FILE": str(SGMA), "OUTPUT": str(out / "classes.tif"),
                                                      **parameters}, feedback=feedback)
        return read_raster(results["OUTPUT"])["data"][0], feedback

    return run


def test_a_dsm_alone_is_segmented_with_an_estimated_dtm(segment, demo, tmp_path):
    classes, feedback = segment(tmp_path / "alone", ELEVATION=demo["dsm"])
    assert any("is taken as a DSM because its lowest heights (1st percentile 179.4 m) sit far above 0 m" in line
               for line in feedback.infos), feedback.infos
    assert any("the DTM was estimated from the DSM by a ground filter (40 m window)" in w
               for w in feedback.warnings), feedback.warnings
    reference, _ = segment(tmp_path / "with_dtm", ELEVATION=demo["dsm"], DTM=demo["dtm"])
    labels = read_raster(demo["label"])["data"][0]
    labelled = labels > 0
    assert np.mean(classes[labelled] == reference[labelled]) > 0.97
    # Only the outputs stay in the folder: the scratch DTM is removed.
    assert not [p.name for p in (tmp_path / "alone").iterdir() if p.name.startswith(".")]


def test_the_ground_window_parameter_reaches_the_filter(segment, demo, tmp_path):
    wide, _ = segment(tmp_path / "wide", ELEVATION=demo["dsm"])
    narrow, feedback = segment(tmp_path / "narrow", ELEVATION=demo["dsm"], GROUND_WINDOW=4.0)
    assert any("ground filter (4 m window)" in w for w in feedback.warnings), feedback.warnings
    # Houses wider than 4 m partly count as ground: far fewer building pixels.
    assert np.count_nonzero(narrow == 2) < 0.7 * np.count_nonzero(wide == 2)


def test_a_12_bit_optical_layer_is_stretched_with_a_warning(segment, demo, tmp_path):
    from osgeo import gdal

    source = gdal.Open(demo["rgb"])
    stored = str(tmp_path / "rgb_12bit.tif")
    out = gdal.GetDriverByName("GTiff").Create(stored, source.RasterXSize, source.RasterYSize, 3, gdal.GDT_UInt16)
    out.SetGeoTransform(source.GetGeoTransform())
    out.SetProjection(source.GetProjection())
    for index in (1, 2, 3):
        out.GetRasterBand(index).WriteArray(source.GetRasterBand(index).ReadAsArray().astype(np.uint16) * 16)
    out = source = None
    twelve_bit, feedback = segment(tmp_path / "12bit", OPTICAL=stored)
    assert any(f"the optical layer '{stored}' holds values" in w and "stretched" in w for w in feedback.warnings)
    eight_bit, _ = segment(tmp_path / "8bit", OPTICAL=demo["rgb"])
    assert np.mean(twelve_bit == eight_bit) >= 0.95
