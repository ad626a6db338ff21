"""Binding layers to a package's modalities: band choice, nDSM derivation, clear refusals."""
import numpy as np
import pytest

from modalseg.engine import EngineError, GridRequest, LayerInput, OutputPaths, bind_modalities, load_package, \
    run_segmentation
from modalseg.engine.package import parse_metadata
from tests.fixtures.onnx_models import base_metadata, make_pixelwise
from tests.fixtures.rasters import read, write_raster

GT = (500000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0)


@pytest.fixture()
def rasters(tmp_path):
    rgbn = np.arange(4 * 20 * 30, dtype=np.uint16).reshape(4, 20, 30) % 255
    dsm = np.full((20, 30), 110.0, np.float32)
    dtm = np.full((20, 30), 100.0, np.float32)
    dtm[:, :10] = 115.0  # ground above the surface: nDSM clamps at 0
    return {"rgbn": str(write_raster(tmp_path / "rgbn.tif", rgbn, 32631, GT)),
            "dsm": str(write_raster(tmp_path / "dsm.tif", dsm, 32631, GT)),
            "dtm": str(write_raster(tmp_path / "dtm.tif", dtm, 32631, GT)),
            "single": str(write_raster(tmp_path / "single.tif", dsm, 32631, GT))}


META = parse_metadata(base_metadata("m", {"type": "minmax", "min": [0] * 3, "max": [255] * 3},
                                    {"type": "minmax", "min": [0], "max": [20]}))


def test_first_bands_are_taken_and_logged(rasters):
    sources, messages = bind_modalities(META, {"optical": LayerInput(rasters["rgbn"])})
    assert [(s.modality, s.bands) for s in sources] == [("optical", (1, 2, 3))]
    assert any("bound optical" in m and "bands 1,2,3" in m for m in messages)
    assert any("ndsm: no elevation layer" in m for m in messages)


def test_explicit_bands_are_checked(rasters):
    sources, _ = bind_modalities(META, {"optical": LayerInput(rasters["rgbn"], bands=(3, 2, 4))})
    assert sources[0].bands == (3, 2, 4)
    with pytest.raises(EngineError, match="given 2 band"):
        bind_modalities(META, {"optical": LayerInput(rasters["rgbn"], bands=(1, 2))})
    with pytest.raises(EngineError, match=r"rgbn\.tif' has 4 band\(s\); band\(s\) 9 do not exist"):
        bind_modalities(META, {"optical": LayerInput(rasters["rgbn"], bands=(1, 2, 9))})


def test_wrong_band_count_is_refused(rasters):
    with pytest.raises(EngineError, match="has 1 band.*needs 3 \\(red, green, blue\\)"):
        bind_modalities(META, {"optical": LayerInput(rasters["single"])})


def test_a_palette_image_is_refused_with_how_to_expand_it(tmp_path):
    from osgeo import gdal

    path = write_raster(tmp_path / "palette.tif", (np.arange(600) % 7).reshape(20, 30).astype(np.uint8), 32631, GT)
    ds = gdal.Open(str(path), gdal.GA_Update)
    colours = gdal.ColorTable()
    for index in range(7):
        colours.SetColorEntry(index, (index * 30, 200 - index * 20, 90, 255))
    ds.GetRasterBand(1).SetColorTable(colours)
    ds = None
    with pytest.raises(EngineError) as raised:
        bind_modalities(META, {"optical": LayerInput(str(path))})
    assert str(raised.value) == (
        f"the optical layer '{path}' has 1 band(s) but the model needs 3 (red, green, blue); it is a "
        "colour-indexed (palette) image: expand its colours into red, green and blue bands first (Raster ▸ "
        "Conversion ▸ PCT to RGB in QGIS, or gdal_translate -expand rgb)")


def test_no_layer_is_refused():
    with pytest.raises(EngineError, match="at least one input layer"):
        bind_modalities(META, {})


def test_dsm_without_dtm_gets_an_estimated_dtm_for_an_ndsm_model(rasters):
    sources, messages = bind_modalities(META, {"elevation": LayerInput(rasters["dsm"], elevation_type="dsm")})
    assert sources[0].estimate_ground and not sources[0].subtract_path
    assert any("minus a DTM estimated from it (ground filter) = nDSM" in m for m in messages)


def test_dsm_minus_dtm_gives_the_ndsm(rasters, tmp_path):
    package = load_package(make_pixelwise(tmp_path / "m"))
    layers = {"optical": LayerInput(rasters["rgbn"]), "elevation": LayerInput(rasters["dsm"]),
              "dtm": LayerInput(rasters["dtm"])}
    sources, messages = bind_modalities(package.metadata, layers)
    assert sources[1].subtract_path == rasters["dtm"]
    assert any("= nDSM" in m for m in messages)
    report = run_segmentation(sources, package, GridRequest(),
                              OutputPaths(str(tmp_path / "c.tif"), str(tmp_path / "r.tif")))
    robustness = read(tmp_path / "r.tif")[0]
    # pixelwise fixture: ndsm share = exp(h / 20) / (exp(h / 20) + exp(mean optical / 255))
    optical_mean = np.arange(4 * 20 * 30).reshape(4, 20, 30)[:3] % 255
    ndsm = np.where(np.arange(30) < 10, 0.0, 10.0)[None, :].repeat(20, 0)
    share = np.exp(ndsm / 20) / (np.exp(ndsm / 20) + np.exp(optical_mean.mean(0) / 255))
    assert np.abs(robustness[1] - share).max() < 1e-5
    assert report.modalities == ["optical", "ndsm"]


def test_required_modality_missing_is_refused(rasters):
    meta = base_metadata("m", {"type": "minmax", "min": [0] * 3, "max": [255] * 3},
                         {"type": "minmax", "min": [0], "max": [20]})
    meta["modalities"][1]["required"] = True
    with pytest.raises(EngineError, match="requires an elevation layer"):
        bind_modalities(parse_metadata(meta), {"optical": LayerInput(rasters["rgbn"])})
