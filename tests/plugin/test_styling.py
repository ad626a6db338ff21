"""How segment's outputs look when loaded: the robustness composite stretched to the data, layer
names after the input, and the stacking order (class map at the bottom, overlays above it)."""
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.helpers import write_like

ORDER_TOP_TO_BOTTOM = ("robustness", "confidence", "probabilities", "classes")


def _exact_range(path: str, band: int):
    from osgeo import gdal

    dataset = gdal.Open(path)
    raster_band = dataset.GetRasterBand(band)
    data = raster_band.ReadAsArray().astype(np.float64)
    data = data[data != raster_band.GetNoDataValue()]
    dataset = None
    return float(data.min()), float(data.max()), float(data.mean())


@pytest.fixture()
def loaded_run(qgis_app, demo, model_package, tmp_path):
    """The demo run through processing.runAndLoadResults, its layers in the project (removed after)."""
    import processing
    from qgis.core import QgsProject

    results = processing.runAndLoadResults("modalseg:segment", {
        "OPTICAL": demo["rgb"], "ELEVATION": demo["dsm"], "ELEVATION_TYPE": 1, "DTM": demo["dtm"],
        "MODEL_FILE": str(model_package), "OUTPUT": str(tmp_path / "classes.tif"),
        "ROBUSTNESS": str(tmp_path / "robustness.tif"), "PROBABILITIES": str(tmp_path / "probabilities.tif"),
        "CONFIDENCE": str(tmp_path / "confidence.tif")})
    yield results, QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()


def _renderer_summary(project, source_name: str):
    """Plain values of a loaded layer's renderer (no QGIS object may outlive the project's layers)."""
    layer = next(layer for layer in project.mapLayers().values() if Path(layer.source()).name == source_name)
    renderer = layer.renderer()
    summary = {"type": renderer.type(), "opacity": renderer.opacity(), "band_count": layer.bandCount()}
    if summary["type"] == "multibandcolor":
        bands = (renderer.redBand(), renderer.greenBand(), renderer.blueBand())
        enhancements = (renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
                        renderer.blueContrastEnhancement())
        summary["bands"] = list(bands)
        summary["ranges"] = [None if e is None else (e.minimumValue(), e.maximumValue()) for e in enhancements]
    nodes = renderer.createLegendNodes(project.layerTreeRoot().findLayer(layer.id()))
    summary["legend"] = " | ".join(node.data(0) for node in nodes)
    return summary


def test_robustness_shows_every_modality_stretched_to_the_data(loaded_run):
    from modalseg.processing_provider.styling import OVERLAY_OPACITY

    results, project = loaded_run
    summary = _renderer_summary(project, Path(results["ROBUSTNESS"]).name)
    count = summary["band_count"]
    assert count >= 2  # optical and elevation shares
    assert summary["type"] == "multibandcolor"
    assert summary["bands"] == list(range(1, min(count, 3) + 1)) + [-1] * (3 - min(count, 3))
    for band, stretch in zip(summary["bands"], summary["ranges"]):
        if band < 0:
            assert stretch is None
            continue
        low, high, _ = _exact_range(results["ROBUSTNESS"], band)
        assert stretch == pytest.approx((low, high), abs=1e-6), band
        assert (low, high) != (0.0, 1.0)  # what the data hold, not a fixed ramp
    assert summary["opacity"] == pytest.approx(OVERLAY_OPACITY)
    assert "optical" in summary["legend"], summary["legend"]  # the legend names the modalities


def test_loaded_outputs_are_named_after_the_input_and_stacked_class_map_at_the_bottom(loaded_run):
    _, project = loaded_run
    stem = "lidarprod_870000_6618000_rgb"
    names = [node.layer().name() for node in project.layerTreeRoot().findLayers()]  # top to bottom
    assert names == [f"{kind} - {stem}" for kind in ORDER_TOP_TO_BOTTOM], names


def test_narrow_shares_are_stretched_and_two_modalities_leave_blue_unused(qgis_app, demo, tmp_path):
    from qgis.core import QgsRasterLayer

    from modalseg.processing_provider.styling import apply_robustness_style

    rows = np.linspace(0.14, 0.25, 125, dtype=np.float32)[:, None].repeat(200, axis=1)
    shares = np.stack([rows, 1.0 - rows])
    path = write_like(demo["rgb"], tmp_path / "two_shares.tif", shares, None)
    layer = QgsRasterLayer(path, "two shares")
    apply_robustness_style(layer)
    renderer = layer.renderer()
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, -1)
    assert renderer.redContrastEnhancement().minimumValue() == pytest.approx(0.14, abs=1e-6)
    assert renderer.redContrastEnhancement().maximumValue() == pytest.approx(0.25, abs=1e-6)
    assert renderer.greenContrastEnhancement().minimumValue() == pytest.approx(0.75, abs=1e-6)
    del renderer, layer


def test_a_single_modality_gets_the_share_ramp_with_a_usable_range(qgis_app, demo, tmp_path):
    from qgis.core import QgsRasterLayer

    from modalseg.processing_provider.styling import apply_robustness_style

    path = write_like(demo["rgb"], tmp_path / "one_share.tif", np.ones((1, 125, 200), np.float32), None)
    layer = QgsRasterLayer(path, "one share")
    apply_robustness_style(layer)
    renderer = layer.renderer()
    assert renderer.type() == "singlebandpseudocolor"
    assert renderer.classificationMin() < 1.0 < renderer.classificationMax()
    del renderer, layer


def test_the_robustness_style_file_shows_two_modalities_at_once(qgis_app, demo, tmp_path):
    from qgis.core import QgsRasterLayer

    from tests.plugin.helpers import REPO_ROOT

    shares = np.stack([np.full((125, 200), 0.3, np.float32), np.full((125, 200), 0.7, np.float32)])
    layer = QgsRasterLayer(write_like(demo["rgb"], tmp_path / "shares.tif", shares, None), "shares")
    message, ok = layer.loadNamedStyle(str(REPO_ROOT / "resources" / "styles" / "robustness.qml"))
    assert ok, message
    renderer = layer.renderer()
    summary = (renderer.type(), renderer.redBand(), renderer.greenBand(), renderer.blueBand(), renderer.opacity())
    del renderer, layer
    assert summary == ("multibandcolor", 1, 2, -1, pytest.approx(0.6))
