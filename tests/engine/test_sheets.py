"""A folder of raster sheets opens as one raster (engine.sheets through open_raster)."""
import numpy as np
import pytest

from modalseg.engine import EngineError, open_raster
from modalseg.engine.grid import file_grid
from tests.fixtures.rasters import write_raster

GT = (500000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0)


def test_sheets_read_as_the_mosaic_they_cut(tmp_path):
    whole = np.arange(2 * 30 * 50, dtype=np.float32).reshape(2, 30, 50)
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    write_raster(sheets / "b.tif", whole[:, :, 20:], 32631, (GT[0] + 20, *GT[1:]))
    write_raster(sheets / "a.tif", whole[:, :, :20], 32631, GT)
    (sheets / "notes.txt").write_text("not a sheet")
    mosaic = open_raster(str(sheets))
    assert (mosaic.RasterXSize, mosaic.RasterYSize, mosaic.RasterCount) == (50, 30, 2)
    assert np.array_equal(mosaic.ReadAsArray(), whole)
    assert file_grid(str(sheets)).geotransform == GT


def test_an_empty_folder_or_sheets_that_do_not_fit_are_refused_in_one_sentence(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match=r"is a folder without raster sheets \(\.tif"):
        open_raster(str(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_raster(mixed / "a.tif", np.zeros((1, 10, 10), np.float32), 32631, GT)
    write_raster(mixed / "b.tif", np.zeros((1, 10, 10), np.float32), 2154, GT)
    with pytest.raises(EngineError, match=r"the sheets of '.*mixed' cannot be read as one raster: 1 of 2 differ "
                                          r"from the first in CRS, band count or data type"):
        open_raster(str(mixed))
