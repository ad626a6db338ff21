"""The flood package through ``qgis_process run modalseg:segment`` on real georeferenced SAR: the
SpaceNet 6 SAR (dB float32, NaN outside the swath) + RGB of Rotterdam. Robustness has one band
per modality, NaN areas are nodata in every output, dB and the same SAR in linear power give the
same map, every subset runs, complex SAR is read as intensity with a warning."""
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from tests.plugin.helpers import BUNDLED_MODELS, read_raster

FLOOD = BUNDLED_MODELS / "modalseg-flood-s1s2" / "modalseg-flood-s1s2.onnx"
VV = 4  # SpaceNet 6 SAR bands: HH, HV, VH, VV; the package takes one band (Sentinel-1 VV)


@pytest.fixture(scope="module")
def spacenet(shared_data) -> Dict[str, str]:
    folder = shared_data / "spacenet6_sar_rgb"
    return {"sar": str(folder / "sar_masked.tif"), "rgb": str(folder / "rgb_unmasked.tif")}


@pytest.fixture(scope="module")
def swath(spacenet) -> np.ndarray:
    """Where the SAR has data (finite dB)."""
    ds = gdal.Open(spacenet["sar"])
    finite = np.isfinite(ds.GetRasterBand(VV).ReadAsArray())
    ds = None
    assert 0.1 < finite.mean() < 0.95  # the test needs both inside and outside
    return finite


def _interior(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its 3-pixel rim: the network runs at 5 m (the package's finest GSD) on this
    4.5 m grid, so which rim pixels see enough valid input depends on how nodata was stored."""
    return ndimage.binary_erosion(mask, iterations=3)


def _one_band(reference: str, band: int, target: Path, transform) -> str:
    """Band ``band`` of ``reference`` passed through ``transform`` (values -> values, dtype) as a GeoTIFF."""
    src = gdal.Open(reference)
    values = transform(src.GetRasterBand(band).ReadAsArray().astype(np.float64))
    gdal_type = gdal.GDT_CFloat32 if np.iscomplexobj(values) else gdal.GDT_Float32
    out = gdal.GetDriverByName("GTiff").Create(str(target), src.RasterXSize, src.RasterYSize, 1, gdal_type)
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    out.GetRasterBand(1).WriteArray(values.astype(np.complex64 if gdal_type == gdal.GDT_CFloat32 else np.float32))
    out = src = None
    return str(target)


def _segment(qgis_process, folder: Path, *params: str) -> Tuple[dict, dict, dict]:
    """Run segment; the reply, the class map and the robustness raster (read_raster dicts)."""
    folder.mkdir(exist_ok=True)
    classes, robustness = folder / "classes.tif", folder / "robustness.tif"
    result = qgis_process(["run", "modalseg:segment", "--json", "--", *params, f"OUTPUT={classes}",
                           f"ROBUSTNESS={robustness}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout), read_raster(str(classes)), read_raster(str(robustness))


def _log(reply: dict) -> str:
    return "\n".join(line for lines in reply["log"].values() for line in lines)


@pytest.fixture(scope="module")
def both(qgis_process, spacenet, tmp_path_factory):
    return _segment(qgis_process, tmp_path_factory.mktemp("both"), f"SAR={spacenet['sar']}", f"SAR_BANDS={VV}",
                    f"OPTICAL={spacenet['rgb']}", f"MODEL_FILE={FLOOD}")


def test_sar_and_optical_give_two_robustness_bands_and_nodata_outside_the_swath(both, swath):
    reply, classes, robustness = both
    assert "SAR values (auto): " in _log(reply) and "is taken as dB, used as it is" in _log(reply), _log(reply)
    assert robustness["count"] == 2 and robustness["descriptions"] == ["optical", "sar"]
    class_map, class_nodata = classes["data"][0], classes["nodata"][0]
    assert classes["size"] == (200, 200)
    assert (class_map[~swath] == class_nodata).all()
    inside = _interior(swath)
    assert set(np.unique(class_map[inside]).tolist()) <= {1, 5} and (class_map[inside] != class_nodata).all()
    shares = robustness["data"]
    assert all((band[~swath] == nodata).all() for band, nodata in zip(shares, robustness["nodata"]))
    inside = shares[:, _interior(swath)]
    assert ((inside >= 0) & (inside <= 1)).all()
    np.testing.assert_allclose(inside.sum(axis=0), 1.0, atol=1e-3)


def test_sar_in_linear_power_gives_the_same_map_as_in_db(qgis_process, both, spacenet, swath, tmp_path):
    linear = _one_band(spacenet["sar"], VV, tmp_path / "vv_linear.tif", lambda db: 10 ** (db / 10))
    reply, classes, _ = _segment(qgis_process, tmp_path / "linear", f"SAR={linear}", f"OPTICAL={spacenet['rgb']}",
                                 f"MODEL_FILE={FLOOD}")
    assert f"SAR values (auto): '{linear}' is taken as linear power, converted to dB" in _log(reply), _log(reply)
    reference, inside = both[1]["data"][0], _interior(swath)
    agreement = np.mean(classes["data"][0][inside] == reference[inside])
    # the issue asks >= 99 %; the network gets the same numbers from both (the power view treats the
    # swath's undeclared NaN as the dB file's reader does), so only float rounding may differ
    assert agreement >= 0.999, agreement
    assert (classes["data"][0][~swath] == classes["nodata"][0]).all()


def test_every_subset_runs(qgis_process, spacenet, swath, tmp_path):
    # SAR alone: the automatic choice takes the package that reads SAR, and says why
    reply, classes, robustness = _segment(qgis_process, tmp_path / "sar", f"SAR={spacenet['sar']}",
                                          f"SAR_BANDS={VV}")
    assert "Model (automatic): modalseg-flood-s1s2" in _log(reply), _log(reply)
    assert "the only bundled model that takes the SAR layer" in _log(reply)
    assert robustness["count"] == 1 and robustness["descriptions"] == ["sar"]
    assert (classes["data"][0][~swath] == classes["nodata"][0]).all()
    assert set(np.unique(classes["data"][0][_interior(swath)]).tolist()) <= {1, 5}
    # optical alone (the automatic choice would take the urban default: the flood package is named)
    reply, classes, robustness = _segment(qgis_process, tmp_path / "optical", f"OPTICAL={spacenet['rgb']}",
                                          f"MODEL_FILE={FLOOD}")
    assert robustness["count"] == 1 and robustness["descriptions"] == ["optical"]
    assert set(np.unique(classes["data"][0]).tolist()) <= {1, 5}  # the RGB covers the whole grid


def test_complex_sar_is_read_as_intensity_with_a_warning(qgis_process, spacenet, swath, tmp_path):
    rng = np.random.default_rng(0)
    phase = np.exp(2j * np.pi * rng.random(swath.shape))
    complex_sar = _one_band(spacenet["sar"], VV, tmp_path / "vv_slc.tif",
                            lambda db: np.sqrt(np.nan_to_num(10 ** (db / 10), nan=0.0)) * phase)
    reply, classes, _ = _segment(qgis_process, tmp_path / "complex", f"SAR={complex_sar}",
                                 f"OPTICAL={spacenet['rgb']}", f"MODEL_FILE={FLOOD}")
    warnings = "\n".join(reply["log"].get("warning", [])) or _log(reply)
    assert f"the SAR layer '{complex_sar}' holds complex samples: their intensity |z|² is used, converted to dB" \
        in warnings, _log(reply)
    # zero intensity (NaN outside the swath, written as 0) has no dB value: nodata again
    assert (classes["data"][0][_interior(~swath)] == classes["nodata"][0]).all()
