"""Helpers shared by the plugin tests (kept out of conftest.py so test modules can import them)."""
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

from tests.fixtures.paths import REPO_ROOT

# tests/conftest.py (loaded before any test module) exposes the checkout as the package
# ``modalseg`` through a symlink in a temporary plugin folder, exported as QGIS_PLUGINPATH.
PLUGIN_DIR = Path(os.environ["QGIS_PLUGINPATH"])
QGIS_PYTHON_PLUGINS = "/usr/share/qgis/python/plugins"  # where Debian installs the Processing plugin
DEMO_DIR = REPO_ROOT / "resources" / "demo"
DEMO_STEM = "lidarprod_870000_6618000"
BUNDLED_MODELS = REPO_ROOT / "resources" / "models"


def read_raster(path: str) -> Dict[str, object]:
    """Everything the tests compare about a raster, with the GDAL dataset closed afterwards."""
    from osgeo import gdal, osr

    ds = gdal.Open(str(path))
    assert ds is not None, f"cannot open {path}"
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    info = {
        "size": (ds.RasterXSize, ds.RasterYSize),
        "geotransform": ds.GetGeoTransform(),
        "srs": srs,
        "count": ds.RasterCount,
        "data": np.stack([b.ReadAsArray() for b in bands]),
        "nodata": [b.GetNoDataValue() for b in bands],
        "descriptions": [b.GetDescription() for b in bands],
        "category_names": bands[0].GetCategoryNames(),
        "has_colour_table": bands[0].GetColorTable() is not None,
        "driver": ds.GetDriver().ShortName,
    }
    ds = None
    return info


def write_like(reference: str, target: Path, data: np.ndarray, nodata: Optional[float],
               geotransform: Optional[tuple] = None) -> str:
    """A GeoTIFF on the reference's grid (or a shifted one) holding ``data`` (bands x rows x cols)."""
    from osgeo import gdal

    src = gdal.Open(str(reference))
    gdal_type = {np.dtype("uint8"): gdal.GDT_Byte, np.dtype("float32"): gdal.GDT_Float32}[data.dtype]
    out = gdal.GetDriverByName("GTiff").Create(str(target), data.shape[2], data.shape[1], data.shape[0], gdal_type)
    out.SetGeoTransform(geotransform or src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    for i in range(data.shape[0]):
        band = out.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        band.WriteArray(data[i])
    out = src = None
    return str(target)


def qgis_process_env(profile: Path) -> Dict[str, str]:
    """Environment for Debian's qgis_process.bin: offscreen, our plugin folder, the venv's packages."""
    site = sysconfig.get_paths()["purelib"]
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(PLUGIN_DIR),
            "QGIS_CUSTOM_CONFIG_PATH": str(profile), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)}


def qgis_process_binary() -> str:
    binary = shutil.which("qgis_process.bin") or shutil.which("qgis_process")
    if binary is None:
        pytest.fail("qgis_process is not installed (run `python3 build.py setup`)")
    return binary




def recording_feedback():
    """A Processing feedback that keeps what an algorithm logged: ``infos`` and ``warnings``
    (QGIS is imported here, when a test runs, not when the helpers are imported)."""
    from qgis.core import QgsProcessingFeedback

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.infos, self.warnings = [], []

        def pushInfo(self, info):  # noqa: N802 - QGIS API name
            self.infos.append(info)
            super().pushInfo(info)

        def pushWarning(self, warning):  # noqa: N802 - QGIS API name
            self.warnings.append(warning)
            super().pushWarning(warning)

    return RecordingFeedback()
