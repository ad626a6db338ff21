"""Fixtures for the QGIS side: one headless QGIS per session, the plugin loaded, a model package, data.

QGIS can be initialised only once per process and crashes at ``exitQgis()`` if a layer is still
alive, so the application lives in a session fixture that drops every layer before exiting.
"""
import gc
import os
import subprocess  # nosec B404 - tests run qgis_process with argument lists
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.plugin.helpers import (BUNDLED_MODELS, DEMO_DIR, DEMO_STEM, QGIS_PYTHON_PLUGINS, qgis_process_binary,
                                  qgis_process_env)

if QGIS_PYTHON_PLUGINS not in sys.path:
    sys.path.append(QGIS_PYTHON_PLUGINS)


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """A headless QgsApplication with Processing initialised and the ModalSeg plugin loaded."""
    os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(tmp_path_factory.mktemp("qgis-profile")))
    from qgis.core import QgsApplication, QgsProject

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import modalseg  # the checkout, through the symlinked plugin folder

    plugin = modalseg.classFactory(None)  # iface is None under qgis_process too
    plugin.initProcessing()
    yield app
    plugin.unload()
    QgsProject.instance().removeAllMapLayers()
    gc.collect()
    app.exitQgis()


@pytest.fixture(scope="session")
def model_package(tmp_path_factory) -> Path:
    """The .onnx of the package the plugin tests run: the first bundled one, else a tiny fixture.

    Until a bundled package lands in resources/models/, the lead's hand-built 'pixelwise' fixture
    (optical + nDSM, robustness output) stands in; every test takes its model from here.
    """
    from modalseg.engine import list_packages

    bundled = list_packages(BUNDLED_MODELS) if BUNDLED_MODELS.is_dir() else []
    if bundled:
        return Path(bundled[0][0])
    from tests.fixtures.onnx_models import make_pixelwise

    return Path(make_pixelwise(tmp_path_factory.mktemp("model") / "pixelwise"))


@pytest.fixture(scope="session")
def package_metadata(model_package):
    from modalseg.engine import load_package

    return load_package(model_package).metadata


@pytest.fixture(scope="session")
def demo() -> Dict[str, str]:
    return {kind: str(DEMO_DIR / f"{DEMO_STEM}_{kind}.tif") for kind in ("rgb", "ndsm", "dsm", "dtm", "label")}


@pytest.fixture(scope="session")
def qgis_process(tmp_path_factory):
    """Run ``qgis_process`` with an isolated profile in which the plugin is enabled."""
    profile = tmp_path_factory.mktemp("qgis-process-profile")
    env = qgis_process_env(profile)
    binary = qgis_process_binary()
    enabled = subprocess.run([binary, "plugins", "enable", "modalseg"], env=env, capture_output=True,  # nosec
                             text=True, timeout=120, check=False)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr

    def run(arguments: List[str], timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([binary] + arguments, env=env, capture_output=True, text=True,  # nosec
                              timeout=timeout, check=False)

    return run
