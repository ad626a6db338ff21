"""``modalseg:install_dependencies``: install (or remove) ModalSeg's optional packages.

A thin adapter over ``environment``: it turns parameters into an install plan, runs the
installer with the feedback as progress and log, and reports what changed. Packages go into a
folder of the QGIS profile (``python/modalseg_deps/py<version>``), never into QGIS's own Python.
"""
from typing import Any, Dict, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterString,
)

from ..engine.vocabulary import key_at, labels
from ..environment.choices import ACTIONS, BUILDS
from ..environment.installer import InstallError, install, uninstall
from ..environment.pins import COMPONENTS, PROFILE_LABELS, PROFILES, installed_version
from ..environment.plan import make_plan
from ..environment.probes import find_python
from .base import ModalSegAlgorithm
from .dependencies import local_packages_folder

PROFILE_KEYS = tuple(PROFILES)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


class InstallDependenciesAlgorithm(ModalSegAlgorithm):
    """Install (or remove) the pinned Python packages ModalSeg needs, next to those of QGIS."""

    ALGORITHM_ID = "install_dependencies"
    DISPLAY_NAME = "Install dependencies"
    GROUP = "Environment"
    GROUP_ID = "environment"
    TAGS = ("install", "pip", "onnxruntime", "torch", "cuda", "gpu", "dependencies", "packages")
    ACTION = "ACTION"
    PROFILE = "PROFILE"
    BUILD = "BUILD"
    PACKAGES = "PACKAGES"
    REINSTALL = "REINSTALL"
    FOLDER = "FOLDER"
    INSTALLED = "INSTALLED"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Installs the Python packages ModalSeg needs - <i>onnxruntime</i> to run models, and for "
            "training also <i>torch</i>, <i>onnx</i>, <i>safetensors</i>, <i>scikit-image</i> - in the "
            "versions ModalSeg is tested with, into a folder of your QGIS profile "
            "(<code>python/modalseg_deps</code>). QGIS's own Python packages are never changed: numpy "
            "and everything else QGIS already has are held at their installed versions.</p>"
            "<p>CUDA builds (onnxruntime-gpu, CUDA torch) are chosen only when an NVIDIA GPU with its "
            "driver is found; otherwise the smaller CPU builds. The packages can be used at once, "
            "without restarting QGIS. Run it again to update or switch builds; it does nothing when "
            "everything is already installed. <i>Remove</i> deletes exactly what it installed.</p>"
            "<p>Needs an internet connection (or a pip configuration pointing to your package mirror).</p>")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        add = self.add
        add(QgsProcessingParameterEnum(self.ACTION, "Action", labels(ACTIONS), defaultValue=0),
            "Install/update, remove what ModalSeg installed, or only show the plan.")
        add(QgsProcessingParameterEnum(self.PROFILE, "What to install",
                                       [PROFILE_LABELS[key] for key in PROFILE_KEYS], defaultValue=0),
            "Running models needs only onnxruntime; fine-tuning and the PyTorch runtime need torch "
            "(0.2 GB for the CPU build, about 3 GB with CUDA).")
        add(QgsProcessingParameterEnum(self.BUILD, "CPU or CUDA builds", labels(BUILDS),
                                       defaultValue=0),
            "Which builds of onnxruntime and torch to install.", advanced=True)
        add(QgsProcessingParameterString(self.PACKAGES, "Only these packages (comma-separated; empty = all of the "
                                         "above)", optional=True),
            "For example 'onnxruntime'. Known packages: " + ", ".join(COMPONENTS) + ".", advanced=True)
        add(QgsProcessingParameterBoolean(self.REINSTALL, "Reinstall even when already installed",
                                          defaultValue=False),
            "Installs the planned packages again (to repair a broken install).", advanced=True)
        self.addOutput(QgsProcessingOutputFolder(self.FOLDER, "Plugin-local packages folder"))
        self.addOutput(QgsProcessingOutputString(self.INSTALLED, "Packages installed or removed by this run"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        action = key_at(ACTIONS, self.parameterAsEnum(parameters, self.ACTION, context))
        folder = local_packages_folder()
        feedback.pushInfo(f"Plugin-local packages folder: {folder}")

        if action == "remove":
            try:
                removed = uninstall(folder)
            except (InstallError, OSError) as exc:
                raise QgsProcessingException(f"Removing the packages failed: {exc}") from None
            names = ", ".join(f"{name} {version}" for name, version in removed)
            feedback.pushInfo(f"Removed: {names or 'nothing (ModalSeg had installed nothing)'}. "
                              f"Packages already imported stay loaded until QGIS restarts.")
            return {self.FOLDER: str(folder), self.INSTALLED: names}

        only = [p.strip() for p in (self.parameterAsString(parameters, self.PACKAGES, context) or "").split(",")
                if p.strip()]
        try:
            plan = make_plan(profile=PROFILE_KEYS[self.parameterAsEnum(parameters, self.PROFILE, context)],
                             only=only or None,
                             build=key_at(BUILDS, self.parameterAsEnum(parameters, self.BUILD, context)),
                             reinstall=self.parameterAsBool(parameters, self.REINSTALL, context))
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        for line in plan.describe():
            feedback.pushInfo(line)
        if action == "plan":
            try:
                python = find_python()
            except FileNotFoundError as exc:
                python = f"<python: {exc}>"
            if not plan.empty:
                feedback.pushInfo("pip command: " + plan.manual_command(python, str(folder)))
            return {self.FOLDER: str(folder), self.INSTALLED: ""}

        numpy_before = installed_version("numpy")
        failure = None
        try:
            result = install(plan, folder, progress=lambda fraction, text: self._progress(feedback, fraction, text),
                             log=feedback.pushConsoleInfo, is_cancelled=feedback.isCanceled)
        except (InstallError, FileNotFoundError, OSError) as exc:
            failure = str(exc)
        if failure is not None:  # raised outside the except block, as in segment: no lingering traceback
            raise QgsProcessingException(f"Installing the dependencies failed: {failure}")

        if result.nothing_to_do:
            feedback.pushInfo("Nothing to install: every planned package is already usable.")
        else:
            feedback.pushInfo(f"Installed in {result.seconds:.1f} s, {_megabytes(result.bytes_added)}: "
                              + ", ".join(f"{n} {v}" for n, v in result.installed))
            if result.provided_by_qgis:
                feedback.pushInfo("Kept from QGIS's Python: "
                                  + ", ".join(f"{n} {v}" for n, v in result.provided_by_qgis))
            if result.replaced:
                feedback.pushInfo("Replaced: " + ", ".join(f"{n} {v}" for n, v in result.replaced))
        numpy_after = installed_version("numpy")
        if numpy_after != numpy_before:  # the constraints make this impossible; say so loudly if it happens
            feedback.reportError(f"numpy changed from {numpy_before} to {numpy_after}; remove the packages "
                                 f"(Action: remove) and report this", False)
        else:
            feedback.pushInfo(f"numpy stays at {numpy_before} (QGIS's).")
        return {self.FOLDER: str(folder), self.INSTALLED: ", ".join(f"{n} {v}" for n, v in result.installed)}

    @staticmethod
    def _progress(feedback: QgsProcessingFeedback, fraction: float, text: str) -> None:
        feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))
        if text:
            feedback.setProgressText(text)


# How a run that stayed on the CPU beside an NVIDIA GPU is told to get onnxruntime's CUDA build
INSTALL_CUDA_BUILD = (f"Run '{InstallDependenciesAlgorithm.DISPLAY_NAME}' with 'CUDA builds' "
                      "(it installs onnxruntime-gpu)")
