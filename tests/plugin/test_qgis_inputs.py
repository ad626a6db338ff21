"""``modalseg:segment`` on awkward inputs, through processing.run and qgis_process: outputs that
are inputs, damaged files, unwritable folders, band lists as typed, unused layers, the automatic
model choice and the model list, south-up and CRS-less grids. Rasters: the IGN LiDAR HD demo
tile, or files made from it with GDAL."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from tests.plugin.helpers import DEMO_DIR, DEMO_STEM, REPO_ROOT, read_raster, recording_feedback

DEFAULT = "modalseg-sgma-urban"


def _layer(kind: str) -> str:
    return str(DEMO_DIR / f"{DEMO_STEM}_{kind}.tif")



@pytest.fixture()
def segment(qgis_app):
    """processing.run of segment with the automatic model; returns (results, feedback) or raises."""
    import processing

    def run(**parameters):
        feedback = recording_feedback()
        return processing.run("modalseg:segment", parameters, feedback=feedback), feedback

    return run


def _failure(segment, **parameters) -> str:
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as caught:
        segment(**parameters)
    message = str(caught.value)
    assert "Traceback" not in message
    return message


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _copy(src: str, dst: Path, **translate) -> str:
    gdal.Translate(str(dst), src, **translate)
    return str(dst)


def test_output_set_to_the_optical_input_is_refused_and_the_input_kept(segment, tmp_path):
    ortho = _copy(_layer("rgb"), tmp_path / "ortho.tif")
    before = _digest(ortho)
    message = _failure(segment, OPTICAL=ortho, ELEVATION=_layer("ndsm"), OUTPUT=ortho,
                       ROBUSTNESS=str(tmp_path / "robustness.tif"))
    assert re.search(r"the classes output '.*ortho\.tif' is the input layer '.*ortho\.tif'; writing it would "
                     r"destroy that input", message), message
    assert _digest(ortho) == before and read_raster(ortho)["count"] == 3
    message = _failure(segment, OPTICAL=ortho, ELEVATION=_layer("dsm"), DTM=_layer("dtm"),
                       OUTPUT=str(tmp_path / "classes.tif"), ROBUSTNESS=_layer("dtm"))
    assert "the robustness output" in message and "is the input layer" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ortho.tif"]


def test_files_that_are_not_rasters_say_so_instead_of_not_found(segment, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("field notes, not a raster\n")
    header = tmp_path / "header_only.tif"
    header.write_bytes(Path(_layer("rgb")).read_bytes()[:1024])
    out = tmp_path / "out"
    message = _failure(segment, OPTICAL=str(text), OUTPUT=str(out / "classes.tif"))
    assert re.search(r"OPTICAL: '.*notes\.tif' exists but is not a raster GDAL can open", message), message
    assert "not found" not in message
    message = _failure(segment, OPTICAL=_layer("rgb"), ELEVATION=str(header), OUTPUT=str(out / "classes.tif"))
    assert re.search(r"ELEVATION: Cannot read '.*header_only\.tif': the file is damaged", message), message
    assert not out.exists()


def test_a_truncated_geotiff_gives_one_sentence_and_leaves_nothing(segment, tmp_path):
    tiled = Path(_copy(_layer("ndsm"), tmp_path / "tiled.tif",
                       creationOptions=["TILED=YES", "BLOCKXSIZE=64", "BLOCKYSIZE=64"]))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(tiled.read_bytes()[:tiled.stat().st_size // 2])
    tiled.unlink()
    out = tmp_path / "out"
    message = _failure(segment, OPTICAL=_layer("rgb"), ELEVATION=str(truncated), ELEVATION_TYPE=2,
                       OUTPUT=str(out / "classes.tif"), ROBUSTNESS=str(out / "robustness.tif"))
    assert re.search(r"cannot read '.*truncated\.tif': the file is damaged", message), message
    assert not out.exists()  # the folder made for the outputs is removed again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.tif"]


def test_unwritable_output_folders_give_the_cause(segment, tmp_path):
    message = _failure(segment, OPTICAL=_layer("rgb"), OUTPUT="/sys/classes.tif")
    assert "cannot write into '/sys': permission denied" in message, message
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    message = _failure(segment, OPTICAL=_layer("rgb"), OUTPUT=str(tmp_path / "new" / "classes.tif"),
                       ROBUSTNESS=str(blocker / "robustness.tif"))
    assert re.search(r"cannot write into '.*notes\.txt': '.*notes\.txt' is a file, not a folder", message), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("bands", ["3,2,1", "3;2;1", [3, 2, 1], ["3", "2", "1"]])
def test_band_lists_in_every_form_are_used(segment, tmp_path, bands):
    results, feedback = segment(OPTICAL=_layer("rgb"), OPTICAL_BANDS=bands, OUTPUT=str(tmp_path / "classes.tif"))
    assert any(line.startswith("bound optical ← ") and line.endswith("(bands 3,2,1)") for line in feedback.infos), \
        feedback.infos
    assert Path(results["OUTPUT"]).exists()


@pytest.mark.parametrize("bands, expected", [("abc", "OPTICAL_BANDS 'abc' is not a band list"),
                                             ("4,3,2", "has 3 band(s); band(s) 4 do not exist"),
                                             ("2,1", "was given 2 band(s) (2,1) but the model needs 3")])
def test_band_lists_that_cannot_work_stop_the_run(segment, tmp_path, bands, expected):
    message = _failure(segment, OPTICAL=_layer("rgb"), OPTICAL_BANDS=bands, OUTPUT=str(tmp_path / "classes.tif"))
    assert expected in message, message
    assert list(tmp_path.iterdir()) == []


def test_band_lists_from_qgis_process(qgis_process, tmp_path):
    classes = tmp_path / "classes.tif"
    result = qgis_process(["run", "modalseg:segment", "--json", "--", f"OPTICAL={_layer('rgb')}",
                           "OPTICAL_BANDS=3,2,1", f"OUTPUT={classes}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bound = [line for line in json.loads(result.stdout)["log"]["info"] if line.startswith("bound optical")]
    assert bound and bound[0].endswith("(bands 3,2,1)"), bound
    classes.unlink()
    result = qgis_process(["run", "modalseg:segment", "--", f"OPTICAL={_layer('rgb')}", "OPTICAL_BANDS=abc",
                           f"OUTPUT={classes}"])
    assert result.returncode != 0
    assert "OPTICAL_BANDS 'abc' is not a band list" in result.stdout + result.stderr
    assert not classes.exists()


def test_unused_layers_are_warned_about_and_the_choice_is_logged(segment, tmp_path):
    results, feedback = segment(OPTICAL=_layer("rgb"), SAR=_layer("dsm"), NIR=_layer("dtm"), DTM=_layer("dtm"),
                                OUTPUT=str(tmp_path / "classes.tif"))
    assert any(line.startswith("Model (automatic): modalseg-flood-s1s2 ")
               and "uses 2 of the 4 given layer(s) (optical, SAR)" in line
               and "it is the only bundled model that takes the SAR layer" in line
               for line in feedback.infos), feedback.infos
    warnings = "\n".join(feedback.warnings)
    assert re.search(r"the NIR layer '.*_dtm\.tif' is not used: model 'modalseg-flood-s1s2' takes no NIR input; "
                     r"no bundled model uses it", warnings), warnings
    assert "a DTM only turns a DSM into heights above ground, and no DSM (elevation layer) was given" in warnings
    assert Path(results["OUTPUT"]).exists()


def test_layers_no_bundled_model_uses_stop_the_automatic_choice(segment, tmp_path):
    message = _failure(segment, NIR=_layer("dtm"), OUTPUT=str(tmp_path / "classes.tif"))
    assert "none of the bundled models uses the given layers (NIR); they take optical, elevation and SAR layers" \
        in message, message
    assert list(tmp_path.iterdir()) == []


def test_model_list_starts_with_automatic_and_shows_inputs_and_accuracy(qgis_app):
    from qgis.core import QgsApplication

    from modalseg.engine import describe_package, list_packages
    from modalseg.processing_provider.model_inputs import AUTOMATIC_MODEL, BUNDLED_MODELS_DIR

    for algorithm_id in ("modalseg:segment", "modalseg:finetune"):
        definition = QgsApplication.processingRegistry().algorithmById(algorithm_id).parameterDefinition("MODEL")
        options = definition.options()
        assert definition.defaultValue() == 0 and options[0] == AUTOMATIC_MODEL
        bundled = sorted(list_packages(BUNDLED_MODELS_DIR), key=lambda found: found[1].name != DEFAULT)
        assert options[1:] == [describe_package(meta) for _, meta in bundled]
        assert options[1].startswith(f"{DEFAULT} 3.0.0: optical RGB and/or nDSM; held-out mIoU: optical+nDSM 86.1")
        assert all("mIoU" in option for option in options[1:])
        assert not any("reference" in option for option in options)  # test networks are not offered
    help_text = QgsApplication.processingRegistry().algorithmById("modalseg:segment").shortHelpString()
    for said in ("<i>Automatic</i> (the default)", "held-out mIoU per input subset", "<i>4,3,2</i> or <i>4;3;2</i>",
                 "named in a warning", "south-up or rotated", "one of the input files (links included)"):
        assert said in help_text, said


def test_saved_model_keeps_its_meaning(segment, tmp_path):
    """segment_class_areas.model3 stores MODEL = 0: once the default package, now 'Automatic',
    which picks the package with the best held-out figure for the optical + elevation layers the
    model takes, and says why."""
    model3 = (REPO_ROOT / "resources" / "segment_class_areas.model3").read_text()
    static = re.search(r'name="MODEL">\s*<Option type="Map">\s*<Option type="int" value="2" name="source"/>\s*'
                       r'<Option type="int" value="(\d+)" name="static_value"/>', model3)
    assert static and static.group(1) == "0"
    _, feedback = segment(OPTICAL=_layer("rgb"), ELEVATION=_layer("ndsm"), MODEL=0, OUTPUT=str(tmp_path / "c.tif"))
    assert any(line.startswith("Model: modalseg-optical-urban 1.0.0") for line in feedback.infos), feedback.infos
    assert any(line.startswith("Model (automatic): modalseg-optical-urban 1.0.0") and "best held-out mIoU" in line
               for line in feedback.infos), feedback.infos


def _south_up(src: str, dst: Path) -> str:
    ds = gdal.Open(src)
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    out = gdal.GetDriverByName("GTiff").Create(str(dst), ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Float32)
    out.SetGeoTransform((x0, px, 0.0, y0 + py * ds.RasterYSize, 0.0, -py))
    out.SetProjection(ds.GetProjection())
    out.GetRasterBand(1).WriteArray(ds.GetRasterBand(1).ReadAsArray()[::-1])
    out = ds = None
    return str(dst)


def test_a_south_up_dsm_gives_the_map_of_its_north_up_original(segment, tmp_path):
    south = _south_up(_layer("ndsm"), tmp_path / "ndsm_south_up.tif")
    north, _ = segment(OPTICAL=_layer("rgb"), ELEVATION=_layer("ndsm"), ELEVATION_TYPE=2,
                       OUTPUT=str(tmp_path / "north.tif"))
    flipped, _ = segment(OPTICAL=_layer("rgb"), ELEVATION=south, ELEVATION_TYPE=2, OUTPUT=str(tmp_path / "south.tif"))
    a, b = read_raster(north["OUTPUT"]), read_raster(flipped["OUTPUT"])
    assert a["geotransform"] == b["geotransform"]
    assert np.array_equal(a["data"], b["data"])


def _without_crs(src: str, dst: Path) -> str:
    _copy(src, dst)
    ds = gdal.Open(str(dst), gdal.GA_Update)
    ds.SetProjection("")
    ds = None
    return str(dst)


def test_layers_without_crs_run_with_a_warning_or_are_named(segment, tmp_path):
    optical = _without_crs(_layer("rgb"), tmp_path / "rgb.tif")
    ndsm = _without_crs(_layer("ndsm"), tmp_path / "ndsm.tif")
    results, feedback = segment(OPTICAL=optical, ELEVATION=ndsm, ELEVATION_TYPE=2, OUTPUT=str(tmp_path / "c.tif"))
    assert any("no input layer has a coordinate reference system" in w for w in feedback.warnings), feedback.warnings
    info = read_raster(results["OUTPUT"])
    assert info["geotransform"] == read_raster(_layer("rgb"))["geotransform"]
    assert not info["srs"].GetName()
    message = _failure(segment, OPTICAL=_layer("rgb"), ELEVATION=ndsm, ELEVATION_TYPE=2,
                       OUTPUT=str(tmp_path / "mixed.tif"))
    assert re.search(r"'.*ndsm\.tif' has no coordinate reference system while the other layers have one", message), \
        message
    assert not (tmp_path / "mixed.tif").exists()
