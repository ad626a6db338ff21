"""How segment's outputs look when loaded: the robustness composite stretched to the data with a
legend naming each colour's modality, the dominant-modality layer's named legend, layer names after
the input, and the stacking order (class map at the bottom, overlays above it)."""
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.helpers import write_like

ORDER_TOP_TO_BOTTOM = ("dominant modality", "robustness", "confidence", "probabilities", "classes")


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
        "CONFIDENCE": str(tmp_path / "confidence.tif"), "DOMINANT": str(tmp_path / "dominant.tif")})
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
    summary["legend"] = _legend(project, layer)
    summary["symbology"] = [(label, colour.name()) for label, colour in renderer.legendSymbologyItems()]
    return summary


def _legend(project, layer):
    """(text, swatch colour) of each legend entry the layer tree shows for ``layer`` (colour None
    for a heading)."""
    from qgis.PyQt.QtCore import Qt

    entries = []
    for node in layer.legend().createLayerTreeModelLegendNodes(project.layerTreeRoot().findLayer(layer.id())):
        icon = node.data(Qt.ItemDataRole.DecorationRole)
        if hasattr(icon, "pixmap"):
            image = icon.pixmap(16, 16).toImage()
            entries.append((node.data(0), image.pixelColor(image.width() // 2, image.height() // 2).name()))
        else:
            entries.append((node.data(0), None))
    return entries


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
    # the legend names each channel's colour and modality with its stretch, beside that colour's swatch
    expected = []
    for band, (channel, swatch) in zip(summary["bands"], (("red", "#ff0000"), ("green", "#00ff00"),
                                                           ("blue", "#0000ff"))):
        if band > 0:
            low, high, _ = _exact_range(results["ROBUSTNESS"], band)
            modality = ("optical", "ndsm")[band - 1]
            expected.append((f"{channel}: {modality} share, {low:.2f} (dark) to {high:.2f} (full {channel})", swatch))
    assert summary["legend"] == expected


def test_dominant_modality_legend_names_each_modality_in_its_colour(loaded_run):
    from osgeo import gdal

    from modalseg.engine import dominant
    from modalseg.processing_provider.styling import OVERLAY_OPACITY

    results, project = loaded_run
    summary = _renderer_summary(project, Path(results["DOMINANT"]).name)
    assert summary["type"] == "paletted"
    assert summary["opacity"] == pytest.approx(OVERLAY_OPACITY)
    dataset = gdal.Open(results["DOMINANT"])
    leads = dataset.GetRasterBand(1).ReadAsArray()
    dataset = None
    present = sorted(set(np.unique(leads).tolist()) - {dominant.NODATA})
    # one entry per value the file holds, in value order, named "<modality>: share a-b"
    assert [label.split(":")[0] for label, _ in summary["symbology"]] == [
        ("optical", "ndsm")[dominant.decode(v)[0]] for v in present]
    assert {label.split(":")[0] for label, _ in summary["symbology"]} == {"optical", "ndsm"}
    # each modality's hue, deepening over the steps present, ending at the full hue
    for k, hue in enumerate(dominant.HUES[:2]):
        colours = [colour for (label, colour), v in zip(summary["symbology"], present) if dominant.decode(v)[0] == k]
        assert colours[-1] == hue
        whiteness = [sum(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colours]
        assert whiteness == sorted(whiteness, reverse=True)
    # the layer tree shows the same entries with those swatches, under the band's heading
    assert summary["legend"][0] == ("Band 1: dominant modality (Palette)", None)
    assert summary["legend"][1:] == summary["symbology"]


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
