"""Awkward and broken inputs in the engine: outputs that are inputs, damaged files, unwritable
folders, south-up / rotated / CRS-less grids, unused layers and the automatic model choice.

Every raster here is the real IGN LiDAR HD demo tile (resources/demo) or made from it with GDAL.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import (EngineError, GridRequest, LayerInput, OutputPaths, bind_modalities, check_outputs,
                             choose_package, create_output_folders, describe_package, list_packages, load_package,
                             open_raster, parse_band_list, remove_created_folders, run_segmentation)
from modalseg.engine.package import parse_metadata
from tests.fixtures.paths import REFERENCE_PACKAGE, REPO_ROOT

DEMO = REPO_ROOT / "resources" / "demo" / "lidarprod_870000_6618000"
BUNDLED = REPO_ROOT / "resources" / "models"
DEFAULT = "modalseg-sgma-urban"


def _layer(kind: str) -> str:
    return f"{DEMO}_{kind}.tif"


@pytest.fixture(scope="module")
def reference():
    return load_package(REFERENCE_PACKAGE)


@pytest.fixture(scope="module")
def bundled():
    return [meta for _, meta in list_packages(BUNDLED)]


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def _run(package, layers, out: Path, **outputs):
    sources, _ = bind_modalities(package.metadata, layers)
    if not out.exists():
        out.mkdir()
    paths = OutputPaths(**{"classes": str(out / "classes.tif"), **outputs})
    return run_segmentation(sources, package, GridRequest(), paths)


def _copy(src: str, dst: Path, **translate) -> Path:
    gdal.Translate(str(dst), src, **translate)
    return dst


# -- outputs that are inputs ----------------------------------------------------------------------

def test_output_equal_to_an_input_is_refused_before_anything_is_read(reference, tmp_path):
    optical = _copy(_layer("rgb"), tmp_path / "ortho.tif")
    before = _digest(optical)
    with pytest.raises(EngineError, match=r"the classes output '.*ortho\.tif' is the input layer '.*ortho\.tif'; "
                                          r"writing it would destroy that input"):
        _run(reference, {"optical": LayerInput(str(optical))}, tmp_path, classes=str(optical))
    assert _digest(optical) == before
    assert _leftovers(tmp_path) == ["ortho.tif"]


def test_outputs_resolving_to_an_input_through_links_are_refused(reference, tmp_path):
    dtm = _copy(_layer("dtm"), tmp_path / "dtm.tif")
    dsm = _copy(_layer("dsm"), tmp_path / "dsm.tif")
    (tmp_path / "link.tif").symlink_to(dtm)
    os.link(dsm, tmp_path / "hard.tif")
    before = {p.name: _digest(p) for p in (dtm, dsm)}
    layers = {"elevation": LayerInput(str(dsm), elevation_type="dsm"), "dtm": LayerInput(str(dtm))}
    with pytest.raises(EngineError, match=r"the robustness output '.*link\.tif' is the input layer '.*dtm\.tif'"):
        _run(reference, layers, tmp_path, robustness=str(tmp_path / "link.tif"))
    with pytest.raises(EngineError, match=r"the classes output '.*hard\.tif' is the input layer '.*dsm\.tif'"):
        _run(reference, layers, tmp_path, classes=str(tmp_path / "hard.tif"))
    assert {p.name: _digest(p) for p in (dtm, dsm)} == before
    assert _leftovers(tmp_path) == ["dsm.tif", "dtm.tif", "hard.tif", "link.tif"]


def test_two_outputs_in_one_file_and_folder_outputs_are_refused(tmp_path):
    same = str(tmp_path / "a.tif")
    with pytest.raises(EngineError, match="the classes and confidence outputs are the same file"):
        check_outputs(OutputPaths(classes=same, confidence=str(tmp_path / "." / "a.tif")), [_layer("rgb")])
    with pytest.raises(EngineError, match="is a folder; give it a file name"):
        check_outputs(OutputPaths(classes=str(tmp_path)), [_layer("rgb")])
    check_outputs(OutputPaths(classes=same, robustness=str(tmp_path / "b.tif")), [_layer("rgb")])


# -- damaged files and unwritable folders -----------------------------------------------------------

@pytest.fixture()
def broken(tmp_path):
    """A text file renamed .tif, a GeoTIFF cut after its header, and one whose tiles are cut off."""
    text = tmp_path / "notes.tif"
    text.write_text("field notes, not a raster\n")
    header = tmp_path / "header_only.tif"
    header.write_bytes(Path(_layer("rgb")).read_bytes()[:1024])
    tiled = _copy(_layer("dsm"), tmp_path / "tiled.tif", creationOptions=["TILED=YES", "BLOCKXSIZE=64",
                                                                          "BLOCKYSIZE=64"])
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(tiled.read_bytes()[:tiled.stat().st_size // 2])
    tiled.unlink()
    return {"text": text, "header": header, "truncated": truncated}


def test_files_gdal_cannot_open_are_named_with_the_cause(broken, tmp_path):
    with pytest.raises(EngineError, match=r"^'.*notes\.tif' exists but is not a raster GDAL can open"):
        open_raster(str(broken["text"]))
    with pytest.raises(EngineError, match=r"^cannot read '.*header_only\.tif': the file is damaged"):
        open_raster(str(broken["header"]))
    with pytest.raises(EngineError, match=r"^raster '.*missing\.tif' does not exist$"):
        open_raster(str(tmp_path / "missing.tif"))


def test_a_truncated_geotiff_stops_the_run_with_one_sentence_and_leaves_nothing(reference, broken, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    layers = {"optical": LayerInput(_layer("rgb")), "elevation": LayerInput(str(broken["truncated"]),
                                                                            elevation_type="ndsm")}
    with pytest.raises(EngineError, match=r"^cannot read '.*truncated\.tif': the file is damaged \(.*\)$"):
        _run(reference, layers, out, robustness=str(out / "robustness.tif"))
    assert _leftovers(out) == []


def test_unwritable_output_folders_say_why_and_leave_nothing(reference, tmp_path):
    layers = {"optical": LayerInput(_layer("rgb"))}
    # root ignores permission bits, but not sysfs: creating a file there is refused for everyone
    with pytest.raises(EngineError, match=r"^cannot write into '/sys': permission denied$"):
        _run(reference, layers, Path("/sys"))
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is expected")
    outputs = OutputPaths(classes=str(tmp_path / "new" / "classes.tif"),
                          robustness=str(blocker / "sub" / "robustness.tif"))
    with pytest.raises(EngineError, match=r"^cannot write into '.*notes\.txt/sub': '.*notes\.txt' is a file, "
                                          r"not a folder$"):
        create_output_folders(outputs)
    assert _leftovers(tmp_path) == ["notes.txt"]  # the folder made for the first output is gone again
    created = create_output_folders(OutputPaths(classes=str(tmp_path / "a" / "b" / "classes.tif")))
    assert created == [tmp_path / "a", tmp_path / "a" / "b"]
    remove_created_folders(created)
    assert _leftovers(tmp_path) == ["notes.txt"]


# -- grids ------------------------------------------------------------------------------------------

def _south_up(src: str, dst: Path) -> Path:
    """The same raster stored bottom row first (positive pixel height), as some tools write it."""
    ds = gdal.Open(src)
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    out = gdal.GetDriverByName("GTiff").Create(str(dst), ds.RasterXSize, ds.RasterYSize, ds.RasterCount,
                                               ds.GetRasterBand(1).DataType)
    out.SetGeoTransform((x0, px, 0.0, y0 + py * ds.RasterYSize, 0.0, -py))
    out.SetProjection(ds.GetProjection())
    for i in range(ds.RasterCount):
        band = ds.GetRasterBand(i + 1)
        if band.GetNoDataValue() is not None:
            out.GetRasterBand(i + 1).SetNoDataValue(band.GetNoDataValue())
        out.GetRasterBand(i + 1).WriteArray(band.ReadAsArray()[::-1])
    out = ds = None
    return dst


def _classes(report) -> np.ndarray:
    ds = gdal.Open(report.outputs["classes"])
    data, gt, wkt = ds.ReadAsArray(), ds.GetGeoTransform(), ds.GetProjection()
    ds = None
    return data, gt, wkt


def test_a_south_up_dsm_is_read_like_its_north_up_original(reference, tmp_path):
    south = _south_up(_layer("ndsm"), tmp_path / "ndsm_south_up.tif")
    north = _run(reference, {"optical": LayerInput(_layer("rgb")),
                             "elevation": LayerInput(_layer("ndsm"), elevation_type="ndsm")}, tmp_path / "n")
    flipped = _run(reference, {"optical": LayerInput(_layer("rgb")),
                               "elevation": LayerInput(str(south), elevation_type="ndsm")}, tmp_path / "s")
    a, gt_a, _ = _classes(north)
    b, gt_b, _ = _classes(flipped)
    assert gt_a == gt_b
    assert np.array_equal(a, b)


def test_a_rotated_optical_layer_defines_a_north_up_grid(reference, tmp_path):
    ds = gdal.Open(_layer("rgb"))
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    rotated = _copy(_layer("rgb"), tmp_path / "rotated.tif")
    out = gdal.Open(str(rotated), gdal.GA_Update)
    out.SetGeoTransform((x0, px * 0.98, px * 0.2, y0, px * 0.2, py * 0.98))  # about 11.5 degrees
    out = ds = None
    report = _run(reference, {"optical": LayerInput(str(rotated))}, tmp_path / "out")
    classes, gt, _ = _classes(report)
    assert gt[2] == 0 and gt[4] == 0 and gt[5] < 0
    assert classes.shape[1] > 200 and (classes != 0).sum() > 0.9 * 200 * 125  # the whole tile, plus corners


def _without_crs(src: str, dst: Path) -> Path:
    path = _copy(src, dst)
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.SetProjection("")
    ds = None
    assert not gdal.Open(str(path)).GetProjection()
    return path


def test_layers_without_any_crs_run_in_their_own_coordinates_with_a_warning(reference, tmp_path):
    optical = _without_crs(_layer("rgb"), tmp_path / "rgb.tif")
    ndsm = _without_crs(_layer("ndsm"), tmp_path / "ndsm.tif")
    with_crs = _run(reference, {"optical": LayerInput(_layer("rgb")),
                                "elevation": LayerInput(_layer("ndsm"), elevation_type="ndsm")}, tmp_path / "a")
    without = _run(reference, {"optical": LayerInput(str(optical)),
                               "elevation": LayerInput(str(ndsm), elevation_type="ndsm")}, tmp_path / "b")
    assert any("no input layer has a coordinate reference system" in w for w in without.warnings)
    a, gt_a, wkt_a = _classes(with_crs)
    b, gt_b, wkt_b = _classes(without)
    assert wkt_a and not wkt_b
    assert gt_a == gt_b and np.array_equal(a, b)


def test_a_layer_without_crs_beside_layers_with_one_is_named(reference, tmp_path):
    ndsm = _without_crs(_layer("ndsm"), tmp_path / "ndsm.tif")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EngineError, match=r"^'.*ndsm\.tif' has no coordinate reference system while the other "
                                          r"layers have one"):
        _run(reference, {"optical": LayerInput(_layer("rgb")),
                         "elevation": LayerInput(str(ndsm), elevation_type="ndsm")}, out)
    assert _leftovers(out) == []


# -- band lists ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, bands", [("4,3,2", (4, 3, 2)), ("4;3;2", (4, 3, 2)), (" 4 3 2 ", (4, 3, 2)),
                                          ([4, 3, 2], (4, 3, 2)), (["4", "3", "2"], (4, 3, 2)), (2, (2,)),
                                          ("", None), (None, None)])
def test_band_lists_in_the_forms_users_type(value, bands):
    assert parse_band_list(value, "OPTICAL_BANDS") == bands


@pytest.mark.parametrize("value", ["abc", "4,x,2", "0", "-1", "4.5"])
def test_band_lists_that_are_not_band_numbers_are_refused(value):
    with pytest.raises(EngineError, match=f"OPTICAL_BANDS '{value}' is not a band list"):
        parse_band_list(value, "OPTICAL_BANDS")


# -- unused layers and the automatic choice -----------------------------------------------------------

def test_unused_layers_and_bands_are_named_in_warnings(reference, bundled, tmp_path):
    five = tmp_path / "five_bands.tif"  # the orthophoto's RGB plus two more bands (the DSM and DTM)
    rgb = gdal.Open(_layer("rgb")).ReadAsArray().astype(np.float32)
    heights = np.stack([gdal.Open(_layer(k)).ReadAsArray() for k in ("dsm", "dtm")]).astype(np.float32)
    gdal.Translate(str(five), _layer("rgb"), outputType=gdal.GDT_Float32, bandList=[1, 2, 3, 1, 1])
    ds = gdal.Open(str(five), gdal.GA_Update)
    for i, band in enumerate(np.concatenate([rgb, heights])):
        ds.GetRasterBand(i + 1).WriteArray(band)
    ds = None
    layers = {"optical": LayerInput(str(five)), "sar": LayerInput(_layer("dsm")), "nir": LayerInput(_layer("dtm")),
              "dtm": LayerInput(_layer("dtm"))}
    sources, messages = bind_modalities(reference.metadata, layers, bundled)
    assert [s.bands for s in sources] == [(1, 2, 3)]
    warnings = [m for m in messages if m.startswith("Warning: ")]
    assert len(warnings) == 4, messages
    assert (f"Warning: bands 4-5 of the optical layer '{five}' are not used: model 'modalseg-reference' reads "
            "bands 1-3 as red, green, blue (choose others in the band selection); no bundled model uses it") \
        in warnings
    assert (f"Warning: the SAR layer '{_layer('dsm')}' is not used: model 'modalseg-reference' takes no SAR "
            "input; model 'modalseg-flood-s1s2' would use it") in warnings
    assert any(w.startswith(f"Warning: the NIR layer '{_layer('dtm')}' is not used") for w in warnings)
    assert (f"Warning: the DTM '{_layer('dtm')}' is not used: a DTM only turns a DSM into heights above ground, "
            "and no DSM (elevation layer) was given") in warnings
    # chosen bands are the analyst's decision: no warning about the others
    _, messages = bind_modalities(reference.metadata, {"optical": LayerInput(str(five), bands=(3, 2, 1))},
                                  bundled)
    assert not [m for m in messages if m.startswith("Warning: ")]


def _sar_package(bundled):
    """A package that takes SAR as well (metadata only: the choice reads no graph)."""
    meta = json.loads((BUNDLED / DEFAULT / f"{DEFAULT}.json").read_text())
    meta["name"] = "sar-urban"
    meta["modalities"].append({"name": "sar", "kind": "sar", "bands": 2, "band_names": ["VV", "VH"],
                               "normalization": {"type": "percentile"}})
    return parse_metadata(meta)


def test_automatic_choice_takes_the_package_using_most_layers(bundled):
    layers = {"optical": LayerInput(_layer("rgb")), "elevation": LayerInput(_layer("ndsm")),
              "sar": LayerInput(_layer("dsm"))}
    choice = choose_package(bundled, layers, DEFAULT)
    # the urban packages use optical + elevation: the best held-out figure for both wins; flood
    # (optical + SAR) ties too, but its mIoU is over other classes, and dual-urban's figures are
    # optimistic (it trained on the held-out tiles): neither is compared
    assert bundled[choice.index].name == "modalseg-optical-urban"
    assert choice.reason.startswith("model (automatic): modalseg-optical-urban ")
    assert "uses 2 of the 3 given layer(s) (optical, elevation)" in choice.reason
    assert choice.reason.endswith(f"3 other bundled model(s) use as many, and it has the best held-out mIoU for "
                                  f"these layers: 89.0 ({DEFAULT} 86.1)")
    candidates = bundled + [_sar_package(bundled)]
    choice = choose_package(candidates, layers, DEFAULT)
    assert candidates[choice.index].name == "sar-urban"
    assert "uses 3 of the 3 given layer(s) (optical, elevation, SAR); no other bundled model uses as many" \
        in choice.reason
    _, messages = bind_modalities(bundled[0], layers, candidates)
    assert any("the SAR layer" in m and "'modalseg-flood-s1s2', 'sar-urban' would use it" in m for m in messages)


def _with_held_out(meta, name, subsets, optimistic=False):
    data = meta.to_dict()
    data["name"] = name
    data["metrics"] = {"held_out": {"subsets": {k: {"miou": v} for k, v in subsets.items()}, "optimistic": optimistic}}
    return parse_metadata(json.loads(json.dumps(data)))


def test_automatic_choice_breaks_ties_by_held_out_accuracy_for_the_layers_in_use(bundled):
    default = next(meta for meta in bundled if meta.name == DEFAULT)
    optical_first = _with_held_out(default, "optical-first", {"optical": 65.0, "ndsm": 48.0, "optical+ndsm": 90.0})
    candidates = [default, optical_first]
    choice = choose_package(candidates, {"optical": LayerInput(_layer("rgb"))}, DEFAULT)
    assert candidates[choice.index].name == "optical-first"
    assert choice.reason.endswith(f"and it has the best held-out mIoU for these layers: 65.0 ({DEFAULT} 25.2)")
    choice = choose_package(candidates, {"elevation": LayerInput(_layer("ndsm"))}, DEFAULT)
    assert candidates[choice.index].name == DEFAULT  # 57.3 against 48.0 from an nDSM
    assert choice.reason.endswith("these layers: 57.3 (optical-first 48.0)")
    equal = _with_held_out(default, "equal", {"optical": 25.2})
    choice = choose_package([equal, default], {"optical": LayerInput(_layer("rgb"))}, DEFAULT)
    assert choice.index == 1  # equal figures: the default
    seen = _with_held_out(default, "seen", {"optical": 99.0}, optimistic=True)  # trained on the held-out tiles
    choice = choose_package([seen, default, optical_first], {"optical": LayerInput(_layer("rgb"))}, DEFAULT)
    assert choice.index == 2 and choice.reason.endswith(f"65.0 ({DEFAULT} 25.2)")
    unmeasured = _with_held_out(default, "unmeasured", {})
    choice = choose_package([unmeasured, default], {"optical": LayerInput(_layer("rgb"))}, DEFAULT)
    assert choice.index == 1 and "ties go to the default" in choice.reason


def test_automatic_choice_fails_when_no_package_uses_any_layer(bundled):
    with pytest.raises(EngineError, match=r"^none of the bundled models uses the given layers \(NIR\); they "
                                          r"take optical, elevation and SAR layers"):
        choose_package(bundled, {"nir": LayerInput(_layer("dtm"))}, DEFAULT)


def test_package_labels_name_inputs_and_accuracy_per_subset(bundled):
    """The model list shows held-out figures (what segment logs), fullest input set first; a package
    without them shows its validation strips, named as such."""
    from modalseg.engine.model_choice import validation_label

    sgma = next(meta for meta in bundled if meta.name == DEFAULT)
    label = describe_package(sgma)
    held = {k: row["miou"] for k, row in sgma.metrics["held_out"]["subsets"].items()}
    assert label == (f"{DEFAULT} {sgma.version}: optical RGB and/or nDSM; held-out mIoU: optical+nDSM "
                     f"{held['optical+ndsm']:.1f}, " + ", ".join(
                         f"{name} {miou:.1f}" for name, miou in sorted(
                             [("nDSM", held["ndsm"]), ("optical", held["optical"])], key=lambda item: -item[1])))
    towns = sgma.metrics["validation"]["towns"]["subsets"]["ndsm"]["miou"]
    both = sgma.metrics["validation"]["rgb_tiles"]["subsets"]["optical+ndsm"]["miou"]
    strips = validation_label(sgma)
    assert strips.startswith(f"validation mIoU RGB tiles: optical+nDSM {100 * both:.1f}, ")
    assert strips.endswith(f"; towns: nDSM {100 * towns:.1f}")
    assert describe_package(load_package(REFERENCE_PACKAGE).metadata).endswith("; no accuracy figures")
    assert all(meta.name != "modalseg-reference" for meta in bundled)  # test networks are not bundled
