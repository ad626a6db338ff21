"""The fine-tune dialog under offscreen Qt: opens, maps classes, runs a short fine-tune in a background
task, draws the curve, writes the package and presets Segment with it; menu and toolbar entries.

It runs in its own process: widgets need a GUI-flavoured QgsApplication, while the session fixture of
the other plugin tests is a headless one (one QgsApplication per process).
"""
import os
import subprocess  # nosec B404 - argument lists only
import sys

from tests.plugin.helpers import DEMO_DIR, PLUGIN_DIR, REPO_ROOT

DIALOG_SCRIPT = r"""
import sys, time, json
from pathlib import Path
sys.path.append("/usr/share/qgis/python/plugins")
import torch
torch.set_num_threads(1)
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
app = QgsApplication([], True)  # widgets need the GUI flavour
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import modalseg
plugin = modalseg.classFactory(None)
plugin.initProcessing()
from osgeo import gdal, ogr
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QMainWindow
from modalseg.ui.finetune_dialog import FinetuneDialog, add_menu_action, remove_menu_action

data, out = Path(sys.argv[1]), Path(sys.argv[2])
stem = "lidarprod_870000_6618000"
# label polygons with class *names* (one of them a new class) from the tile's label raster
src = gdal.Open(str(data / f"{stem}_label.tif"))
band = src.GetRasterBand(1)
vec = ogr.GetDriverByName("GPKG").CreateDataSource(str(out / "labels.gpkg"))
lyr = vec.CreateLayer("labels", srs=src.GetSpatialRef(), geom_type=ogr.wkbPolygon)
lyr.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
gdal.Polygonize(band, band.GetMaskBand(), lyr, 0)
lyr.CreateField(ogr.FieldDefn("kind", ogr.OFTString))
for f in lyr:
    f.SetField("kind", {1: "sol", 2: "bati"}[f.GetField("code")])
    lyr.SetFeature(f)
lyr = vec = band = src = None

rgb = QgsRasterLayer(str(data / f"{stem}_rgb.tif"), "rgb")
ndsm = QgsRasterLayer(str(data / f"{stem}_ndsm.tif"), "ndsm")
labels = QgsVectorLayer(str(out / "labels.gpkg") + "|layername=labels", "labels", "ogr")
assert rgb.isValid() and ndsm.isValid() and labels.isValid()
QgsProject.instance().addMapLayers([rgb, ndsm, labels])

dialog = FinetuneDialog()
dialog.show()
app.processEvents()

# it fits a 1366 x 768 screen with a task bar (and a title bar), Start button included
hint = dialog.minimumSizeHint()
assert hint.width() <= 1366 and hint.height() <= 768 - 48 - 32, (hint.width(), hint.height())
dialog.resize(hint)
app.processEvents()
corner = dialog.start.mapTo(dialog, dialog.start.rect().bottomRight())
assert dialog.rect().contains(corner), (corner, dialog.rect())

# every field says what it is for
from qgis.PyQt.QtWidgets import QAbstractSpinBox, QComboBox, QPushButton, QRadioButton, QTableWidget
from qgis.gui import QgsFileWidget
fields = [w for w in dialog.findChildren((QComboBox, QAbstractSpinBox, QPushButton, QRadioButton, QTableWidget,
                                          QgsFileWidget))
          if not isinstance(w.parent(), QgsFileWidget)]
assert len(fields) >= 25, len(fields)
untitled = [w.objectName() or type(w).__name__ for w in fields if not w.toolTip().strip()]
assert not untitled, untitled
assert dialog.epochs.toolTip() == dialog.algorithm.parameterDefinition("EPOCHS").help()
# defaults are the algorithm's; the default package is Segment's
assert dialog.epochs.value() == dialog.algorithm.parameterDefinition("EPOCHS").defaultValue()
segment = QgsApplication.processingRegistry().algorithmById("modalseg:segment")
segment_default = segment.parameterDefinition("MODEL").options()[segment.parameterDefinition("MODEL").defaultValue()]
# Segment's default is the package itself, or "Automatic" falling back to it on ties
assert dialog.model.currentText().split()[0] == "modalseg-sgma-urban" and "modalseg-sgma-urban" in segment_default, \
    (dialog.model.currentText(), segment_default)

# a DTM field, sent to the algorithm and to Segment
dtm = QgsRasterLayer(str(data / f"{stem}_dtm.tif"), "dtm")
assert dtm.isValid()
QgsProject.instance().addMapLayer(dtm)
dialog.dtm.setLayer(dtm)
assert dialog.parameters()["DTM"].endswith("_dtm.tif")

# raster labels: the table is filled from the raster's values
label_raster = QgsRasterLayer(str(data / f"{stem}_label.tif"), "label raster")
assert label_raster.isValid()
QgsProject.instance().addMapLayer(label_raster)
dialog.label_raster.setLayer(label_raster)
assert dialog.use_raster.isChecked()
dialog.fill_mapping()
assert [dialog.mapping.item(r, 0).text() for r in range(dialog.mapping.rowCount())] == ["1", "2"], \
    dialog.log.toPlainText()
assert "LABEL_RASTER" in dialog.parameters() and "LABELS" not in dialog.parameters()
dialog.dtm.setLayer(None)

dialog.optical.setLayer(rgb)
dialog.elevation.setLayer(ndsm)
dialog.elevation_type.setCurrentIndex(2)
dialog.label_layer.setLayer(labels)
assert dialog.use_polygons.isChecked()
dialog.class_field.setField("kind")
dialog.fill_mapping()
assert [dialog.mapping.item(r, 0).text() for r in range(dialog.mapping.rowCount())] == ["sol", "bati"]
choices = dialog.class_choices()
assert "building" in choices and "ignore" in choices, choices
dialog.mapping.cellWidget(0, 1).setCurrentText("ground / impervious")
dialog.mapping.cellWidget(1, 1).setCurrentText("building")
assert dialog.class_map() == "sol=ground / impervious; bati=building", dialog.class_map()
# train a package that is not the first of the list: the one picked is the one trained
picked = dialog.model.findText("modalseg-dual-urban", Qt.MatchFlag.MatchStartsWith)
assert picked > 0, [dialog.model.itemText(i) for i in range(dialog.model.count())]
dialog.model.setCurrentIndex(picked)
dialog.epochs.setValue(3)
dialog.chip.setValue(64)
dialog.batch_size.setValue(4)
dialog.output.setFilePath(str(out / "package"))
params = dialog.parameters()
assert params["CLASS_FIELD"] == "kind" and params["OPTICAL"].endswith("_rgb.tif"), params
assert "MODEL" not in params and Path(params["MODEL_FILE"]).parent.name == "modalseg-dual-urban", params

started = dialog.start_run()
assert started, dialog.log.toPlainText()
done = []
dialog.finished_run.connect(done.append)
t0 = time.time()
while not done and time.time() - t0 < 150:
    app.processEvents()
    time.sleep(0.02)
app.processEvents()
log = dialog.log.toPlainText()
assert done == [True], log[-3000:]
assert len(dialog.curve.points) >= 1, log[-3000:]
assert all(p[1] > 0 for p in dialog.curve.points)
assert dialog.model_path and Path(dialog.model_path).is_file(), log[-2000:]
assert dialog.open_segment.isEnabled()
dialog.curve.repaint()  # paints without error once it has points
seg = dialog.segment_parameters()
assert seg["MODEL_FILE"] == dialog.model_path and seg["OPTICAL"].endswith("_rgb.tif"), seg
meta = json.loads(Path(dialog.model_path).with_suffix(".json").read_text())
assert meta["extra"]["finetune"]["labels"]["mapping"] == {"sol": "ground / impervious", "bati": "building"}
assert meta["extra"]["finetune"]["base_model"]["name"] == "modalseg-dual-urban", meta["extra"]["finetune"]

# cancel straight away: nothing finished, the dialog reports it and stays usable
dialog.output.setFilePath(str(out / "package2"))
done.clear()
assert dialog.start_run()
dialog.cancel_run()
t0 = time.time()
while not done and time.time() - t0 < 60:
    app.processEvents()
    time.sleep(0.02)
assert done == [False] and dialog.start.isEnabled(), dialog.log.toPlainText()[-2000:]
print("CURVE", dialog.curve.points)

class FakeIface:
    def __init__(self):
        self.window, self.menu, self.toolbar = QMainWindow(), [], []
    def mainWindow(self):
        return self.window
    def addPluginToMenu(self, menu, action):
        self.menu.append(action.text())
    def removePluginMenu(self, menu, action):
        self.menu.remove(action.text())
    def addToolBarIcon(self, action):
        self.toolbar.append(action.text())
    def removeToolBarIcon(self, action):
        self.toolbar.remove(action.text())

iface = FakeIface()
action = add_menu_action(iface)
assert iface.menu == iface.toolbar == ["Fine-tune a model on your labels..."], iface.menu
remove_menu_action(iface, action)
assert iface.menu == iface.toolbar == []
dialog.close()
del dialog
QgsProject.instance().removeAllMapLayers()
rgb = ndsm = labels = dtm = label_raster = None
plugin.unload()
print("DIALOG OK")
app.exitQgis()
"""


def test_finetune_dialog_runs_a_short_finetune(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]),
           "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", DIALOG_SCRIPT, str(DEMO_DIR), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=300, check=False,  # nosec
                            cwd=str(REPO_ROOT))
    assert "DIALOG OK" in result.stdout, result.stdout[-3000:] + result.stderr[-4000:]
