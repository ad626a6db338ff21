"""Facts about the machine that decide what to install: an NVIDIA GPU with its driver, and the
Python interpreter that pip must run with.

Every probe is a plain function taking its inputs as arguments, so tests inject fake ones
(there is no GPU on the test machines, and ``sys.executable`` is what it is).
"""
import ctypes
import os
import re
import shutil
import subprocess  # nosec B404 - fixed argument lists, no shell
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

NVIDIA_PROC_VERSION = Path("/proc/driver/nvidia/version")
# The CUDA driver library: loading it proves a driver is installed, without needing CUDA itself.
CUDA_DRIVER_LIBRARIES = {"win32": ("nvcuda.dll",), "darwin": ()}
DEFAULT_CUDA_DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so")
PROBE_TIMEOUT_S = 15


@dataclass
class GpuInfo:
    """What the probes found. ``present`` means an NVIDIA GPU *and* a usable driver."""

    present: bool
    names: List[str] = field(default_factory=list)
    driver_version: Optional[str] = None
    evidence: List[str] = field(default_factory=list)  # which probe said what, for the log

    def describe(self) -> str:
        if not self.present:
            return "no NVIDIA GPU with a driver found (" + "; ".join(self.evidence or ["no probe succeeded"]) + ")"
        names = ", ".join(self.names) or "unnamed GPU"
        driver = f", driver {self.driver_version}" if self.driver_version else ""
        return f"NVIDIA GPU found: {names}{driver}"


def _run_quietly(command: Sequence[str]) -> Optional[str]:
    """stdout of a command, or None when it is missing, fails or hangs (a wedged driver does)."""
    try:
        kwargs = {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if sys.platform == "win32" else {}
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,  # nosec B603
                                check=False, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def probe_nvidia_smi(which: Callable[[str], Optional[str]] = shutil.which,
                     run: Callable[[Sequence[str]], Optional[str]] = _run_quietly) -> Optional[GpuInfo]:
    """nvidia-smi lists GPUs only when the driver works; None when the tool is absent."""
    binary = which("nvidia-smi")
    if binary is None:
        return None
    output = run([binary, "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if output is None:
        return GpuInfo(False, evidence=["nvidia-smi is installed but failed (driver not loaded?)"])
    rows = [[part.strip() for part in line.split(",")] for line in output.splitlines() if line.strip()]
    names = [row[0] for row in rows]
    driver = rows[0][1] if rows and len(rows[0]) > 1 else None
    return GpuInfo(bool(names), names, driver, [f"nvidia-smi lists {len(names)} GPU(s)"])


def probe_proc_driver(path: Path = NVIDIA_PROC_VERSION) -> Optional[GpuInfo]:
    """Linux: the kernel module writes its version here once loaded."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([\d.]+)", text)
    return GpuInfo(True, [], match.group(1) if match else None, [f"{path} exists"])


def probe_cuda_driver_library(platform: str = sys.platform,
                              load: Callable[[str], object] = ctypes.CDLL) -> Optional[GpuInfo]:
    """The CUDA driver library loads only where an NVIDIA driver is installed."""
    for name in CUDA_DRIVER_LIBRARIES.get(platform, DEFAULT_CUDA_DRIVER_LIBRARIES):
        try:
            load(name)
        except OSError:
            continue
        return GpuInfo(True, [], None, [f"{name} loads"])
    return None


DEFAULT_PROBES = (probe_nvidia_smi, probe_proc_driver, probe_cuda_driver_library)


def detect_nvidia_gpu(probes: Sequence[Callable[[], Optional[GpuInfo]]] = DEFAULT_PROBES) -> GpuInfo:
    """Combine the probes: nvidia-smi is the most informative; the others are fallbacks for machines
    where it is not on PATH (Windows installs it in System32, containers often lack it)."""
    evidence: List[str] = []
    found: Optional[GpuInfo] = None
    for probe in probes:
        try:
            info = probe()
        except Exception as exc:  # a probe must never stop the install; record why it failed
            evidence.append(f"{getattr(probe, '__name__', 'probe')} failed: {exc}")
            continue
        if info is None:
            continue
        evidence += info.evidence
        if info.present and found is None:
            found = info
        elif info.present:
            found.names = found.names or info.names
            found.driver_version = found.driver_version or info.driver_version
        # A probe saying "no" (nvidia-smi failing) is not proof of absence: the others still decide.
    if found is None:
        return GpuInfo(False, evidence=evidence)
    found.evidence = evidence
    return found


def gpu_names(which: Callable[[str], Optional[str]] = shutil.which,
              run: Callable[[Sequence[str]], Optional[str]] = _run_quietly) -> List[str]:
    """``nvidia-smi -L`` lines (``GPU 0: NVIDIA H100 (UUID: ...)``); empty without nvidia-smi."""
    binary = which("nvidia-smi")
    output = run([binary, "-L"]) if binary else None
    return [line.strip() for line in (output or "").splitlines() if line.strip()]


# -- the Python interpreter -----------------------------------------------------------------------
_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$", re.IGNORECASE)


def looks_like_python(path: str) -> bool:
    """QGIS embeds Python, so ``sys.executable`` may be ``qgis``, ``qgis-bin.exe`` or ``QGIS``."""
    # Split on both separators: a Windows path must be recognised on any platform (tests, logs).
    return bool(path) and bool(_PYTHON_NAME.match(re.split(r"[\\/]", path)[-1]))


def python_candidates(executable: str, base_executable: Optional[str], prefixes: Sequence[str],
                      version: Sequence[int], platform: str) -> List[str]:
    """Where the interpreter of this Python may be, best first."""
    major, minor = version[0], version[1]
    candidates = [p for p in (executable, base_executable) if p and looks_like_python(p)]
    for prefix in prefixes:
        if not prefix:
            continue
        if platform == "win32":
            # OSGeo4W: <root>/apps/Python312/python.exe; the standalone installer: same layout.
            candidates += [os.path.join(prefix, "python.exe"), os.path.join(prefix, "python3.exe")]
        else:
            # Linux distributions and the macOS QGIS.app (Contents/Frameworks/.../bin).
            candidates += [os.path.join(prefix, "bin", f"python{major}.{minor}"),
                           os.path.join(prefix, "bin", f"python{major}"), os.path.join(prefix, "bin", "python")]
    if platform != "win32":
        candidates += [f"/usr/bin/python{major}.{minor}", f"/usr/local/bin/python{major}.{minor}"]
    return list(dict.fromkeys(candidates))


def interpreter_facts(path: str) -> Optional[Tuple[str, str]]:
    """("3.11", base prefix) of an interpreter, None when it does not run."""
    code = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.base_prefix)"
    output = _run_quietly([path, "-c", code])
    lines = (output or "").splitlines()
    return (lines[0].strip(), lines[1].strip()) if len(lines) >= 2 else None


def find_python(executable: Optional[str] = None, base_executable: Optional[str] = None,
                prefixes: Optional[Sequence[str]] = None, version: Optional[Sequence[int]] = None,
                platform: Optional[str] = None, base_prefix: Optional[str] = None,
                is_file: Callable[[str], bool] = os.path.isfile,
                facts: Callable[[str], Optional[Tuple[str, str]]] = interpreter_facts) -> str:
    """Path of the interpreter of the running Python (QGIS's), for ``-m pip``.

    Inside QGIS ``sys.executable`` is the QGIS binary, or whatever ``python3`` came first on PATH
    when QGIS started its embedded Python (a pyenv shim, a conda python...): a candidate counts
    only if it runs the same version, and one with the same ``sys.base_prefix`` (the same
    installation) is preferred. Every argument defaults to this process's values; tests pass
    their own. Raises FileNotFoundError with the places tried."""
    executable = sys.executable if executable is None else executable
    base_executable = getattr(sys, "_base_executable", None) if base_executable is None else base_executable
    prefixes = [sys.prefix, sys.exec_prefix, sys.base_prefix] if prefixes is None else prefixes
    version = tuple(sys.version_info[:2]) if version is None else version
    platform = sys.platform if platform is None else platform
    base_prefix = sys.base_prefix if base_prefix is None else base_prefix
    candidates = python_candidates(executable, base_executable, prefixes, version, platform)
    found = shutil.which(f"python{version[0]}.{version[1]}")
    if found:
        candidates.append(found)
    same_version: Optional[str] = None
    for candidate in candidates:
        if not is_file(candidate):
            continue
        answer = facts(candidate)
        if answer is None or answer[0] != f"{version[0]}.{version[1]}":
            continue
        if os.path.realpath(answer[1]) == os.path.realpath(base_prefix):
            return candidate
        same_version = same_version or candidate
    if same_version:
        return same_version  # another installation of the same version: its pip still fits the wheels
    raise FileNotFoundError(
        f"no Python {version[0]}.{version[1]} interpreter found for pip; tried: {', '.join(candidates)}")


def onnxruntime_has_cuda() -> bool:
    """Whether the importable onnxruntime is a CUDA build (imported here: only after a run used it)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def unused_gpu_advice(requested_device: str, ran_on: str, remedy: str,
                      has_cuda: Callable[[], bool] = onnxruntime_has_cuda,
                      gpu: Callable[[], GpuInfo] = lambda: detect_nvidia_gpu()) -> Optional[str]:
    """A sentence for an ONNX Runtime run that could have used the GPU and did not: device *auto*,
    the run on the CPU because the installed onnxruntime has no CUDA provider, and an NVIDIA GPU
    with a working driver present; ``remedy`` says how to install the CUDA build where the caller
    runs (the QGIS installer, pip). None otherwise; the probes run only when the rest holds.
    ``ran_on`` is the runner's description ("CPU (onnxruntime ...)" / "GPU (...)")."""
    if requested_device != "auto" or not ran_on.startswith("CPU (onnxruntime") or has_cuda():
        return None
    found = gpu()
    if not found.present:
        return None
    names = ", ".join(found.names) or "an NVIDIA GPU"
    return (f"this machine has {names}, but the run used the CPU: the installed onnxruntime has no CUDA "
            f"support. {remedy} to run on the GPU, several times faster")
