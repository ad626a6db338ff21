"""QGIS side of ModalSeg's optional packages: where the plugin-local folder is, putting it on
``sys.path`` at start, and the message an algorithm shows when a package is missing.

The plugin itself loads without onnxruntime or torch (the QGIS Python rarely has them); only
running an algorithm needs them, so the check happens in ``processAlgorithm``. Resolution,
installation and the report live in the QGIS-free ``environment`` package.
"""
import importlib.util
import shlex
import sys
from pathlib import Path
from typing import Iterable, List

from ..environment.installer import activate, base_distributions, deps_folder
from ..environment.pins import COMPONENTS

INSTALL_ALGORITHM_ID = "modalseg:install_dependencies"
INSTALL_HINT = "Processing Toolbox > ModalSeg > Environment > Install dependencies (or Plugins > ModalSeg menu)"

# Versions the plugin is tested with (requirements.txt pins the same ones; environment.pins is the source).
TESTED_VERSIONS = {"numpy": "numpy<2", **{c.import_name: c.requirement() for c in COMPONENTS.values()}}


def qgis_profile_folder() -> Path:
    """The active QGIS user profile (``.../QGIS3/profiles/default``), which holds ``python/plugins``."""
    from qgis.core import QgsApplication  # imported here: this module is also used before QGIS starts Processing

    return Path(QgsApplication.qgisSettingsDirPath())


def local_packages_folder() -> Path:
    """``<profile>/python/modalseg_deps/py<version>``, where the installer puts packages."""
    return deps_folder(qgis_profile_folder())


def activate_local_packages() -> bool:
    """Called once when the plugin loads: make what the installer put there importable.

    Never raises: a plugin that cannot find its optional packages must still load and say so."""
    try:
        return activate(local_packages_folder())
    except Exception:  # noqa: BLE001 - see the docstring
        return False


def missing_packages(names: Iterable[str]) -> List[str]:
    """The subset of ``names`` (import names) that cannot be imported in this Python."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def _manual_command(missing: List[str]) -> str:
    """A pip command a user can run themselves: into the plugin-local folder, with QGIS's numpy
    pinned on the command line so that pip cannot bring numpy 2 along."""
    try:
        from ..environment.probes import find_python

        python = find_python()
    except (FileNotFoundError, OSError):
        python = "python3"
    try:
        folder = str(local_packages_folder())
    except Exception:  # noqa: BLE001 - outside a QGIS application: still give a usable command
        folder = "<QGIS profile>/python/modalseg_deps/py%d%d" % sys.version_info[:2]
    numpy = base_distributions().get("numpy")
    specs = [TESTED_VERSIONS.get(name, name) for name in missing if name != "numpy"]
    specs.append(f"numpy=={numpy[1]}" if numpy else "numpy<2")
    return " ".join(shlex.quote(part) for part in [python, "-m", "pip", "install", "--target", folder, *specs])


def missing_packages_message(missing: List[str], purpose: str) -> str:
    """Message for an analyst: what is missing, why it is needed, and how to fix it."""
    names = ", ".join(missing)
    return (f"ModalSeg needs the Python package(s) {names} for {purpose}, but the Python that QGIS uses "
            f"cannot import them. To fix it, run {INSTALL_HINT}: it installs the tested versions into a "
            f"folder of your QGIS profile without changing QGIS's own packages, and works at once. "
            f"Or install them yourself: {_manual_command(missing)} (on Windows, from the OSGeo4W shell), "
            f"then restart QGIS.")
