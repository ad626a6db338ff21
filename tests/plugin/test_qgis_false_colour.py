"""A false-colour infrared orthophoto (IGN BD ORTHO IRC) through ``qgis_process``: declared, it feeds
red and green where they belong and says what it did; the map is the one of its red, green, green."""
import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from tests.plugin.helpers import read_raster

IRC = "bdortho_pacasam_792000_6272000_left_irc_north.tif"
OPTICAL_TYPE_IRC = 1  # position of "irc" in engine.vocabulary.OPTICAL_TYPES (a saved model's value)


@pytest.fixture(scope="module")
def orthophotos(shared_data, tmp_path_factory):
    irc = shared_data / "point_clouds" / IRC
    if not irc.exists():
        pytest.skip(f"{irc} is absent")
    folder = tmp_path_factory.mktemp("irc")
    pseudo = gdal.Translate(str(folder / "red_green_green.tif"), str(irc), bandList=[2, 3, 3])
    pseudo = None  # noqa: F841 - closes the file
    return {"irc": str(irc), "pseudo_rgb": str(folder / "red_green_green.tif")}


def _segment(qgis_process, out: Path, *parameters: str) -> dict:
    result = qgis_process(["run", "modalseg:segment", "--json", "--", *parameters, f"OUTPUT={out}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


def test_a_declared_false_colour_orthophoto_is_read_as_near_infrared_red_green(qgis_process, orthophotos, tmp_path):
    reply = _segment(qgis_process, tmp_path / "irc.tif", f"OPTICAL={orthophotos['irc']}",
                     f"OPTICAL_TYPE={OPTICAL_TYPE_IRC}")
    warnings = "\n".join(reply["log"].get("warning", []))
    log = "\n".join(line for lines in reply["log"].values() for line in lines)
    assert "is false-colour infrared (bands 1,2,3 as near-infrared, red, green)" in warnings, log
    assert "band 1 (near-infrared) of the false-colour optical layer" in warnings and "takes no NIR input" in warnings
    assert "modalseg-optical-urban" in log, log  # the automatic choice for an orthophoto alone
    reference = _segment(qgis_process, tmp_path / "rgg.tif", f"OPTICAL={orthophotos['pseudo_rgb']}")
    declared, copied = read_raster(str(tmp_path / "irc.tif")), read_raster(str(tmp_path / "rgg.tif"))
    assert declared["size"] == (250, 250) and np.allclose(declared["geotransform"], copied["geotransform"])
    assert len(np.unique(declared["data"])) > 1
    assert np.array_equal(declared["data"], copied["data"])
    assert "false-colour" not in "\n".join(reference["log"].get("warning", []))
