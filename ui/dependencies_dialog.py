"""Plugins > ModalSeg menu entries for the environment, and the dependencies dialog.

The dialog shows which optional packages this QGIS can use and where they come from, and opens
the ``modalseg:install_dependencies`` Processing dialog (progress, log, cancel) to install or
remove them; it installs nothing itself.
"""
from pathlib import Path
from typing import Any, Callable, List, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import (QAction, QApplication, QDialog, QDialogButtonBox, QLabel, QPushButton,
                                 QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..engine.vocabulary import keys
from ..environment.installer import base_distributions, constraints_text, freed_names
from ..environment.choices import ACTIONS
from ..environment.pins import COMPONENTS, PROFILES, usable_version
from ..environment.plan import InstallPlan, make_plan
from ..environment.probes import find_python
from ..processing_provider.dependencies import INSTALL_ALGORITHM_ID, local_packages_folder
from .diagnostics_dialog import DiagnosticsDialog, run_dialog

MENU_NAME = "&ModalSeg"
CONSTRAINTS_FILE_NAME = "pip-constraints.txt"  # beside the packages folder, for the copied pip command


def open_install_algorithm(parameters: Optional[dict] = None, parent: Optional[QWidget] = None) -> None:
    """The Processing dialog of the installer, with some parameters preset, as a child window of
    ``parent`` so that it opens above the (modal) dependencies dialog, not behind it."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog  # QGIS's Processing plugin

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(INSTALL_ALGORITHM_ID)
    dialog = AlgorithmDialog(algorithm, parent=parent)
    dialog.setParameters(parameters or {})
    dialog.exec()


def manual_install_command(plan: InstallPlan, python: str, folder: Path) -> str:
    """The pip command of ``plan`` as a user can paste it: the constraints file it names (numpy and
    every package QGIS's Python has, pinned) is written now, beside the packages folder."""
    constraints = folder.parent / CONSTRAINTS_FILE_NAME
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text(constraints_text(base_distributions(exclude=folder), freed_names(plan)), encoding="utf-8")
    return plan.manual_command(python, str(folder), constraints=str(constraints))


class DependenciesDialog(QDialog):
    """Status of each optional package, with buttons that run the installer."""

    def __init__(self, parent: Optional[QWidget] = None,
                 open_algorithm: Callable[[dict, QWidget], None] = open_install_algorithm) -> None:
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
        self.install_inference.clicked.connect(lambda: self._run({"PROFILE": list(PROFILES).index("inference")}))
        self.install_training.clicked.connect(lambda: self._run({"PROFILE": list(PROFILES).index("training")}))
        self.remove.clicked.connect(lambda: self._run({"ACTION": keys(ACTIONS).index("remove")}))
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
        self.open_algorithm(parameters, self)
        self.refresh()  # the Processing dialog is modal: the table shows the new state

    def copy(self, plan: Optional[InstallPlan] = None) -> str:
        """The pip command for this machine (default: what running models needs), for users who prefer
        a terminal; it works as pasted. Returns the copied text."""
        plan = plan or make_plan("inference")
        if plan.empty:
            text = "# nothing to install: every package for running models is already usable"
            self.status.setText("Nothing to install: every package for running models is already usable.")
        else:
            try:
                python = find_python()
            except FileNotFoundError:
                python = "python3"
            folder = local_packages_folder()
            text = manual_install_command(plan, python, folder)
            self.status.setText(f"Copied: paste it into a terminal. It keeps QGIS's own packages as they are "
                                f"through {folder.parent / CONSTRAINTS_FILE_NAME}, written just now.")
        QApplication.clipboard().setText(text)
        return text


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
