"""The diagnostics report outside QGIS: versions and providers as this Python sees them."""
import importlib.metadata
import sys
from pathlib import Path

import pytest

from modalseg.environment.diagnostics import MISSING, REPORTED_PACKAGES, collect_report

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return collect_report(plugin_dir=REPO_ROOT, deps_dir=tmp_path_factory.mktemp("deps"),
                          models_dir=REPO_ROOT / "resources" / "models", probe_torch=True,
                          list_gpus=lambda: ["GPU 0: NVIDIA Fake (UUID: GPU-0)"])


def test_package_versions_are_the_installed_ones(report):
    for name in REPORTED_PACKAGES:
        value = report.value("Packages", name)
        try:
            expected = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            assert value.startswith(MISSING), (name, value)
        else:
            assert value.startswith(expected + " "), (name, value)


def test_onnxruntime_providers_and_torch_cuda(report):
    import numpy
    import onnxruntime
    import torch

    assert report.value("ONNX Runtime", "available providers") == ", ".join(onnxruntime.get_available_providers())
    assert report.value("PyTorch", "CUDA available") == ("yes" if torch.cuda.is_available() else "no")
    assert report.value("QGIS and Python", "numpy").startswith(numpy.__version__)
    assert report.value("QGIS and Python", "Python").startswith(sys.version.split()[0])
    from osgeo import gdal

    assert report.value("QGIS and Python", "GDAL").startswith(gdal.__version__)


def test_gpu_paths_and_bundled_models(report):
    assert "NVIDIA Fake" in report.value("GPU", "nvidia-smi -L")
    metadata = (REPO_ROOT / "metadata.txt").read_text()
    assert f"version={report.value('ModalSeg', 'ModalSeg version')}" in metadata
    assert "not created yet" in report.value("ModalSeg", "plugin-local packages folder") or \
        "exists" in report.value("ModalSeg", "plugin-local packages folder")
    from modalseg.engine import list_packages

    bundled = list_packages(REPO_ROOT / "resources" / "models")
    assert report.value("Model packages", "bundled packages") == str(len(bundled))
    for _, meta in bundled:
        assert report.value("Model packages", meta.name).startswith(meta.version)


def test_missing_packages_say_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # find_spec then reports it as absent
    monkeypatch.setitem(sys.modules, "torch", None)
    quick = collect_report(probe_torch=True, list_gpus=lambda: [])
    assert quick.value("Packages", "safetensors").startswith(MISSING)
    assert quick.value("PyTorch", "CUDA available").startswith(MISSING)


def test_text_and_html_renderings(report):
    text = report.to_text()
    html = report.to_html()
    assert "## Packages" in text and "onnxruntime" in text
    assert html.startswith("<html>") and "<h3>ONNX Runtime</h3>" in html
    assert "<script" not in collect_report(extra_paths={"x": "<script>"}, probe_torch=False,
                                           list_gpus=lambda: []).to_html()
