"""The fine-tune dialog: a friendly front end to ``modalseg:finetune`` (no training code here).

It builds the algorithm's parameters from a few widgets (layers, labels, a label -> class table,
the main training settings), runs the algorithm itself in a background ``QgsProcessingAlgRunnerTask``
so QGIS stays responsive, draws each epoch's loss and validation mIoU as they arrive, and at the end
offers to open *Segment rasters* with the new model preset.
"""
import math
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProcessingAlgorithm,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QPointF, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPolygonF
from qgis.PyQt.QtWidgets import (QAbstractSpinBox, QAction, QComboBox, QDialog, QDoubleSpinBox, QFormLayout,
                                 QGroupBox, QHBoxLayout, QPlainTextEdit, QProgressBar, QPushButton, QRadioButton,
                                 QScrollArea, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                                 QWidget)

from ..processing_provider.algorithm_finetune import FinetuneAlgorithm
from ..processing_provider.compat import NUMBER_INTEGER
from ..processing_provider.model_inputs import DEFAULT_BUNDLED_MODEL, LayersAndModelAlgorithm
from .label_values import LabelRasterError, raster_label_values

ALGORITHM_ID = "modalseg:finetune"
SEGMENT_ID = "modalseg:segment"
SAME = "(as labelled)"  # class column: the label already is a class value or name
IGNORE = "ignore"
LAYER_PARAMETERS = ("OPTICAL", "OPTICAL_TYPE", "ELEVATION", "ELEVATION_TYPE", "DTM", "SAR", "NIR")  # shared with Segment
MAX_LABEL_ROWS = 256  # more distinct values than this is no label layer
# Spin box decimals: the parameters give ranges and defaults, not how finely a person types them.
DECIMALS = {"TIME_BUDGET": 1, "LEARNING_RATE": 6, "VAL_FRACTION": 2}
SPIN_STEPS = {"LEARNING_RATE": 0.0005, "VAL_FRACTION": 0.05, "CHIP_SIZE": 32, "TIME_BUDGET": 5.0}


def _filter(name: str) -> Any:
    """Layer filters moved to ``Qgis.LayerFilter`` in QGIS 3.34; older versions have the proxy model enum."""
    from qgis.core import Qgis

    if hasattr(Qgis, "LayerFilter"):
        return getattr(Qgis.LayerFilter, name)
    return getattr(QgsMapLayerProxyModel, name)


def _finetune_algorithm() -> QgsProcessingAlgorithm:
    """The registered algorithm (whose parameters give the dialog its defaults, ranges and help)."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
    if algorithm is None:  # the provider is not registered (yet): the same definitions, unregistered
        algorithm = FinetuneAlgorithm()
        algorithm.initAlgorithm()
    return algorithm


class CurveFeedback(QgsProcessingFeedback):
    """Processing feedback that also takes the fine-tuning's epoch reports (sent from the worker thread).

    The algorithm calls ``report_epoch`` when its feedback has one; the signal crosses to the GUI
    thread as a queued connection.
    """

    epochReported = pyqtSignal(int, float, float)  # epoch, training loss, validation mIoU (NaN: none)
    logged = pyqtSignal(str)

    def report_epoch(self, report: Any) -> None:
        miou = float("nan") if report.val_miou is None else float(report.val_miou)
        self.epochReported.emit(int(report.epoch), float(report.loss), miou)

    def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API name
        super().pushInfo(info)
        self.logged.emit(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API name
        super().pushWarning(warning)
        self.logged.emit(warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802,N803 - QGIS API
        super().reportError(error, fatalError)
        self.logged.emit(error)


class CurveWidget(QWidget):
    """Loss (red, scaled to its maximum) and validation mIoU (blue, 0-1) per epoch."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.points: List[Tuple[int, float, float]] = []
        self.setMinimumSize(320, 160)

    def add_point(self, epoch: int, loss: float, miou: float) -> None:
        self.points.append((epoch, loss, miou))
        self.update()

    def clear(self) -> None:
        self.points = []
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#ffffff"))
        left, top, right, bottom = 36, 10, self.width() - 10, self.height() - 22
        painter.setPen(QPen(QColor("#888888")))
        painter.drawLine(left, bottom, right, bottom)
        painter.drawLine(left, top, left, bottom)
        painter.drawText(4, top + 10, "1.0")
        painter.drawText(4, bottom, "0")
        painter.setPen(QPen(QColor("#d62728")))
        painter.drawText(left + 6, self.height() - 6, "loss (scaled)")
        painter.setPen(QPen(QColor("#1f77b4")))
        painter.drawText(left + 110, self.height() - 6, "validation mIoU")
        if self.points:
            last = max(p[0] for p in self.points)
            max_loss = max(p[1] for p in self.points) or 1.0

            def to_xy(epoch: float, value: float) -> QPointF:
                x = left + (right - left) * (epoch / max(1, last))
                return QPointF(x, bottom - (bottom - top) * min(max(value, 0.0), 1.0))

            for color, series in (("#d62728", [(e, l / max_loss) for e, l, _ in self.points]),
                                  ("#1f77b4", [(e, m) for e, _, m in self.points if not math.isnan(m)])):
                if not series:
                    continue
                pen = QPen(QColor(color))
                pen.setWidth(2)
                painter.setPen(pen)
                polygon = QPolygonF([to_xy(e, v) for e, v in series])
                painter.drawPolyline(polygon)
                for point in polygon:
                    painter.drawEllipse(point, 2.5, 2.5)
        painter.end()


class FinetuneDialog(QDialog):
    """Pick layers and labels, map label values to classes, run ``modalseg:finetune`` in the background.

    Every field is built from the algorithm's own parameter (default, range, choices, help as its
    tooltip), and the model to start from is sent as its file, never as a position in a list.
    Settings scroll on the left, the run (curve, progress, log) is on the right, and the buttons
    stay below both, so the dialog fits a 1366 x 768 screen."""

    finished_run = pyqtSignal(bool)

    def __init__(self, parent: Optional[QWidget] = None, iface: Any = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.setWindowTitle("ModalSeg - fine-tune a model on your labels")
        self.algorithm = _finetune_algorithm()
        self.task: Optional[QgsProcessingAlgRunnerTask] = None
        self.feedback: Optional[CurveFeedback] = None
        self.context: Optional[QgsProcessingContext] = None
        self.results: Dict[str, Any] = {}
        self.model_path: Optional[str] = None
        self._build()

    # -- widgets from the algorithm's parameters -----------------------------------------------------
    def _help(self, name: str) -> str:
        definition = self.algorithm.parameterDefinition(name)
        return definition.help() if hasattr(definition, "help") else definition.description()

    def _raster_combo(self, name: str) -> QgsMapLayerComboBox:
        combo = QgsMapLayerComboBox(self)
        combo.setFilters(_filter("RasterLayer"))
        combo.setAllowEmptyLayer(True)
        combo.setLayer(None)
        combo.setToolTip(self._help(name))
        return combo

    def _enum_combo(self, name: str) -> QComboBox:
        definition = self.algorithm.parameterDefinition(name)
        combo = QComboBox(self)
        combo.addItems(definition.options())
        # long choices (whole sentences) must not widen the dialog: the list still shows them in full
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(24)
        combo.setCurrentIndex(int(definition.defaultValue() or 0))
        combo.setToolTip(self._help(name))
        return combo

    def _number(self, name: str) -> QAbstractSpinBox:
        definition = self.algorithm.parameterDefinition(name)
        if definition.dataType() == NUMBER_INTEGER:
            box: QAbstractSpinBox = QSpinBox(self)
            box.setRange(int(definition.minimum()), int(min(definition.maximum(), 2 ** 31 - 1)))
            box.setValue(int(definition.defaultValue()))
        else:
            box = QDoubleSpinBox(self)
            box.setDecimals(DECIMALS.get(name, 2))
            box.setRange(definition.minimum(), min(definition.maximum(), 1e9))
            box.setValue(float(definition.defaultValue()))
        box.setSingleStep(SPIN_STEPS.get(name, 1))
        box.setToolTip(self._help(name))
        return box

    def _build(self) -> None:
        settings = QWidget(self)
        column = QVBoxLayout(settings)
        column.addWidget(self._layers_box(settings))
        column.addWidget(self._labels_box(settings))
        column.addWidget(self._training_box(settings))
        column.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(settings)
        scroll.setMinimumWidth(settings.sizeHint().width() + 24)  # room for the vertical scroll bar

        run = QWidget(self)
        run_column = QVBoxLayout(run)
        self.curve = CurveWidget(run)
        self.curve.setToolTip("Training loss (red, scaled to its maximum) and validation mIoU (blue) per epoch.")
        self.progress = QProgressBar(run)
        self.progress.setRange(0, 100)
        self.log = QPlainTextEdit(run)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setToolTip("Messages of the fine-tuning, as in the Processing log.")
        run_column.addWidget(self.curve, 1)
        run_column.addWidget(self.progress)
        run_column.addWidget(self.log, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(scroll)
        splitter.addWidget(run)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)

        buttons = QHBoxLayout()
        self.start = QPushButton("Start", self)
        self.start.setToolTip("Check the settings and start fine-tuning in the background.")
        self.cancel = QPushButton("Cancel", self)
        self.cancel.setToolTip("Stop the fine-tuning; the best epoch so far is kept when one has finished.")
        self.open_segment = QPushButton("Open in Segment rasters...", self)
        self.open_segment.setToolTip("Open Segment rasters with the new model and the same layers.")
        self.close_button = QPushButton("Close", self)
        self.close_button.setToolTip("Close the dialog (a running fine-tuning is cancelled).")
        self.cancel.setEnabled(False)
        self.open_segment.setEnabled(False)
        self.start.clicked.connect(self.start_run)
        self.cancel.clicked.connect(self.cancel_run)
        self.open_segment.clicked.connect(self.open_in_segment)
        self.close_button.clicked.connect(self.reject)
        buttons.addStretch(1)
        for button in (self.start, self.cancel, self.open_segment, self.close_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addLayout(buttons)

    def _layers_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Layers (bound to the model's inputs as in Segment rasters)", parent)
        form = QFormLayout(box)
        self.optical = self._raster_combo("OPTICAL")
        self.optical_type = self._enum_combo("OPTICAL_TYPE")
        self.elevation = self._raster_combo("ELEVATION")
        self.elevation_type = self._enum_combo("ELEVATION_TYPE")
        self.dtm = self._raster_combo("DTM")
        self.sar = self._raster_combo("SAR")
        self.nir = self._raster_combo("NIR")
        for label, widget in (("Optical", self.optical), ("Optical type", self.optical_type),
                              ("Elevation", self.elevation),
                              ("Elevation type", self.elevation_type), ("DTM", self.dtm), ("SAR", self.sar),
                              ("NIR", self.nir)):
            form.addRow(label, widget)
        return box

    def _labels_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Labels (pixels outside them are ignored)", parent)
        form = QFormLayout(box)
        self.use_polygons = QRadioButton("Polygons", self)
        self.use_polygons.setToolTip(self._help("LABELS"))
        self.use_raster = QRadioButton("Raster", self)
        self.use_raster.setToolTip(self._help("LABEL_RASTER"))
        self.use_polygons.setChecked(True)
        kinds = QHBoxLayout()
        kinds.addWidget(self.use_polygons)
        kinds.addWidget(self.use_raster)
        form.addRow("Labels are", kinds)
        self.label_layer = QgsMapLayerComboBox(self)
        self.label_layer.setFilters(_filter("PolygonLayer"))
        self.label_layer.setAllowEmptyLayer(True)
        self.label_layer.setLayer(None)
        self.label_layer.setToolTip(self._help("LABELS"))
        self.class_field = QgsFieldComboBox(self)
        self.class_field.setToolTip(self._help("CLASS_FIELD"))
        self.label_layer.layerChanged.connect(self.class_field.setLayer)
        self.label_raster = self._raster_combo("LABEL_RASTER")
        # choosing a layer of one kind selects that kind of labels
        self.label_layer.layerChanged.connect(lambda layer: layer is not None and self.use_polygons.setChecked(True))
        self.label_raster.layerChanged.connect(lambda layer: layer is not None and self.use_raster.setChecked(True))
        form.addRow("Label polygons", self.label_layer)
        form.addRow("Class field", self.class_field)
        form.addRow("Label raster", self.label_raster)
        self.mapping = QTableWidget(0, 2, self)
        self.mapping.setHorizontalHeaderLabels(["Label value", "Class of the model"])
        self.mapping.horizontalHeader().setStretchLastSection(True)
        self.mapping.setMinimumHeight(120)
        self.mapping.setToolTip(self._help("CLASS_MAP"))
        self.read_values = QPushButton("Read label values", self)
        self.read_values.setToolTip("Fill the table with the distinct values of the class field, or of the "
                                    "label raster, to map each one to a class of the model.")
        self.read_values.clicked.connect(self.fill_mapping)
        form.addRow(self.read_values)
        form.addRow(self.mapping)
        return box

    def _training_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Model and training", parent)
        form = QFormLayout(box)
        self.model = QComboBox(self)
        self.model.setToolTip(self._help("MODEL"))
        self._packages = self._bundled()
        for path, meta in self._packages:
            self.model.addItem(f"{meta.name} {meta.version}", str(path))
        names = [meta.name for _, meta in self._packages]
        # the same default as Segment rasters
        self.model.setCurrentIndex(names.index(DEFAULT_BUNDLED_MODEL) if DEFAULT_BUNDLED_MODEL in names else 0)
        self.model_file = QgsFileWidget(self)
        self.model_file.setFilter("ModalSeg model (*.onnx)")
        self.model_file.setToolTip(self._help("MODEL_FILE"))
        self.model.currentIndexChanged.connect(lambda _: self._reset_mapping_choices())
        self.model_file.fileChanged.connect(lambda _: self._reset_mapping_choices())
        self.epochs = self._number("EPOCHS")
        self.minutes = self._number("TIME_BUDGET")
        self.minutes.setSpecialValueText("no limit")
        self.learning_rate = self._number("LEARNING_RATE")
        self.batch_size = self._number("BATCH_SIZE")
        self.chip = self._number("CHIP_SIZE")
        self.val_fraction = self._number("VAL_FRACTION")
        self.freeze = self._enum_combo("FREEZE")
        self.device = self._enum_combo("DEVICE")
        self.output = QgsFileWidget(self)
        self.output.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output.setToolTip(self._help("OUTPUT"))
        for label, widget in (("Start from", self.model), ("or model file", self.model_file),
                              ("Epochs (maximum)", self.epochs), ("Time budget (minutes)", self.minutes),
                              ("Learning rate", self.learning_rate), ("Batch size", self.batch_size),
                              ("Chip size (px)", self.chip), ("Validation fraction", self.val_fraction),
                              ("Freeze", self.freeze), ("Device", self.device),
                              ("New model folder", self.output)):
            form.addRow(label, widget)
        return box

    @staticmethod
    def _bundled() -> List[Tuple[Any, Any]]:
        """The bundled packages exactly as the algorithms list them (one definition of the list)."""
        return LayersAndModelAlgorithm._bundled_packages()  # noqa: SLF001 - the algorithms' own list

    # -- class mapping --------------------------------------------------------------------------
    def model_choice(self) -> str:
        """The .onnx file fine-tuning starts from: the model file when one is given, else the chosen package."""
        return self.model_file.filePath().strip() or (self.model.currentData() or "")

    def class_choices(self) -> List[str]:
        """What a label may map to: unchanged, a class of the chosen model, ignore (or typed new:<name>)."""
        names: List[str] = []
        path = self.model_choice()
        if path:
            try:
                from ..engine.package import read_sidecar_metadata

                names = [c.name for c in read_sidecar_metadata(path).classes]
            except (ValueError, OSError):
                names = []
        return [SAME] + names + [IGNORE]

    def _reset_mapping_choices(self) -> None:
        """Offer the classes of the newly chosen model, keeping what was already typed or chosen."""
        for row in range(self.mapping.rowCount()):
            previous = self.mapping.cellWidget(row, 1)
            combo = self._choice_combo()
            if previous is not None:
                combo.setCurrentText(previous.currentText())
            self.mapping.setCellWidget(row, 1, combo)

    def _choice_combo(self) -> QComboBox:
        combo = QComboBox(self)
        combo.setEditable(True)  # typing a name that is no class makes a new class
        combo.addItems(self.class_choices())
        combo.setToolTip("A class of the model, 'ignore', or type a new class name")
        return combo

    def label_values(self) -> List[str]:
        """Distinct values of the class field (polygons) or of the label raster (GDAL histogram)."""
        if self.use_raster.isChecked():
            layer = self.label_raster.currentLayer()
            if layer is None:
                return []
            if layer.providerType() != "gdal":
                self._say(f"The label raster '{layer.name()}' is not a file GDAL reads; save it as a GeoTIFF.")
                return []
            try:
                return [str(v) for v in raster_label_values(layer.source())]
            except LabelRasterError as exc:
                self._say(str(exc))
                return []
        layer = self.label_layer.currentLayer()
        field = self.class_field.currentField()
        if layer is None or not field:
            return []
        index = layer.fields().indexOf(field)
        return sorted((str(v) for v in layer.uniqueValues(index) if v is not None and str(v) != "NULL"),
                      key=lambda s: (len(s), s))

    def fill_mapping(self) -> None:
        values = self.label_values()
        if len(values) > MAX_LABEL_ROWS:
            self._say(f"The labels hold {len(values)} distinct values: more than {MAX_LABEL_ROWS}, so they are "
                      f"not class labels. Choose the layer (or field) that holds the classes.")
            values = []
        self.mapping.setRowCount(len(values))
        for row, value in enumerate(values):
            item = QTableWidgetItem(value)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.mapping.setItem(row, 0, item)
            self.mapping.setCellWidget(row, 1, self._choice_combo())
        if not values:
            self._say("No label values found: choose a polygon layer and its class field, or a label raster.")

    def class_map(self) -> str:
        """The table as the algorithm's CLASS_MAP parameter ('label=target; ...')."""
        known = set(self.class_choices())
        entries = []
        for row in range(self.mapping.rowCount()):
            item, combo = self.mapping.item(row, 0), self.mapping.cellWidget(row, 1)
            if item is None or combo is None:
                continue
            target = combo.currentText().strip()
            if not target or target == SAME:
                continue
            if target not in known and not target.lower().startswith("new:"):
                target = f"new:{target}"
            entries.append(f"{item.text()}={target}")
        return "; ".join(entries)

    # -- run ----------------------------------------------------------------------------------
    @staticmethod
    def _layer_value(layer: Optional[QgsMapLayer]) -> Any:
        """A file path when the layer is one (safe to open in the worker thread), else its id."""
        if layer is None:
            return None
        if layer.providerType() in ("gdal", "ogr") and "|subset=" not in layer.source():
            return layer.source()
        return layer.id()

    def parameters(self) -> Dict[str, Any]:
        """The ``modalseg:finetune`` parameters the widgets describe (the model as its file, never an index)."""
        params: Dict[str, Any] = {
            "OPTICAL": self._layer_value(self.optical.currentLayer()),
            "OPTICAL_TYPE": self.optical_type.currentIndex(),
            "ELEVATION": self._layer_value(self.elevation.currentLayer()),
            "ELEVATION_TYPE": self.elevation_type.currentIndex(),
            "DTM": self._layer_value(self.dtm.currentLayer()),
            "SAR": self._layer_value(self.sar.currentLayer()),
            "NIR": self._layer_value(self.nir.currentLayer()),
            "MODEL_FILE": self.model_choice(),
            "EPOCHS": self.epochs.value(), "TIME_BUDGET": self.minutes.value(),
            "LEARNING_RATE": self.learning_rate.value(), "BATCH_SIZE": self.batch_size.value(),
            "CHIP_SIZE": self.chip.value(), "VAL_FRACTION": self.val_fraction.value(),
            "FREEZE": self.freeze.currentIndex(), "DEVICE": self.device.currentIndex(),
            "CLASS_MAP": self.class_map(), "OUTPUT": self.output.filePath().strip(),
        }
        if self.use_polygons.isChecked():
            params["LABELS"] = self._layer_value(self.label_layer.currentLayer())
            params["CLASS_FIELD"] = self.class_field.currentField()
        else:
            params["LABEL_RASTER"] = self._layer_value(self.label_raster.currentLayer())
        return {k: v for k, v in params.items() if v is not None and v != ""}

    def _say(self, text: str) -> None:
        self.log.appendPlainText(text)

    def start_run(self) -> bool:
        """Check the parameters with the algorithm itself, then run it in a background task."""
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
        if algorithm is None:
            self._say("The ModalSeg Processing provider is not loaded.")
            return False
        params = self.parameters()
        if not params.get("MODEL_FILE"):
            self._say("Choose the model to start from (no bundled model was found): give a model file.")
            return False
        if not params.get("OUTPUT"):
            self._say("Choose a folder for the new model.")
            return False
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        ok, message = algorithm.checkParameterValues(params, self.context)
        if not ok:
            self._say(message)
            return False
        self.feedback = CurveFeedback()
        self.feedback.epochReported.connect(self.curve.add_point)
        self.feedback.logged.connect(self._say)
        self.feedback.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.curve.clear()
        self.results, self.model_path = {}, None
        self.task = QgsProcessingAlgRunnerTask(algorithm, params, self.context, self.feedback)
        self.task.executed.connect(self._finished)
        self.start.setEnabled(False)
        self.cancel.setEnabled(True)
        self.open_segment.setEnabled(False)
        self._say(f"Fine-tuning started from {params['MODEL_FILE']} ({ALGORITHM_ID}).")
        QgsApplication.taskManager().addTask(self.task)
        return True

    def cancel_run(self) -> None:
        if self.feedback is not None:
            self._say("Cancelling: the best epoch so far is kept when one has finished.")
            self.feedback.cancel()

    def _finished(self, successful: bool, results: Dict[str, Any]) -> None:
        self.start.setEnabled(True)
        self.cancel.setEnabled(False)
        self.task = None
        if successful and results.get("MODEL_OUT"):
            self.results = dict(results)
            self.model_path = str(results["MODEL_OUT"])
            self.open_segment.setEnabled(True)
            self._say(f"New model: {self.model_path}. Click 'Open in Segment rasters...' to use it.")
        else:
            self._say("Fine-tuning failed or was cancelled before the first epoch; see the messages above.")
        self.finished_run.emit(bool(successful))

    def segment_parameters(self) -> Dict[str, Any]:
        """Segment's parameters preset with the new model and the same layers."""
        params = {k: v for k, v in self.parameters().items() if k in LAYER_PARAMETERS}
        params["MODEL_FILE"] = self.model_path
        return params

    def open_in_segment(self) -> None:
        if not self.model_path:
            return
        import processing

        processing.execAlgorithmDialog(SEGMENT_ID, self.segment_parameters())

    def reject(self) -> None:
        if self.task is not None and self.feedback is not None:
            self.feedback.cancel()  # do not leave a training running behind a closed dialog
        super().reject()


def add_menu_action(iface: Any) -> QAction:
    """Plugins > ModalSeg > Fine-tune a model... and a toolbar button; returns the action for unload."""
    from qgis.PyQt.QtGui import QIcon

    from ..processing_provider.paths import SVG_ICON_PATH

    action = QAction(QIcon(str(SVG_ICON_PATH)),
                     "Fine-tune a model on your labels...", iface.mainWindow())
    action.triggered.connect(lambda: open_dialog(iface))
    from .dependencies_dialog import MENU_NAME

    iface.addPluginToMenu(MENU_NAME, action)
    iface.addToolBarIcon(action)
    return action


def remove_menu_action(iface: Any, action: QAction) -> None:
    from .dependencies_dialog import MENU_NAME

    iface.removePluginMenu(MENU_NAME, action)
    iface.removeToolBarIcon(action)


_OPEN: List[FinetuneDialog] = []  # non-modal dialogs stay alive while shown


def open_dialog(iface: Any) -> FinetuneDialog:
    dialog = FinetuneDialog(iface.mainWindow(), iface)
    screen = dialog.screen().availableGeometry() if hasattr(dialog, "screen") else None
    if screen is not None:  # as large as useful, never larger than the screen
        dialog.resize(min(1100, screen.width()), min(760, screen.height() - 40))
    _OPEN.append(dialog)
    dialog.finished.connect(lambda *_: _OPEN.remove(dialog) if dialog in _OPEN else None)
    dialog.show()
    return dialog
