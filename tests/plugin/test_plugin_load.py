"""The plugin as QGIS sees it: metadata, loading with and without optional packages, the provider."""
import configparser
import subprocess  # nosec B404 - argument lists only
import sys

import pytest

from tests.plugin.helpers import DEMO_DIR, DEMO_STEM, PLUGIN_DIR, QGIS_PYTHON_PLUGINS, REPO_ROOT

ADVANCED = ("TILE_SIZE", "OVERLAP", "BLEND", "BATCH_SIZE", "DEVICE", "RUNTIME", "OUTPUT_CRS", "OUTPUT_EXTENT",
            "OUTPUT_RESOLUTION", "MIN_MAPPING_UNIT", "SMOOTHING", "CLOUD_OPTIMIZED", "GROUND_WINDOW", "PRECISION",
            "SAR_SCALE", "DASK_SCHEDULER")
INPUTS = ("OPTICAL", "OPTICAL_BANDS", "OPTICAL_TYPE", "ELEVATION", "ELEVATION_BAND", "ELEVATION_TYPE", "DTM", "SAR",
          "SAR_BANDS", "NIR", "NIR_BAND", "MODEL", "MODEL_FILE")
OUTPUTS = ("OUTPUT", "ROBUSTNESS", "PROBABILITIES", "CONFIDENCE", "DOMINANT")


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this venv with the plugin folder importable."""
    return subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), capture_output=True, text=True,  # nosec
                          timeout=180, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(PLUGIN_DIR),
                               "QT_QPA_PLATFORM": "offscreen"})


def _with_plugin_loaded(body: str, before: str = "") -> str:
    """A script for ``_python``: ``before`` (e.g. hiding packages), then QGIS, Processing and the
    plugin started as QGIS starts them, ``body`` (with ``plugin``, ``processing`` and
    ``QgsApplication`` at hand), then everything stopped in order."""
    return f"""import sys
{before}
sys.path.append({QGIS_PYTHON_PLUGINS!r})
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import modalseg, processing
plugin = modalseg.classFactory(None)
plugin.initProcessing()
{body}
plugin.unload()
app.exitQgis()
"""


def test_metadata_has_everything_plugins_qgis_org_needs():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(REPO_ROOT / "metadata.txt", encoding="utf-8")
    meta = dict(parser.items("general"))
    for key in ("name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "license", "icon", "tags", "hasProcessingProvider"):
        assert meta.get(key, "").strip(), key
    assert meta["name"] == "ModalSeg"
    assert meta["qgisMinimumVersion"] == "3.22" and meta["qgisMaximumVersion"] == "4.99"
    assert meta["hasProcessingProvider"] == "yes"
    assert (REPO_ROOT / meta["icon"]).is_file()
    assert (REPO_ROOT / "LICENSE").read_text().startswith("                    GNU GENERAL PUBLIC LICENSE")


def test_engine_and_root_package_import_without_qgis():
    blocked = _python("import sys; sys.modules['qgis'] = None\n"
                      "import modalseg, modalseg.engine\n"
                      "assert hasattr(modalseg, 'classFactory')\n"
                      "print('ok')")
    assert blocked.returncode == 0, blocked.stderr
    assert "ok" in blocked.stdout


def test_plugin_loads_without_onnxruntime_and_torch_and_says_what_is_missing():
    hide = """for name in ("onnxruntime", "torch"):
    sys.modules[name] = None  # as if not installed"""
    body = f"""from qgis.core import QgsProcessingException
assert QgsApplication.processingRegistry().algorithmById("modalseg:segment") is not None
try:
    processing.run("modalseg:segment", {{"OPTICAL": {str(DEMO_DIR / (DEMO_STEM + "_rgb.tif"))!r},
                                        "OUTPUT": "TEMPORARY_OUTPUT"}})
except QgsProcessingException as exc:
    print("MESSAGE:", exc)
else:
    print("NO ERROR")"""
    result = _python(_with_plugin_loaded(body, before=hide))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MESSAGE:" in result.stdout, result.stdout + result.stderr
    message = result.stdout.split("MESSAGE:", 1)[1]
    assert "onnxruntime" in message and "pip install" in message


def test_provider_and_algorithm_are_registered(qgis_app):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("modalseg")
    assert provider is not None and provider.name() == "ModalSeg"
    assert not provider.icon().isNull()
    algorithm = registry.algorithmById("modalseg:segment")
    assert algorithm is not None
    assert "robustness" in algorithm.shortHelpString().lower()


def test_parameters_outputs_and_advanced_flags(qgis_app):
    from qgis.core import QgsApplication

    from modalseg.processing_provider.compat import FLAG_ADVANCED, FLAG_OPTIONAL

    algorithm = QgsApplication.processingRegistry().algorithmById("modalseg:segment")
    names = [p.name() for p in algorithm.parameterDefinitions()]
    for name in INPUTS + ADVANCED + OUTPUTS:
        assert name in names, name
    for definition in algorithm.parameterDefinitions():
        advanced = bool(definition.flags() & FLAG_ADVANCED)
        assert advanced == (definition.name() in ADVANCED), definition.name()
        assert definition.help(), f"{definition.name()} has no help text"
        if definition.name() in ("OPTICAL", "ELEVATION", "DTM", "SAR", "NIR", "MODEL_FILE"):
            assert definition.flags() & FLAG_OPTIONAL
    assert algorithm.parameterDefinition("ROBUSTNESS").createByDefault()
    assert not algorithm.parameterDefinition("PROBABILITIES").createByDefault()
    assert not algorithm.parameterDefinition("CONFIDENCE").createByDefault()
    assert algorithm.parameterDefinition("DOMINANT").createByDefault()
    assert algorithm.parameterDefinition("OPTICAL_BANDS").allowMultiple()
    assert algorithm.parameterDefinition("OPTICAL_BANDS").parentLayerParameterName() == "OPTICAL"
    assert [o.name() for o in algorithm.outputDefinitions()] == list(OUTPUTS)


def test_model_list_shows_bundled_packages(qgis_app):
    from qgis.core import QgsApplication

    from modalseg.engine import list_packages
    from modalseg.processing_provider.model_inputs import (AUTOMATIC_MODEL, BUNDLED_MODELS_DIR,
                                                           DEFAULT_BUNDLED_MODEL, NO_BUNDLED_MODEL)

    options = QgsApplication.processingRegistry().algorithmById("modalseg:segment") \
        .parameterDefinition("MODEL").options()
    bundled = list_packages(BUNDLED_MODELS_DIR) if BUNDLED_MODELS_DIR.is_dir() else []
    if bundled:
        assert len(options) == len(bundled) + 1
        assert options[0] == AUTOMATIC_MODEL  # enum default = index 0
        labels = {f"{meta.name} {meta.version}" for _, meta in bundled}
        assert {label.split(":")[0] for label in options[1:]} == labels
        default = next(meta for _, meta in bundled if meta.name == DEFAULT_BUNDLED_MODEL)
        assert options[1].startswith(f"{default.name} {default.version}")
    else:
        assert options == [NO_BUNDLED_MODEL]


@pytest.mark.parametrize("missing", [["onnxruntime"], ["onnxruntime", "torch"]])
def test_missing_package_message_names_package_and_fix(missing):
    from modalseg.processing_provider.dependencies import missing_packages_message

    message = missing_packages_message(missing, "the onnx runtime")
    for name in missing:
        assert name in message
    assert "pip install" in message and "restart QGIS" in message


def test_registering_the_algorithms_loads_no_training_code():
    """Building fine-tune's parameters needs only its options: the fine-tune loop, its data
    preparation and torch load when the algorithm runs, so a broken torch cannot stop the plugin
    loading (the bundled-model list reads packages through the engine, guarded against ImportError)."""
    body = """assert QgsApplication.processingRegistry().algorithmById("modalseg:finetune") is not None
heavy = [name for name in ("torch", "modalseg.models.finetune.loop", "modalseg.models.finetune.prepare",
                           "modalseg.models.networks") if name in sys.modules]
print("HEAVY:", heavy)"""
    result = _python(_with_plugin_loaded(body))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY: []" in result.stdout, result.stdout + result.stderr
