"""Expose the checkout as the package ``modalseg`` (the plugin's real name), whatever the folder is called.

A symlink ``modalseg`` -> checkout inside a temporary plugin folder is put first on ``sys.path``
and exported as ``QGIS_PLUGINPATH`` so QGIS and ``qgis_process`` find the same plugin.
"""
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

_plugin_dir = Path(tempfile.mkdtemp(prefix="modalseg-plugins-"))
(_plugin_dir / "modalseg").symlink_to(REPO_ROOT, target_is_directory=True)
sys.path.insert(0, str(_plugin_dir))
sys.path.insert(1, str(REPO_ROOT))  # for tests.fixtures
os.environ["QGIS_PLUGINPATH"] = str(_plugin_dir)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
PLUGIN_DIR = _plugin_dir
