"""SAR as users store it (engine.sar, binding, reader): dB vs linear power judged from the values
or declared, linear power read as dB, complex samples read as intensity with a warning, NaN
outside the swath invalid; the automatic model choice takes the flood package for a SAR layer."""
import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import EngineError, LayerInput, bind_modalities, choose_package, load_package
from modalseg.engine.errors import WARNING_PREFIX
from modalseg.engine.grid import grid_of
from modalseg.engine.reader import BandReader, SourceReader
from modalseg.engine.binding import sar_scale_from_values
from modalseg.engine.sar import sar_view
from tests.fixtures.paths import REPO_ROOT

FLOOD_PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-flood-s1s2"
URBAN_PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"


@pytest.fixture(scope="module")
def spacenet_db(shared_data) -> str:
    """Real SAR in dB (Capella X-band, float32, NaN outside the swath), 200 x 200 px at 4.5 m."""
    return str(shared_data / "spacenet6_sar_rgb" / "sar_masked.tif")


@pytest.fixture(scope="module")
def flood():
    return load_package(FLOOD_PACKAGE)


def _like(reference: str, path, data: np.ndarray, gdal_type: int) -> str:
    """``data`` (h x w) as a one-band GeoTIFF on the reference's grid."""
    src = gdal.Open(reference)
    out = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1, gdal_type)
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    out.GetRasterBand(1).WriteArray(data)
    out = src = None
    return str(path)


def _db_band(path: str) -> np.ndarray:
    ds = gdal.Open(path)  # held while its band is read (GDAL frees bands with their dataset)
    return ds.GetRasterBand(1).ReadAsArray().astype(np.float64)


def test_db_and_linear_power_are_told_apart_by_their_values(spacenet_db, tmp_path):
    db = _db_band(spacenet_db)
    scale, why = sar_scale_from_values(spacenet_db)
    assert scale == "db" and "negative values" in why, why
    linear = _like(spacenet_db, tmp_path / "linear.tif", (10 ** (db / 10)).astype(np.float32), gdal.GDT_Float32)
    scale, why = sar_scale_from_values(linear)
    assert scale == "linear" and "long tail" in why, why
    # an 8-bit display scaling of the dB values (as the OMBRIA chips): >= 0, but no long tail
    finite = np.isfinite(db)
    lo, hi = np.percentile(db[finite], [1, 99])
    display = np.where(finite, np.clip((db - lo) / (hi - lo), 0, 1) * 254 + 1, 0).astype(np.uint8)
    scale, why = sar_scale_from_values(_like(spacenet_db, tmp_path / "display.tif", display, gdal.GDT_Byte))
    assert scale == "db" and "without a long tail" in why, why


def test_power_is_read_in_db_and_nodata_or_zero_power_is_invalid(spacenet_db, tmp_path):
    power = np.tile(np.array([1.0, 0.01, 0.0, -9999.0, np.nan, 100.0], np.float32), (200, 34))[:, :200]
    path = _like(spacenet_db, tmp_path / "power.tif", power, gdal.GDT_Float32)
    ds = gdal.Open(path, gdal.GA_Update)
    ds.GetRasterBand(1).SetNoDataValue(-9999.0)
    ds = None
    data, valid = BandReader(path, (1,), grid_of(path), to_db=True).read(0, 0, 200, 200)
    assert valid[0, :6].tolist() == [True, True, False, False, False, True]
    np.testing.assert_allclose(data[0, 0, :6], [0.0, -20.0, 0.0, 0.0, 0.0, 20.0], atol=1e-5)


def test_power_is_converted_before_warping(spacenet_db, tmp_path):
    """A coarser output grid averages dB values whether the file holds dB or power (a map must not
    depend on how the SAR was stored)."""
    db = _db_band(spacenet_db)
    linear = _like(spacenet_db, tmp_path / "linear.tif", (10 ** (db / 10)).astype(np.float32), gdal.GDT_Float32)
    coarse = grid_of(spacenet_db).rescaled(1.7)
    from_db, ok_db = BandReader(spacenet_db, (1,), coarse, "bilinear").read(0, 0, coarse.width, coarse.height)
    from_power, ok_power = BandReader(linear, (1,), coarse, "bilinear", to_db=True).read(
        0, 0, coarse.width, coarse.height)
    # the view declares NaN as nodata, so the warper averages the valid neighbours at the swath
    # edge where a NaN in an undeclared file spoils the pixel: the masks differ at the edge only
    assert np.mean(ok_db == ok_power) > 0.98 and (ok_power | ~ok_db).all() and ok_db.mean() > 0.3
    both = ok_db & ok_power
    np.testing.assert_allclose(from_power[0][both], from_db[0][both], atol=1e-3)


@pytest.mark.parametrize("gdal_type", [gdal.GDT_CFloat32, gdal.GDT_CInt16])
def test_complex_samples_are_read_as_intensity(spacenet_db, tmp_path, gdal_type):
    rng = np.random.default_rng(0)
    re_, im = rng.integers(-300, 300, (2, 200, 200))
    samples = (re_ + 1j * im).astype(np.complex64)
    path = _like(spacenet_db, tmp_path / "slc.tif", samples, gdal_type)
    expected = (re_ ** 2 + im ** 2).astype(np.float32)
    view = sar_view(path, to_db=False)
    assert gdal.GetDataTypeName(view.GetRasterBand(1).DataType) == "Float32"
    reader = BandReader(path, (1,), grid_of(path))
    data, valid = reader.read(0, 0, 200, 200)
    assert valid.all()
    np.testing.assert_allclose(data[0], expected, rtol=1e-6)
    # through a warped read (twice the pixel size): the intensity is what gets averaged
    coarse = BandReader(path, (1,), grid_of(path).rescaled(2.0), "average")
    data, valid = coarse.read(0, 0, 100, 100)
    np.testing.assert_allclose(data[0], expected.reshape(100, 2, 100, 2).mean(axis=(1, 3)), rtol=1e-4)


def test_binding_converts_linear_power_and_keeps_db(flood, spacenet_db, tmp_path):
    db = _db_band(spacenet_db)
    linear = _like(spacenet_db, tmp_path / "linear.tif", (10 ** (db / 10)).astype(np.float32), gdal.GDT_Float32)
    sources, log = bind_modalities(flood.metadata, {"sar": LayerInput(linear)})
    assert sources[0].power_to_db
    assert any(line.startswith(f"SAR values (auto): '{linear}' is taken as linear power, converted to dB")
               for line in log), log
    assert any("linear power converted to dB" in line for line in log if line.startswith("bound sar")), log
    # read back: the dB values of the original, NaN outside the swath invalid in both
    reader = SourceReader(sources[0], grid_of(spacenet_db))
    data, valid = reader.read(0, 0, 200, 200)
    assert np.array_equal(valid, np.isfinite(db)) and not valid.all()
    np.testing.assert_allclose(data[0][valid], db[valid], atol=1e-3)
    assert (data[0][~valid] == 0).all()
    sources, log = bind_modalities(flood.metadata, {"sar": LayerInput(spacenet_db)})
    assert not sources[0].power_to_db and any("is taken as dB, used as it is" in line for line in log), log
    # declared: the analyst's word wins over the values
    sources, log = bind_modalities(flood.metadata, {"sar": LayerInput(spacenet_db, sar_scale="linear")})
    assert sources[0].power_to_db and any("linear power (as declared)" in line for line in log), log
    sources, _ = bind_modalities(flood.metadata, {"sar": LayerInput(linear, sar_scale="db")})
    assert not sources[0].power_to_db
    with pytest.raises(EngineError, match="SAR values must be one of auto, db, linear, not 'power'"):
        bind_modalities(flood.metadata, {"sar": LayerInput(linear, sar_scale="power")})


def test_complex_sar_gives_a_warning_and_is_read_in_db(flood, spacenet_db, tmp_path):
    path = _like(spacenet_db, tmp_path / "slc.tif", np.full((200, 200), 3 + 4j, np.complex64), gdal.GDT_CFloat32)
    sources, log = bind_modalities(flood.metadata, {"sar": LayerInput(path, sar_scale="db")})
    warnings = [line for line in log if line.startswith(WARNING_PREFIX)]
    assert len(warnings) == 1 and f"the SAR layer '{path}' holds complex samples" in warnings[0], log
    assert "intensity |z|² is used, converted to dB" in warnings[0]
    data, valid = SourceReader(sources[0], grid_of(path)).read(0, 0, 200, 200)
    assert valid.all()
    np.testing.assert_allclose(data[0], 10 * np.log10(25.0), rtol=1e-6)


def test_automatic_choice_takes_the_package_that_reads_sar(flood, spacenet_db):
    candidates = [load_package(URBAN_PACKAGE).metadata, flood.metadata]
    rgb = spacenet_db.replace("sar_masked", "rgb_unmasked")
    for layers in ({"sar": LayerInput(spacenet_db)}, {"sar": LayerInput(spacenet_db), "optical": LayerInput(rgb)}):
        choice = choose_package(candidates, layers, "modalseg-sgma-urban")
        assert candidates[choice.index].name == "modalseg-flood-s1s2"
        assert "it is the only bundled model that takes the SAR layer" in choice.reason, choice.reason
    choice = choose_package(candidates, {"optical": LayerInput(rgb)}, "modalseg-sgma-urban")
    assert candidates[choice.index].name == "modalseg-sgma-urban"  # optical alone: a tie, the default
    assert "only bundled model" not in choice.reason
