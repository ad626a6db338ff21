"""GDAL's exception mode belongs to QGIS: importing ModalSeg, loading the plugin and running its
algorithms (also a failing run) leave it as it was, whether it was off or on. Each mode runs in a
fresh QGIS process, since the mode is process-wide and this test session's QGIS already set it."""
import json
import os
import subprocess  # nosec B404 - the test runs its own Python with an argument list
import sys

import pytest

from tests.plugin.helpers import QGIS_PYTHON_PLUGINS

SCRIPT = r"""
import importlib, json, os, pkgutil, sys
from osgeo import gdal, ogr, osr

MODULES = (gdal, ogr, osr)
demo, model, out_dir = json.loads(sys.argv[2])
modes = {}

def record(stage):
    modes[stage] = [module.GetUseExceptions() for module in MODULES]

sys.path.insert(0, os.environ["QGIS_PLUGINPATH"])
sys.path.append(%(processing_plugins)r)
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()  # QGIS's Processing plugin turns exceptions on (QGIS 3.40)
# The host's mode as another plugin may leave it; switches undone in reverse order, as GDAL wants.
for module in (MODULES if sys.argv[1] == "1" else MODULES[::-1]):
    module.UseExceptions() if sys.argv[1] == "1" else module.DontUseExceptions()
record("start")
import modalseg
record("imported")
plugin = modalseg.classFactory(None)
plugin.initProcessing()
record("loaded")
import modalseg.engine, modalseg.models.data
for package in (modalseg.engine, modalseg.models.data):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(found.name)
record("engine imported")
import processing
params = {"OPTICAL": demo["rgb"], "ELEVATION": demo["ndsm"], "ELEVATION_TYPE": 2, "MODEL_FILE": model,
          "OUTPUT": os.path.join(out_dir, "classes.tif"), "ROBUSTNESS": os.path.join(out_dir, "robustness.tif")}
result = processing.run("modalseg:segment", params)
assert os.path.exists(result["OUTPUT"]), result
record("segmented")
try:
    processing.run("modalseg:segment", dict(params, OUTPUT=os.path.join(out_dir, "classes.png")))
except QgsProcessingException as exc:
    modes["failure"] = str(exc)
record("failed")
plugin.unload()
print("MODES " + json.dumps(modes))
sys.stdout.flush()
os._exit(0)  # the modes are reported; exitQgis() has nothing to add to this test
""" % {"processing_plugins": QGIS_PYTHON_PLUGINS}


@pytest.mark.parametrize("host_mode", [0, 1])
def test_plugin_leaves_the_host_gdal_mode_alone(demo, model_package, tmp_path, host_mode):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = {**os.environ, "QGIS_CUSTOM_CONFIG_PATH": str(profile), "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(host_mode),  # nosec B603 - our own script
                          json.dumps([demo, str(model_package), str(tmp_path)])],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("MODES ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    modes = json.loads(lines[-1][len("MODES "):])
    assert "GeoTIFF only" in modes.pop("failure", "")
    expected = [host_mode] * 3
    assert modes == {stage: expected for stage in ("start", "imported", "loaded", "engine imported", "segmented",
                                                  "failed")}, modes
