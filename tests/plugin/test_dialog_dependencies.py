"""The dependencies dialog under offscreen Qt: the installer's Processing dialog opens above it (not
behind it), and the copied pip command works as pasted (the constraints file it names exists).

Own process: widgets need a GUI-flavoured QgsApplication (see test_dialog_finetune.py)."""
import os
import subprocess  # nosec B404 - argument lists only
import sys

from tests.plugin.helpers import PLUGIN_DIR, REPO_ROOT

DIALOG_SCRIPT = r"""
import shlex, sys
from pathlib import Path
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication
app = QgsApplication([], True)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import modalseg
plugin = modalseg.classFactory(None)
plugin.initProcessing()
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from modalseg.environment.plan import make_plan
from modalseg.environment.probes import GpuInfo
from modalseg.processing_provider.dependencies import local_packages_folder
from modalseg.ui.dependencies_dialog import DependenciesDialog

deps = DependenciesDialog()
deps.show()
seen = []

def look_and_close():
    shown = QApplication.activeModalWidget()
    seen.append((type(shown).__name__, shown.parentWidget() is deps, shown.isVisible(),
                 shown.algorithm().id() if hasattr(shown, "algorithm") else None))
    shown.reject()

QTimer.singleShot(500, look_and_close)
deps.install_inference.click()  # modal: returns once look_and_close has closed it
assert seen == [("AlgorithmDialog", True, True, "modalseg:install_dependencies")], seen

# the copied command names a constraints file that exists and holds QGIS's numpy
plan = make_plan(only=["onnxruntime"], gpu=GpuInfo(False, []), lookup=lambda d: None,
                 importable=lambda m: False, platform="linux", machine="x86_64")
copied = deps.copy(plan)
assert QApplication.clipboard().text() == copied
words = shlex.split(copied)
assert words[1:4] == ["-m", "pip", "install"] and words[words.index("--target") + 1] == str(local_packages_folder())
constraints = Path(words[words.index("--constraint") + 1])
assert constraints.is_absolute() and constraints.is_file(), copied
import numpy
assert f"numpy=={numpy.__version__}" in constraints.read_text().splitlines(), constraints.read_text()[:500]
assert "onnxruntime==" in copied and str(constraints) in deps.status.text()
deps.close()
del deps
plugin.unload()
print("DEPENDENCIES DIALOG OK")
app.exitQgis()
"""


def test_install_dialog_opens_above_and_the_copied_command_is_self_contained(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]),
           "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile")}
    result = subprocess.run([sys.executable, "-c", DIALOG_SCRIPT], env=env, capture_output=True, text=True,  # nosec
                            timeout=180, check=False, cwd=str(REPO_ROOT))
    assert "DEPENDENCIES DIALOG OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
