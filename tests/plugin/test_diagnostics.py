"""``modalseg:diagnostics`` inside QGIS, the diagnostics and dependencies dialogs, and the menu entries."""
import importlib.metadata
import os
import subprocess  # nosec B404 - argument lists only
import sys

from tests.plugin.helpers import PLUGIN_DIR, REPO_ROOT


def test_diagnostics_algorithm_lists_versions_providers_and_paths(qgis_app, tmp_path):
    import onnxruntime
    import processing
    import torch
    from qgis.core import Qgis

    from modalseg.processing_provider.dependencies import local_packages_folder

    html = tmp_path / "report.html"
    result = processing.run("modalseg:diagnostics", {"PROBE_TORCH": True, "OUTPUT": str(html)})
    text = result["TEXT"]
    rows = dict(line.split(" : ", 1) for line in text.splitlines() if " : " in line)
    rows = {key.strip(): value for key, value in rows.items()}
    assert rows["QGIS"] == Qgis.QGIS_VERSION
    assert rows["numpy"].startswith(importlib.metadata.version("numpy") + " ")
    for name in ("onnxruntime", "torch", "onnx", "scikit-image", "scipy", "safetensors"):
        assert rows[name].startswith(importlib.metadata.version(name) + " "), (name, rows[name])
    assert rows["available providers"] == ", ".join(onnxruntime.get_available_providers())
    assert rows["CUDA available"] == ("yes" if torch.cuda.is_available() else "no")
    assert str(local_packages_folder()) in rows["plugin-local packages folder"]
    assert rows["plugin folder"] == str(REPO_ROOT)
    assert rows["bundled packages"].isdigit()
    assert html.read_text(encoding="utf-8").startswith("<html>")


DIALOG_SCRIPT = r"""
import sys
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication
app = QgsApplication([], True)  # widgets need the GUI flavour
app.initQgis()
from qgis.PyQt.QtWidgets import QApplication, QMainWindow
from modalseg.environment.diagnostics import collect_report
from modalseg.ui.diagnostics_dialog import DiagnosticsDialog
from modalseg.ui.dependencies_dialog import DependenciesDialog, MENU_NAME, add_menu_actions, remove_menu_actions

report = collect_report(qgis_version="test", probe_torch=False, list_gpus=lambda: [])
dialog = DiagnosticsDialog(report=report)
dialog.copy()
assert QApplication.clipboard().text() == report.to_text(), "clipboard"
assert "ONNX Runtime" in dialog.browser.toPlainText()

opened = []
deps = DependenciesDialog(open_algorithm=lambda parameters, parent: opened.append(parameters))
deps.install_training.click()
deps.remove.click()
assert opened == [{"PROFILE": 1}, {"ACTION": 1}], opened
names = [deps.table.item(row, 0).text() for row in range(deps.table.rowCount())]
assert "onnxruntime" in names and "torch" in names, names
deps.copy()
copied = QApplication.clipboard().text()
assert "-m pip install --target" in copied or "nothing to install" in copied, copied

class FakeIface:
    def __init__(self):
        self.window, self.menu = QMainWindow(), []
    def mainWindow(self):
        return self.window
    def addPluginToMenu(self, menu, action):
        self.menu.append((menu, action.text()))
    def removePluginMenu(self, menu, action):
        self.menu.remove((menu, action.text()))

iface = FakeIface()
actions = add_menu_actions(iface, iface.window)
assert iface.menu == [(MENU_NAME, "Dependencies..."), (MENU_NAME, "Diagnostics...")], iface.menu
remove_menu_actions(iface, actions)
assert iface.menu == []
print("DIALOGS OK")
app.exitQgis()
"""


def test_dialogs_copy_and_menu_entries(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]),
           "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", DIALOG_SCRIPT], env=env, capture_output=True, text=True,  # nosec
                            timeout=180, check=False, cwd=str(REPO_ROOT))
    assert "DIALOGS OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
