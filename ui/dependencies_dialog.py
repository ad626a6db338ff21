"""Plugins > ModalSeg menu entries for the environment, and the dependencies dialog.

The dialog shows which optional packages this QGIS can use and where they come from, and opens
the ``modalseg:install_dependencies`` Processing dialog (progress, log, cancel) to install or
remove them; it installs nothing itself.
"""
from typing import Any, Callable, List, Optional

from qgis.PyQt.QtWidgets import (QAction, QApplication, QDialog, QDialogButtonBox, QLabel, QPushButton,
                                 QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..environment.pins import COMPONENTS, PROFILES, usable_version
from ..environment.plan import make_plan
from ..environment.probes import find_python
from ..processing_provider.algorithm_install_dependencies import ACTIONS, PROFILE_KEYS
from ..processing_provider.dependencies import INSTALL_ALGORITHM_ID, local_packages_folder
from .diagnostics_dialog import DiagnosticsDialog, run_dialog

MENU_NAME = "&ModalSeg"


def open_install_algorithm(parameters: Optional[dict] = None) -> None:
    """The Processing dialog of the installer, with some parameters preset."""
    import processing  # QGIS's Processing plugin; only there in the GUI

    processing.execAlgorithmDialog(INSTALL_ALGORITHM_ID, parameters or {})


class DependenciesDialog(QDialog):
    """Status of each optional package, with buttons that run the installer."""

    def __init__(self, parent: Optional[QWidget] = None,
                 open_algorithm: Callable[[dict], None] = open_install_algorithm) -> None:
        super().__init__(parent)
        self.open_algorithm = open_algorithm
        self.setWindowTitle("ModalSeg dependencies")
        self.resize(720, 420)
        self.table = QTableWidget(0, 3, self)
        self.table.setHorizontalHeaderLabels(["Package", "Installed", "Tested version / needed for"])
        self.folder_label = QLabel(self)
        self.folder_label.setWordWrap(True)
        self.status = QLabel(self)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        role = QDialogButtonBox.ButtonRole.ActionRole
        self.install_inference = QPushButton("Install for running models...", self)
        self.install_training = QPushButton("Install with training (torch)...", self)
        self.remove = QPushButton("Remove...", self)
        self.copy_command = QPushButton("Copy pip command", self)
        for button in (self.install_inference, self.install_training, self.remove, self.copy_command):
            buttons.addButton(button, role)
        self.install_inference.clicked.connect(lambda: self._run({"PROFILE": PROFILE_KEYS.index("inference")}))
        self.install_training.clicked.connect(lambda: self._run({"PROFILE": PROFILE_KEYS.index("training")}))
        self.remove.clicked.connect(lambda: self._run({"ACTION": [a for a, _ in ACTIONS].index("remove")}))
        self.copy_command.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.table, self.folder_label, self.status, buttons):
            layout.addWidget(widget)
        self.refresh()

    def refresh(self) -> None:
        keys = PROFILES["training"]
        self.table.setRowCount(len(keys))
        for row, key in enumerate(keys):
            component = COMPONENTS[key]
            found = usable_version(component)
            installed = f"{found[1]} ({found[0]})" if found else "missing"
            cells = (key, installed, f"{component.spec.lstrip('=')} - {component.purpose}")
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.folder_label.setText(f"Packages installed by ModalSeg go to {local_packages_folder()}; "
                                  f"QGIS's own packages (numpy...) are never changed.")

    def _run(self, parameters: dict) -> None:
        self.open_algorithm(parameters)
        self.refresh()  # the Processing dialog is modal: the table shows the new state

    def copy(self) -> None:
        """The pip command for this machine, for users who prefer a terminal."""
        plan = make_plan("inference")
        try:
            python = find_python()
        except FileNotFoundError:
            python = "python3"
        text = plan.manual_command(python, str(local_packages_folder())) if not plan.empty else \
            "# nothing to install: every package for running models is already usable"
        QApplication.clipboard().setText(text)
        self.status.setText("Copied. Write the constraints file it names first (numpy and the packages QGIS "
                            "has, pinned), or simply use the Install button.")


def add_menu_actions(iface: Any, parent: Any) -> List[QAction]:
    """Plugins > ModalSeg > Dependencies... and Diagnostics...; returns the actions for unload."""
    window = iface.mainWindow()
    dependencies = QAction("Dependencies...", parent)
    dependencies.triggered.connect(lambda: run_dialog(DependenciesDialog(window)))
    diagnostics = QAction("Diagnostics...", parent)
    diagnostics.triggered.connect(lambda: run_dialog(DiagnosticsDialog(window)))
    actions = [dependencies, diagnostics]
    for action in actions:
        iface.addPluginToMenu(MENU_NAME, action)
    return actions


def remove_menu_actions(iface: Any, actions: List[QAction]) -> None:
    for action in actions:
        iface.removePluginMenu(MENU_NAME, action)
