"""False-colour infrared optical layers (NIR, red, green): bound as what they are, never NIR as red."""
import numpy as np
import pytest

from modalseg.engine import EngineError, GridRequest, LayerInput, OutputPaths, bind_modalities, load_package, \
    run_segmentation
from modalseg.engine.model_choice import choose_package
from modalseg.engine.package import parse_metadata
from tests.fixtures.onnx_models import base_metadata, make_pixelwise
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.rasters import read, smooth_field, write_raster

GT = (500000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0)
MINMAX = {"type": "minmax", "min": [0] * 3, "max": [255] * 3}
META = parse_metadata(base_metadata("rgb-model", MINMAX, {"type": "minmax", "min": [0], "max": [20]}))


def _with_nir(name: str) -> dict:
    meta = base_metadata(name, MINMAX, {"type": "minmax", "min": [0], "max": [20]})
    meta["modalities"].append({"name": "nir", "kind": "nir", "bands": 1, "band_names": ["near-infrared"],
                               "normalization": {"type": "minmax", "min": [0], "max": [255]}})
    return meta


@pytest.fixture()
def irc(tmp_path):
    """A 4-band false-colour layer (NIR, red, green, and a spare band), and the true-colour file it stands for
    (uint16: a 4-band 8-bit GeoTIFF would make its band 4 an alpha mask)."""
    bands = (np.stack([smooth_field((40, 50), s) for s in (1, 2, 3, 4)]) * 255).astype(np.uint16)
    pseudo_rgb = np.stack([bands[1], bands[2], bands[2]])
    return {"irc": str(write_raster(tmp_path / "irc.tif", bands, 32631, GT)),
            "pseudo_rgb": str(write_raster(tmp_path / "pseudo_rgb.tif", pseudo_rgb, 32631, GT)),
            "nir": str(write_raster(tmp_path / "nir.tif", bands[:1], 32631, GT)),
            "single": str(write_raster(tmp_path / "single.tif", bands[:1], 32631, GT))}


def test_red_and_green_feed_the_model_blue_is_estimated_and_the_unused_nir_is_named(irc):
    sources, messages = bind_modalities(META, {"optical": LayerInput(irc["irc"], optical_type="irc")})
    assert [(s.modality, s.bands, s.estimate_blue) for s in sources] == [("optical", (2, 3), True)]
    log = "\n".join(messages)
    assert "Warning: the optical layer" in log and "is false-colour infrared (bands 1,2,3 as near-infrared, red, " \
        "green)" in log and "blue, which it does not have, is estimated as a copy of green" in log, log
    assert f"Warning: band 1 (near-infrared) of the false-colour optical layer '{irc['irc']}' is not used: model " \
        "'rgb-model' takes no NIR input; no bundled model uses it" in log, log
    assert f"Warning: bands 4-4 of the optical layer '{irc['irc']}' are not used" in log, log
    assert "bands 2,3 as red, green; blue estimated as a copy of green" in log, log


def test_chosen_bands_are_near_infrared_red_green_in_that_order(irc):
    sources, messages = bind_modalities(META, {"optical": LayerInput(irc["irc"], bands=(4, 1, 2), optical_type="irc")})
    assert sources[0].bands == (1, 2)
    assert "band 4 (near-infrared)" in "\n".join(messages)
    with pytest.raises(EngineError, match=r"was given 2 band\(s\) \(1,2\); give 3, in the order near-infrared, red, "
                                          r"green"):
        bind_modalities(META, {"optical": LayerInput(irc["irc"], bands=(1, 2), optical_type="irc")})
    with pytest.raises(EngineError, match=r"single\.tif' has 1 band\(s\); band\(s\) 2, 3 do not exist"):
        bind_modalities(META, {"optical": LayerInput(irc["single"], optical_type="irc")})
    with pytest.raises(EngineError, match="optical type must be one of rgb, irc, not 'cir'"):
        bind_modalities(META, {"optical": LayerInput(irc["irc"], optical_type="cir")})


def test_a_model_with_a_nir_input_gets_band_1_unless_a_nir_layer_is_given(irc):
    meta = parse_metadata(_with_nir("nir-model"))
    sources, messages = bind_modalities(meta, {"optical": LayerInput(irc["irc"], optical_type="irc")})
    assert {s.modality: (s.path, s.bands) for s in sources} == {"optical": (irc["irc"], (2, 3)),
                                                                "nir": (irc["irc"], (1,))}
    assert not any("is not used" in m for m in messages), messages
    sources, _ = bind_modalities(meta, {"optical": LayerInput(irc["irc"], optical_type="irc"),
                                        "nir": LayerInput(irc["nir"])})
    assert {s.modality: s.path for s in sources}["nir"] == irc["nir"]


def test_a_model_whose_optical_input_is_not_red_green_blue_is_refused(irc):
    meta = base_metadata("multispectral", MINMAX, {"type": "minmax", "min": [0], "max": [20]})
    meta["modalities"][0]["band_names"] = ["red", "green", "near-infrared"]
    with pytest.raises(EngineError, match="model 'multispectral' takes optical bands red, green, near-infrared; the "
                                          "false-colour infrared layer .* can feed only a red, green, blue input"):
        bind_modalities(parse_metadata(meta), {"optical": LayerInput(irc["irc"], optical_type="irc")})


def test_the_automatic_choice_counts_the_near_infrared_of_a_false_colour_layer(irc):
    candidates = [META, parse_metadata(_with_nir("nir-model"))]
    choice = choose_package(candidates, {"optical": LayerInput(irc["irc"], optical_type="irc")}, "rgb-model")
    assert candidates[choice.index].name == "nir-model", choice.reason
    choice = choose_package(candidates, {"optical": LayerInput(irc["irc"])}, "rgb-model")
    assert candidates[choice.index].name == "rgb-model", choice.reason


def test_the_map_is_the_one_of_red_green_and_green_as_blue(irc, tmp_path):
    package = load_package(make_pixelwise(tmp_path / "pixelwise"))
    maps = {}
    for name, layer in (("irc", LayerInput(irc["irc"], optical_type="irc")), ("rgb", LayerInput(irc["pseudo_rgb"]))):
        sources, _ = bind_modalities(package.metadata, {"optical": layer})
        report = run_segmentation(sources, package, GridRequest(), OutputPaths(str(tmp_path / f"classes-{name}.tif")))
        maps[name] = read(report.outputs["classes"])[0]
    assert len(np.unique(maps["rgb"])) > 1
    assert np.array_equal(maps["irc"], maps["rgb"])


def test_declared_false_colour_beats_nir_read_as_red_on_the_held_out_orthophoto(shared_data, tmp_path):
    """The BD ORTHO area has an RGB and an IRC image of the same ground (benchmarks/false_colour)."""
    from benchmarks.false_colour import WAYS, area_figures
    from modalseg.models.held_out import OPTICAL_GROUP, held_out_areas

    package = load_package(REPO_ROOT / "resources" / "models" / "modalseg-optical-urban")
    area = next(a for a in held_out_areas(package.metadata.classes, cache=tmp_path / "cache", log=lambda t: None)
                if a.group == OPTICAL_GROUP)
    scores = {way: area_figures(package, area, ("optical",), WAYS[way], tmp_path)["miou"]
              for way in ("IRC as true colour", "IRC declared")}
    assert scores["IRC declared"] >= scores["IRC as true colour"] + 10, scores
