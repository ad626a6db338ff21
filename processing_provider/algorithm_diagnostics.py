"""``modalseg:diagnostics``: versions, runtimes, GPUs and paths, as an HTML report and as text.

The report itself is built by ``environment.diagnostics``; this adapter adds what only QGIS
knows (its version, the profile and plugin folders) and writes the outputs.
"""
from typing import Any, Dict, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFileDestination,
)

from ..environment.diagnostics import DiagnosticsReport, collect_report
from .base import ModalSegAlgorithm
from .dependencies import local_packages_folder, qgis_profile_folder
from .paths import BUNDLED_MODELS_DIR, PLUGIN_ROOT



def build_report(probe_torch: bool = True) -> DiagnosticsReport:
    """The report for this QGIS; the diagnostics dialog shows the same one."""
    return collect_report(
        qgis_version=Qgis.QGIS_VERSION,
        plugin_dir=PLUGIN_ROOT, deps_dir=local_packages_folder(), models_dir=BUNDLED_MODELS_DIR,
        extra_paths={"QGIS profile folder": str(qgis_profile_folder()),
                     "QGIS prefix": QgsApplication.prefixPath()},
        probe_torch=probe_torch)


class DiagnosticsAlgorithm(ModalSegAlgorithm):
    """Versions, providers, GPUs and folders ModalSeg runs with, for bug reports."""

    ALGORITHM_ID = "diagnostics"
    DISPLAY_NAME = "Diagnostics report"
    GROUP = "Environment"
    GROUP_ID = "environment"
    TAGS = ("diagnostics", "versions", "gpu", "cuda", "onnxruntime", "torch", "bug report", "support")
    PROBE_TORCH = "PROBE_TORCH"
    OUTPUT = "OUTPUT"
    TEXT = "TEXT"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return ("<p>Lists what ModalSeg runs with: QGIS, Python, numpy and GDAL versions; the versions of "
                "onnxruntime, torch, onnx, scikit-image, scipy and safetensors (or <i>missing</i>) and where "
                "they are loaded from; the ONNX Runtime execution providers (CUDA or CPU); whether torch "
                "sees a CUDA GPU; the NVIDIA GPUs found; the plugin's folders; the bundled models.</p>"
                "<p>Paste the text output into a bug report.</p>")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        self.add(QgsProcessingParameterBoolean(self.PROBE_TORCH, "Ask torch about CUDA (imports torch: a few seconds)",
                                               defaultValue=True),
                 "Importing torch takes a few seconds; switch it off for a quick report.")
        self.add(QgsProcessingParameterFileDestination(self.OUTPUT, "Report (HTML)", "HTML files (*.html)",
                                                       optional=True, createByDefault=True),
                 "The report as an HTML page.")
        self.addOutput(QgsProcessingOutputString(self.TEXT, "Report (text)"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        report = build_report(self.parameterAsBool(parameters, self.PROBE_TORCH, context))
        text = report.to_text()
        for line in text.splitlines():
            feedback.pushInfo(line)
        results: Dict[str, Any] = {self.TEXT: text}
        path = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(report.to_html())
            results[self.OUTPUT] = path
        return results
