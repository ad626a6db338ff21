"""Expose the checkout as the package ``modalseg`` (the plugin's real name), whatever the folder is called.

A symlink ``modalseg`` -> checkout inside a temporary plugin folder is put first on ``sys.path``
and exported as ``QGIS_PLUGINPATH`` so QGIS and ``qgis_process`` find the same plugin. The
``shared_data`` fixture is the one way a test reaches ``../shared/data``: it skips, saying why,
where that folder is absent (a user's clone; ``MODALSEG_SHARED_DATA`` names another one).
"""
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

_plugin_dir = Path(tempfile.mkdtemp(prefix="modalseg-plugins-"))
(_plugin_dir / "modalseg").symlink_to(REPO_ROOT, target_is_directory=True)
sys.path.insert(0, str(_plugin_dir))
sys.path.insert(1, str(REPO_ROOT))  # for tests.fixtures
os.environ["QGIS_PLUGINPATH"] = str(_plugin_dir)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
PLUGIN_DIR = _plugin_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$MODALSEG_SHARED_DATA``); the test is skipped where it is absent."""
    from modalseg.models.data.shared_data import SHARED_DATA, SHARED_DATA_ENV

    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared sample data, absent at {SHARED_DATA} (set {SHARED_DATA_ENV} to its folder)")
    return SHARED_DATA
