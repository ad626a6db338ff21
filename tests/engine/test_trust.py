"""segment says when its result cannot be trusted (engine.trust), on real shared data: the held-out
figure of the modality subset in use (and a warning below 50), a pixel size far outside the
package's range, a degenerate class map over a textured input; and none of it on a normal input."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, load_package
from modalseg.engine import run_segmentation
from modalseg.engine.errors import WARNING_PREFIX
from modalseg.engine.package import GsdRange
from modalseg.engine.trust import pixel_size_warning
from modalseg.models.held_out import store_metrics
from tests.engine.conftest import DEFAULT_PACKAGE
from tests.fixtures.onnx_models import make_constant

HINT = "fine-tune it on a few polygons of your area with 'Fine-tune a model on your labels' (modalseg:finetune)"
HELD_OUT = {"protocol": "test figures", "subsets": {
    "optical": {"miou": 26.6, "per_class": {"1": 49.0, "2": 4.2}, "pixels": 48990},
    "ndsm": {"miou": 72.5, "per_class": {"1": 90.0}, "pixels": 47678},
    "optical+ndsm": {"miou": 80.1, "per_class": {"1": 93.4}, "pixels": 48990}}}
TRUST_WARNINGS = ("accuracy of this model is low", "the pixel size", "the class map is degenerate")


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    """The default package with known held-out figures and no false-colour figure (whatever the bundled
    one states today)."""
    folder = tmp_path_factory.mktemp("stamped") / DEFAULT_PACKAGE.name
    shutil.copytree(DEFAULT_PACKAGE, folder)
    sidecar = folder / f"{DEFAULT_PACKAGE.name}.json"
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta.get("metrics", {}).pop("false_colour", None)
    sidecar.write_text(json.dumps(meta), encoding="utf-8")  # store_metrics writes it into the graph too
    store_metrics(load_package(folder), {"held_out": HELD_OUT})
    return load_package(folder)


@pytest.fixture(scope="module")
def constant(tmp_path_factory):
    """Logits that ignore the input: every pixel is class 2, whatever the scene."""
    return load_package(make_constant(tmp_path_factory.mktemp("constant") / "constant"))


def run(package, layers, folder):
    sources, _ = bind_modalities(package.metadata, layers)
    lines = []
    report = run_segmentation(sources, package, GridRequest(), OutputPaths(str(folder / "classes.tif")),
                              RunOptions(threads=1), log=lines.append)
    return lines, report


def test_a_normal_input_gets_its_held_out_figure_and_no_warning(stamped, houses, tmp_path):
    lines, report = run(stamped, {"optical": LayerInput(str(houses["rgb"])),
                                  "elevation": LayerInput(str(houses["ndsm"]), elevation_type="ndsm")}, tmp_path)
    assert ("held-out accuracy of model 'modalseg-sgma-urban' with optical + ndsm input: mIoU 80.1 % on 48,990 "
            "labelled pixels of whole held-out areas") in "\n".join(lines)
    assert not [w for w in report.warnings if any(t in w for t in TRUST_WARNINGS)]


def test_low_held_out_accuracy_of_the_subset_in_use_is_a_warning(stamped, shared_data, tmp_path):
    rgb = shared_data / "point_clouds" / "bdortho_pacasam_792000_6272000_left_rgb_south.tif"
    lines, _ = run(stamped, {"optical": LayerInput(str(rgb))}, tmp_path)
    assert (WARNING_PREFIX + "optical-only accuracy of this model is low (26.6 % mIoU on held-out areas); "
            + HINT) in lines
    assert not any(line.startswith(WARNING_PREFIX + "the pixel size") for line in lines)  # 0.2 m: within 2x of 0.25 m


def test_a_package_without_held_out_figures_says_so(constant, houses, tmp_path):
    lines, _ = run(constant, {"optical": LayerInput(str(houses["rgb"]))}, tmp_path)
    assert ("model 'constant' states no held-out accuracy for optical-only input; its figures on areas it was "
            "trained near (model card) overstate what to expect elsewhere") in lines


def test_pixel_size_more_than_twice_outside_the_range(stamped, shared_data, tmp_path):
    rgb = shared_data / "spacenet6_sar_rgb" / "rgb_unmasked.tif"  # 4.5 m, package range up to 2 m
    lines, report = run(stamped, {"optical": LayerInput(str(rgb))}, tmp_path)
    expected = pixel_size_warning(4.5, stamped.metadata)
    assert expected.startswith("the pixel size (4.5 m) is more than 2 times coarser than the range model "
                               "'modalseg-sgma-urban' was trained for") and expected.endswith(HINT)
    assert expected in report.warnings and WARNING_PREFIX + expected in lines


def test_pixel_size_limits(constant):
    meta = dataclasses.replace(constant.metadata, gsd=GsdRange(0.5, 0.25, 2.0))
    assert pixel_size_warning(0.125, meta) is None and pixel_size_warning(4.0, meta) is None
    assert "2 times finer" in pixel_size_warning(0.12, meta)
    assert "2 times coarser" in pixel_size_warning(4.1, meta)


def test_pixel_size_limits_follow_the_layers_a_one_size_network_was_trained_from(constant):
    """Run at 0.5 m but trained from 0.5-2 m layers (2 m enlarged): a 2 m or 4 m layer is no surprise."""
    meta = dataclasses.replace(constant.metadata, gsd=GsdRange(0.5, 0.5, 0.5, (0.5, 2.0)))
    assert pixel_size_warning(4.0, meta) is None and pixel_size_warning(0.25, meta) is None
    assert pixel_size_warning(4.1, meta).endswith(HINT) and "(0.5–2 m)" in pixel_size_warning(4.1, meta)


def test_one_class_over_a_textured_orthophoto_is_degenerate(constant, shared_data, tmp_path):
    rgb = shared_data / "point_clouds" / "bdortho_pacasam_792000_6272000_left_rgb_south.tif"
    _, report = run(constant, {"optical": LayerInput(str(rgb))}, tmp_path)
    degenerate = [w for w in report.warnings if w.startswith("the class map is degenerate")]
    assert len(degenerate) == 1
    assert degenerate[0].startswith("the class map is degenerate: 100.0 % of its pixels are 'green wins' although "
                                    "the input varies from pixel to pixel (textured pixels: optical ")
    assert degenerate[0].endswith(HINT)


def test_one_class_over_a_flat_input_is_not_degenerate(constant, houses, tmp_path):
    """A flat nDSM (zero everywhere, on the houses tile's grid) mapped to one class is what it should be."""
    flat = tmp_path / "flat_ndsm.tif"
    source = gdal.Open(str(houses["ndsm"]))
    out = gdal.GetDriverByName("GTiff").Create(str(flat), source.RasterXSize, source.RasterYSize, 1,
                                               gdal.GDT_Float32)
    out.SetGeoTransform(source.GetGeoTransform())
    out.SetProjection(source.GetProjection())
    out.GetRasterBand(1).WriteArray(np.zeros((source.RasterYSize, source.RasterXSize), np.float32))
    out = source = None
    _, report = run(constant, {"elevation": LayerInput(str(flat), elevation_type="ndsm")}, tmp_path)
    assert report.class_counts[2] == sum(report.class_counts.values())  # one class everywhere ...
    assert not [w for w in report.warnings if "degenerate" in w]  # ... over an input with no texture


FALSE_COLOUR = {"protocol": "test figures", "subsets": {
    "optical": {"miou": 42.8, "per_class": {"1": 70.0, "2": 15.6}, "pixels": 31250}},
    "true_colour": {"optical": 61.6}, "undeclared": {"optical": 24.5}}


def _irc(shared_data):
    return LayerInput(str(shared_data / "point_clouds" / "bdortho_pacasam_792000_6272000_left_irc_north.tif"),
                      optical_type="irc")


def test_a_declared_false_colour_layer_gets_the_false_colour_figure(stamped, shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stamped-irc") / stamped.folder.name
    shutil.copytree(stamped.folder, folder)
    store_metrics(load_package(folder), {"false_colour": FALSE_COLOUR})
    package = load_package(folder)
    assert "| optical | 61.6 | 24.5 | **42.8** |" in (folder / "README.md").read_text(encoding="utf-8")
    lines, _ = run(package, {"optical": _irc(shared_data)}, tmp_path_factory.mktemp("run"))
    assert any("held-out accuracy of model 'modalseg-sgma-urban' with optical-only (false-colour optical) input: mIoU "
               "42.8 % on 31,250 labelled pixels from a false-colour infrared image of a whole held-out area" in line
               for line in lines), lines
    assert (WARNING_PREFIX + "optical-only (false-colour optical) accuracy of this model is low (42.8 % mIoU on "
            "held-out areas); " + HINT) in lines


def test_without_a_false_colour_figure_the_true_colour_one_is_said_to_overstate(stamped, shared_data, tmp_path):
    lines, _ = run(stamped, {"optical": _irc(shared_data)}, tmp_path)
    assert ("model 'modalseg-sgma-urban' states no held-out accuracy for a false-colour infrared optical layer: the "
            "figure below was measured on true-colour images, and a false-colour one scores less") in lines
    assert any("with optical-only input: mIoU 26.6 %" in line for line in lines), lines


def test_the_optical_package_takes_the_orthophoto_pixel_size_it_trained_from_without_a_warning():
    """modalseg-optical-urban learnt from the 0.2 m BD ORTHO shrunk to 0.5 m: a 0.2 m orthophoto is its
    input, while a 0.09 m one (ISPRS Vaihingen) is more than twice finer than anything it saw."""
    from modalseg.engine.package import load_package
    from tests.fixtures.paths import REPO_ROOT
    meta = load_package(REPO_ROOT / "resources" / "models" / "modalseg-optical-urban").metadata
    assert meta.gsd.inputs == (0.2, 2.0) and (meta.gsd.min, meta.gsd.max) == (0.5, 2.0)
    assert pixel_size_warning(0.2, meta) is None
    assert "2 times finer" in pixel_size_warning(0.09, meta)
