"""Value ranges and outliers on real LiDAR HD tiles: optical layers outside the recipe's range are
stretched with a warning, GDAL band scale/offset are applied, absurd heights become nodata and no
output holds NaN or inf on a valid pixel."""
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from benchmarks.value_ranges import ENCODINGS, write_encoded
from modalseg.engine import GridRequest, LayerInput, OutputPaths, bind_modalities, run_segmentation
from modalseg.engine.writers import FLOAT_NODATA, class_nodata_value

FLOAT_OUTPUTS = ("robustness", "probabilities", "confidence")


def _run(package, layers, out: Path):
    sources, _ = bind_modalities(package.metadata, layers)
    out.mkdir(parents=True, exist_ok=True)
    paths = OutputPaths(**{name: str(out / f"{name}.tif") for name in ("classes",) + FLOAT_OUTPUTS})
    report = run_segmentation(sources, package, GridRequest(), paths)
    return report, {name: gdal.Open(path).ReadAsArray() for name, path in report.outputs.items()}


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


@pytest.mark.parametrize("encoding", [name for name in ENCODINGS if name != "uint8"])
def test_one_scene_in_any_value_range_gives_the_same_map(package, houses, tmp_path, encoding):
    gdal_type, encode = ENCODINGS[encoding]
    stored = write_encoded(houses["rgb"], tmp_path / "optical.tif", gdal_type, encode)
    _, baseline = _run(package, {"optical": LayerInput(str(houses["rgb"]))}, tmp_path / "uint8")
    report, outputs = _run(package, {"optical": LayerInput(str(stored))}, tmp_path / "stored")
    assert _agreement(outputs["classes"], baseline["classes"]) >= 0.95
    stretched = [w for w in report.warnings if "stretched" in w]
    assert len(stretched) == 1
    assert stretched[0].startswith(f"the optical layer '{stored}' holds values ")
    reason = "all within 0–1, like reflectance" if "reflectance (/255)" in encoding else "far above the model's range"
    assert f"({reason}); the model expects about -19.8–249, so the layer's 1–99 % percentiles" in stretched[0]


def test_an_optical_layer_in_range_is_not_stretched(package, houses, tmp_path):
    report, _ = _run(package, {"optical": LayerInput(str(houses["rgb"]))}, tmp_path)
    assert not [w for w in report.warnings if "stretched" in w]


def _write_like(template: Path, target: Path, values: np.ndarray, gdal_type: int, nodata: float,
                scale: float = 1.0, offset: float = 0.0) -> Path:
    ds = gdal.Open(str(template))
    out = gdal.GetDriverByName("GTiff").Create(str(target), ds.RasterXSize, ds.RasterYSize, 1, gdal_type)
    out.SetGeoTransform(ds.GetGeoTransform())
    out.SetProjection(ds.GetProjection())
    band = out.GetRasterBand(1)
    band.SetNoDataValue(nodata)
    band.SetScale(scale)
    band.SetOffset(offset)
    band.WriteArray(values)
    out = None
    return target


def test_band_scale_and_offset_are_applied(package, houses, tmp_path):
    """A DSM stored as int16 decimetres above 150 m (scale 0.1, offset 150) reads as the float DSM."""
    dsm = gdal.Open(str(houses["dsm"])).ReadAsArray()
    nodata = dsm == -9999
    decimetres = np.where(nodata, -32768, np.round((dsm - 150.0) * 10.0)).astype(np.int16)
    stored = _write_like(houses["dsm"], tmp_path / "dsm_dm.tif", decimetres, gdal.GDT_Int16, -32768, 0.1, 150.0)
    # The same heights in float32 metres (rounded to decimetres as stored), for the reference run.
    in_metres = np.where(nodata, -9999, decimetres.astype(np.float32) * np.float32(0.1) + np.float32(150.0))
    metres_file = _write_like(houses["dsm"], tmp_path / "dsm_m.tif", in_metres.astype(np.float32), gdal.GDT_Float32,
                              -9999)
    dtm = {"dtm": LayerInput(str(houses["dtm"]))}
    _, metres = _run(package, {"elevation": LayerInput(str(metres_file)), **dtm}, tmp_path / "metres")
    _, scaled = _run(package, {"elevation": LayerInput(str(stored)), **dtm}, tmp_path / "scaled")
    assert _agreement(scaled["classes"], metres["classes"]) > 0.999
    # The nDSM alone, stored the same way: Auto sees its values in metres (an nDSM, not a DSM).
    ndsm = gdal.Open(str(houses["ndsm"])).ReadAsArray()
    stored_ndsm = _write_like(houses["ndsm"], tmp_path / "ndsm_dm.tif",
                              np.where(ndsm == -9999, -32768, np.round(ndsm * 10.0)).astype(np.int16),
                              gdal.GDT_Int16, -32768, 0.1)
    sources, messages = bind_modalities(package.metadata, {"elevation": LayerInput(str(stored_ndsm))})
    assert not sources[0].estimate_ground
    assert any("is taken as an nDSM" in m for m in messages)


def test_absurd_heights_become_nodata_and_no_output_holds_nan(package, houses, tmp_path):
    dsm = gdal.Open(str(houses["dsm"])).ReadAsArray().astype(np.float32)
    rng = np.random.default_rng(7)
    valid = np.argwhere(dsm != -9999)
    picks = valid[rng.choice(len(valid), 60, replace=False)]
    spikes = [np.float32(1e30)] * 40 + [np.float32(-1e30)] * 5 + [np.inf] * 5 + [np.nan] * 5 + [12_000.0] * 5
    for (row, col), value in zip(picks, spikes):
        dsm[row, col] = value
    spiked = _write_like(houses["dsm"], tmp_path / "dsm_spikes.tif", dsm, gdal.GDT_Float32, -9999)
    dtm = {"dtm": LayerInput(str(houses["dtm"]))}
    report, outputs = _run(package, {"elevation": LayerInput(str(spiked)), **dtm}, tmp_path / "spiked")
    assert (f"60 pixel(s) of '{spiked}' hold non-finite or absurd heights (beyond ±10,000 m); they are treated "
            "as nodata") in report.warnings
    classes = outputs["classes"]
    nodata = class_nodata_value(package.metadata.classes)
    assert all(classes[row, col] == nodata for row, col in picks)
    _, clean = _run(package, {"elevation": LayerInput(str(houses["dsm"])), **dtm}, tmp_path / "clean")
    elsewhere = clean["classes"] != nodata
    elsewhere[tuple(picks.T)] = False
    assert _agreement(classes[elsewhere], clean["classes"][elsewhere]) > 0.98
    assert len(np.unique(classes[classes != nodata])) >= 3  # not a constant map
    is_valid = classes != nodata
    for name in FLOAT_OUTPUTS:
        values = outputs[name].reshape((-1,) + classes.shape)
        assert np.isfinite(values).all(), name  # nodata included: no NaN or inf anywhere in a file
        assert (values[:, ~is_valid] == FLOAT_NODATA).all(), name
        assert (values[:, is_valid] >= 0).all(), name
    assert np.allclose(outputs["robustness"][is_valid], 1.0)  # elevation only: its share is 1
    assert np.allclose(outputs["probabilities"].sum(axis=0)[is_valid], 1.0, atol=1e-4)


def test_a_one_value_optical_layer_runs_with_a_warning_and_finite_outputs(houses, tmp_path):
    """A flat grey image (every pixel 128) through a percentile recipe: its stretch has no spread, which
    once made every input NaN and the run fail with 'no valid pixel in common'."""
    from modalseg.engine import load_package
    from tests.fixtures.paths import REPO_ROOT

    percentile_package = load_package(REPO_ROOT / "resources" / "models" / "modalseg-optical-urban")
    assert percentile_package.metadata.modality("optical").normalization.type == "percentile"
    ds = gdal.Open(str(houses["rgb"]))
    grey = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "grey.tif"), ds.RasterXSize, ds.RasterYSize, 3)
    grey.SetGeoTransform(ds.GetGeoTransform())
    grey.SetProjection(ds.GetProjection())
    for band in range(1, 4):
        grey.GetRasterBand(band).Fill(128)
    grey = None
    report, outputs = _run(percentile_package, {"optical": LayerInput(str(tmp_path / "grey.tif"))}, tmp_path / "out")
    assert (f"the optical layer '{tmp_path / 'grey.tif'}' holds one value (128) on every pixel inside the output "
            "extent: it shows nothing, so the map rests on the other layers (or is uniform); check that it is the "
            "image you meant") in report.warnings
    assert not [w for w in report.warnings if "non-finite" in w]
    classes = outputs["classes"]
    assert (classes != class_nodata_value(percentile_package.metadata.classes)).all()
    for name in FLOAT_OUTPUTS:
        assert np.isfinite(outputs[name]).all(), name
    assert np.allclose(outputs["probabilities"].sum(axis=0), 1.0, atol=1e-4)


def test_the_percentile_range_of_a_one_value_band_has_a_spread():
    from modalseg.engine.normalize import percentile_range

    data = np.stack([np.full((4, 4), 128.0, np.float32), np.full((4, 4), 0.0, np.float32)])
    low, high = percentile_range(data, np.ones((4, 4), bool), 2.0, 98.0)
    assert np.all(high > low) and np.all(np.isfinite(1.0 / (high - low)))
    assert np.allclose(low, [128.0, 0.0])
