"""The install algorithm and the missing-package message inside QGIS (no network: this venv has
everything, so installs are no-ops; the real download is in test_dependencies_fresh_venv.py)."""
import importlib.metadata
import sys

from tests.plugin.helpers import REPO_ROOT, recording_feedback


def test_algorithms_are_registered(qgis_app):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    for algorithm_id in ("modalseg:install_dependencies", "modalseg:diagnostics"):
        algorithm = registry.algorithmById(algorithm_id)
        assert algorithm is not None, algorithm_id
        assert algorithm.group() == "Environment" and algorithm.shortHelpString()


def test_plugin_local_folder_is_in_the_qgis_profile(qgis_app):
    from qgis.core import QgsApplication

    from modalseg.processing_provider.dependencies import local_packages_folder

    folder = local_packages_folder()
    assert str(folder).startswith(QgsApplication.qgisSettingsDirPath().rstrip("/"))
    assert folder.parts[-3:] == ("python", "modalseg_deps", "py%d%d" % sys.version_info[:2])


def test_plan_only_shows_the_plan(qgis_app):
    import processing

    feedback = recording_feedback()
    result = processing.run("modalseg:install_dependencies", {"ACTION": 2, "PROFILE": 1}, feedback=feedback)
    assert result["INSTALLED"] == ""
    assert any(line.startswith("profile: training; builds: CPU") for line in feedback.infos), feedback.infos
    assert any("already usable: onnxruntime (onnxruntime 1.20.1)" in line for line in feedback.infos)


def test_install_is_a_no_op_when_everything_is_there_and_remove_removes_nothing(qgis_app):
    import processing

    from modalseg.processing_provider.dependencies import local_packages_folder

    numpy_before = importlib.metadata.version("numpy")
    result = processing.run("modalseg:install_dependencies", {"PACKAGES": "onnxruntime"})
    assert result["INSTALLED"] == "" and result["FOLDER"] == str(local_packages_folder())
    removed = processing.run("modalseg:install_dependencies", {"ACTION": 1})
    assert removed["INSTALLED"] == ""
    assert importlib.metadata.version("numpy") == numpy_before


def test_unknown_package_is_refused(qgis_app):
    import processing
    import pytest
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="unknown package 'tensorflow'"):
        processing.run("modalseg:install_dependencies", {"PACKAGES": "tensorflow"})


def test_missing_message_names_the_installer_and_a_safe_pip_command(qgis_app):
    from modalseg.processing_provider.dependencies import local_packages_folder, missing_packages_message

    message = missing_packages_message(["onnxruntime", "torch"], "the torch runtime")
    assert "onnxruntime, torch" in message and "Install dependencies" in message
    assert f"--target {local_packages_folder()}" in message
    assert "onnxruntime==1.20.1" in message and "torch==2.13.0" in message
    assert f"numpy=={importlib.metadata.version('numpy')}" in message  # pip cannot bring numpy 2 along


def test_environment_package_never_imports_qgis():
    for path in (REPO_ROOT / "environment").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import qgis" not in text and "from qgis" not in text, path.name
