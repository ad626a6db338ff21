"""The diagnostics report in a dialog, with a button that copies it for a bug report.

Shows exactly what ``modalseg:diagnostics`` computes (``build_report``); nothing is decided here.
"""
from typing import Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QLabel, QPushButton, QTextBrowser,
                                 QVBoxLayout, QWidget)

from ..environment.diagnostics import DiagnosticsReport


def run_dialog(dialog: QDialog) -> int:
    """``exec`` (PyQt 6 has no ``exec_``; PyQt5 has both)."""
    return dialog.exec()


class DiagnosticsDialog(QDialog):
    """Report as HTML; Copy puts the plain-text version on the clipboard."""

    def __init__(self, parent: Optional[QWidget] = None, report: Optional[DiagnosticsReport] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("ModalSeg diagnostics")
        self.resize(760, 620)
        if report is None:
            from ..processing_provider.algorithm_diagnostics import build_report

            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # importing torch takes seconds
            try:
                report = build_report()
            finally:
                QApplication.restoreOverrideCursor()
        self.report = report
        self.browser = QTextBrowser(self)
        self.browser.setHtml(report.to_html())
        self.status = QLabel("Copy the report into your bug report.", self)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.copy_button = QPushButton("Copy to clipboard", self)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(self.status)
        layout.addWidget(buttons)

    def copy(self) -> None:
        QApplication.clipboard().setText(self.report.to_text())
        self.status.setText("Copied: paste it into your bug report.")
