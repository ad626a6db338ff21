"""QGIS-free management of ModalSeg's optional Python packages.

What lives here (plain Python, never imports ``qgis``; the Processing algorithms and dialogs in
``processing_provider/`` and ``ui/`` are thin adapters over it):

- ``pins``: the packages ModalSeg may need, their tested versions, and which are already usable;
- ``probes``: is there an NVIDIA GPU with a driver, and where is the real Python interpreter
  (inside QGIS ``sys.executable`` is the QGIS binary);
- ``plan``: what to install for a profile ("inference" or "training") on this machine, and the
  pip command lines for it;
- ``installer``: runs pip into a plugin-local folder without touching what QGIS's Python ships,
  records what it created in a manifest, removes it again, puts the folder on ``sys.path``;
- ``diagnostics``: the report users paste into bug reports.

The plugin-local folder is ``<QGIS profile>/python/modalseg_deps/py<major><minor>``: per profile
like the plugin itself, and per Python version because compiled wheels only fit one.
"""
from .diagnostics import DiagnosticsReport, collect_report
from .installer import (InstallError, InstallResult, activate, deps_folder, install, read_manifest,
                        uninstall)
from .pins import COMPONENTS, PROFILES, Component, missing_components, usable_version
from .plan import InstallPlan, make_plan
from .probes import GpuInfo, detect_nvidia_gpu, find_python, unused_gpu_advice

__all__ = ["COMPONENTS", "PROFILES", "Component", "DiagnosticsReport", "GpuInfo", "InstallError", "InstallPlan",
           "InstallResult", "activate", "collect_report", "deps_folder", "detect_nvidia_gpu", "find_python",
           "install", "make_plan", "missing_components", "read_manifest", "uninstall", "unused_gpu_advice",
           "usable_version"]
