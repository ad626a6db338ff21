"""A QGIS Python without onnxruntime: the plugin loads, segment says what is missing, the installer
fetches onnxruntime from the package registry into the plugin-local folder, segment then runs (in
the same QGIS session, and in a fresh ``qgis_process`` through the start-up hook), numpy is
unchanged, and the packages can be removed again.

Needs the package registry (PyPI or the pip configuration's mirror): deselect with ``-m "not network"``.
"""
import json
import os
import subprocess  # nosec B404 - argument lists only
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.helpers import PLUGIN_DIR, QGIS_PYTHON_PLUGINS, qgis_process_binary, read_raster

SYSTEM_PYTHON = Path("/usr/bin/python3")
HEAVY = ("onnxruntime", "torch", "onnx", "safetensors", "skimage")

SCRIPT = r"""
import importlib.metadata, json, sys, time
sys.path.append(QGIS_PYTHON_PLUGINS)
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import modalseg, processing

class Recorder(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.texts, self.infos = [], []
    def setProgressText(self, text):
        self.texts.append(text)
    def pushInfo(self, text):
        self.infos.append(text)

out = {"numpy_before": importlib.metadata.version("numpy"), "executable": sys.executable}
plugin = modalseg.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
out["registered"] = [a for a in ("segment", "install_dependencies", "diagnostics")
                     if registry.algorithmById("modalseg:" + a) is not None]
segment = dict(OPTICAL=RGB, ELEVATION=NDSM, ELEVATION_TYPE=2, MODEL_FILE=MODEL, OUTPUT=OUT_DIR + "/first.tif",
               ROBUSTNESS=None)
try:
    processing.run("modalseg:segment", segment)
except QgsProcessingException as exc:
    out["segment_error"] = str(exc)
feedback = Recorder()
started = time.monotonic()
result = processing.run("modalseg:install_dependencies", {"PACKAGES": "onnxruntime"}, feedback=feedback)
out["install_seconds"] = time.monotonic() - started
out["install"] = result
out["progress_texts"] = feedback.texts
out["install_log"] = feedback.infos
segment["OUTPUT"] = OUT_DIR + "/same_session.tif"
out["segment_same_session"] = processing.run("modalseg:segment", segment)["OUTPUT"]
import onnxruntime
out["onnxruntime_file"] = onnxruntime.__file__
out["providers"] = onnxruntime.get_available_providers()
again = Recorder()
out["again"] = processing.run("modalseg:install_dependencies", {"PACKAGES": "onnxruntime"}, feedback=again)
out["again_log"] = again.infos
out["numpy_after"] = importlib.metadata.version("numpy")
print("RESULT:" + json.dumps(out), flush=True)
plugin.unload()
app.exitQgis()
"""


def _clean_env(profile: Path) -> dict:
    """No trace of the development venv: a QGIS Python with only what Debian ships."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({"QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(PLUGIN_DIR),
                "QGIS_CUSTOM_CONFIG_PATH": str(profile), "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1"})
    return env


@pytest.mark.network
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="needs Debian's /usr/bin/python3 with QGIS")
def test_fresh_qgis_python_installs_onnxruntime_and_segments(tmp_path, demo, model_package, package_metadata):
    venv, profile, outputs = tmp_path / "venv", tmp_path / "profile", tmp_path / "out"
    outputs.mkdir()
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)  # nosec B603 - pip comes from Debian's site-packages
    python = venv / "bin" / "python"
    env = _clean_env(profile)
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, numpy, osgeo, qgis.core; "  # nosec
                            f"print([n for n in {HEAVY!r} if u.find_spec(n)])"],
                           env=env, capture_output=True, text=True, timeout=120, check=True)
    assert probe.stdout.strip() == "[]", "the fresh venv already has heavy packages: " + probe.stdout

    constants = {"QGIS_PYTHON_PLUGINS": QGIS_PYTHON_PLUGINS, "RGB": demo["rgb"], "NDSM": demo["ndsm"],
                 "MODEL": str(model_package), "OUT_DIR": str(outputs)}
    script = "".join(f"{name} = {value!r}\n" for name, value in constants.items()) + SCRIPT
    run = subprocess.run([str(python), "-c", script], env={**env, "PYTHONPATH": str(PLUGIN_DIR)},  # nosec B603
                         capture_output=True, text=True, timeout=600, check=False)
    assert "RESULT:" in run.stdout, run.stdout[-4000:] + run.stderr[-4000:]
    out = json.loads(run.stdout.split("RESULT:", 1)[1].splitlines()[0])
    print(f"\ninstall of onnxruntime: {out['install_seconds']:.1f} s; " +
          "; ".join(line for line in out["install_log"] if line.startswith("Installed")))

    assert out["registered"] == ["segment", "install_dependencies", "diagnostics"]
    message = out.get("segment_error", "")
    assert "onnxruntime" in message and "Install dependencies" in message and "pip install" in message
    assert not (outputs / "first.tif").exists()

    folder = Path(out["install"]["FOLDER"])
    assert folder.is_relative_to(profile) and folder.name == "py%d%d" % sys.version_info[:2]
    assert out["install"]["INSTALLED"].startswith("onnxruntime 1.20.1") or "onnxruntime 1.20.1" in \
        out["install"]["INSTALLED"]
    assert out["onnxruntime_file"].startswith(str(folder))
    assert not (folder / "numpy").exists()  # QGIS's numpy is used, never a copy
    assert any(text.startswith("Downloading onnxruntime") or text.startswith("Resolving onnxruntime")
               for text in out["progress_texts"]), out["progress_texts"]
    manifest = json.loads((folder / "modalseg-manifest.json").read_text())
    assert manifest["dists"]["onnxruntime"]["version"] == "1.20.1"
    assert out["numpy_after"] == out["numpy_before"]
    assert out["again"]["INSTALLED"] == "" and any("Nothing to install" in l for l in out["again_log"])

    info = read_raster(out["segment_same_session"])
    values = set(np.unique(info["data"]).tolist()) - {info["nodata"][0]}
    assert values and values <= set(package_metadata.class_values)

    # A new QGIS process: the start-up hook puts the folder on sys.path; qgis_process's own Python.
    binary = qgis_process_binary()
    enabled = subprocess.run([binary, "plugins", "enable", "modalseg"], env=env, capture_output=True,  # nosec
                             text=True, timeout=120, check=False)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    classes = outputs / "qgis_process.tif"
    started = time.monotonic()
    segmented = subprocess.run([binary, "run", "modalseg:segment", "--json", "--", f"OPTICAL={demo['rgb']}",  # nosec
                                f"ELEVATION={demo['ndsm']}", "ELEVATION_TYPE=2", f"MODEL_FILE={model_package}",
                                f"OUTPUT={classes}"], env=env, capture_output=True, text=True, timeout=300,
                               check=False)
    assert segmented.returncode == 0, segmented.stdout[-3000:] + segmented.stderr[-3000:]
    log = json.loads(segmented.stdout)["log"]["info"]
    assert any(line.startswith("Ran ") and " on CPU (onnxruntime" in line for line in log), log
    print(f"qgis_process segment after install: {time.monotonic() - started:.1f} s")
    info = read_raster(str(classes))
    assert set(np.unique(info["data"]).tolist()) - {info["nodata"][0]} <= set(package_metadata.class_values)

    report = subprocess.run([binary, "run", "modalseg:diagnostics", "--json", "--", "PROBE_TORCH=false",  # nosec
                             f"OUTPUT={outputs / 'diagnostics.html'}"], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    text = json.loads(report.stdout)["results"]["TEXT"]
    assert f"numpy               : {out['numpy_before']} from /usr/lib/python3/dist-packages" in text, text
    assert "onnxruntime                      : 1.20.1 from plugin-local folder" in text, text
    assert "available providers : " + ", ".join(out["providers"]) in text

    removed = subprocess.run([binary, "run", "modalseg:install_dependencies", "--", "ACTION=1"], env=env,  # nosec
                             capture_output=True, text=True, timeout=300, check=False)
    assert removed.returncode == 0, removed.stdout[-3000:] + removed.stderr[-3000:]
    assert not folder.exists()
