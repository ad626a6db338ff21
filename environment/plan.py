"""Decide what to install on this machine, and spell out the pip command lines for it.

The plan is pure data computed from injected facts (GPU probe result, installed versions,
platform), so the choice of CPU or CUDA builds is tested without a GPU.
"""
import platform as _platform
import shlex
import subprocess  # nosec B404 - only list2cmdline, to quote a command for Windows users
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from ..engine import vocabulary
from .choices import BUILDS
from .pins import (COMPONENTS, PROFILES, Component, VersionLookup, components_for, installed_version, is_satisfied,
                   usable_version)
from .probes import GpuInfo, detect_nvidia_gpu

# PyPI's torch for Linux x86_64 is the CUDA build (several GB); the CPU build lives on PyTorch's
# own index. On Windows it is the other way round: PyPI has the CPU build, CUDA is on the index.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
CUDA_PLATFORMS = {("linux", "x86_64"), ("win32", "amd64")}  # where PyPI has onnxruntime-gpu wheels


@dataclass
class InstallPlan:
    """What to install: pinned requirements plus the pip options that choose the right builds."""

    profile: str
    use_cuda: bool
    gpu: GpuInfo
    requirements: List[str] = field(default_factory=list)
    already: List[Tuple[str, str, str]] = field(default_factory=list)  # (component, distribution, version)
    extra_index_urls: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def index_arguments(self) -> List[str]:
        arguments: List[str] = []
        for url in self.extra_index_urls:
            arguments += ["--extra-index-url", url]
        return arguments

    def pip_install_arguments(self, python: str, target: str, constraints: str) -> List[str]:
        """The single pip command that installs the plan into ``target`` (an argument list)."""
        return [python, "-m", "pip", "install", "--target", target, "--constraint", constraints,
                *self.index_arguments(), *self.requirements]

    def manual_command(self, python: str, target: str, platform: str = sys.platform,
                       constraints: str = "constraints.txt") -> str:
        """The same command for a user to paste in a terminal (once the constraints file exists:
        numpy and every package QGIS's Python has, pinned ``name==version``)."""
        arguments = self.pip_install_arguments(python, target, constraints)
        if platform == "win32":
            return subprocess.list2cmdline(arguments)
        return " ".join(shlex.quote(a) for a in arguments)

    def describe(self) -> List[str]:
        lines = [f"profile: {self.profile}; builds: {'CUDA' if self.use_cuda else 'CPU'} ({self.gpu.describe()})"]
        for component, dist, version in self.already:
            lines.append(f"already usable: {component} ({dist} {version})")
        lines += [f"to install: {r}" for r in self.requirements] or ["nothing to install"]
        lines += [f"package index: {u}" for u in self.extra_index_urls]
        lines += self.notes
        return lines


def _satisfied_for_build(component: Component, found: Optional[Tuple[str, str]], use_cuda: bool) -> bool:
    """Installed and usable, and for a CUDA install, a CUDA build (not onnxruntime or torch+cpu)."""
    if not is_satisfied(component, found):
        return False
    if use_cuda and found is not None:
        if component.gpu_dist and found[0] != component.gpu_dist:
            return False
        if component.key == "torch" and found[1].endswith("+cpu"):
            return False
    return True


def make_plan(profile: str = "inference", only: Optional[Sequence[str]] = None, build: str = "auto",
              reinstall: bool = False, gpu: Optional[GpuInfo] = None,
              probes: Optional[Sequence[Callable[[], Optional[GpuInfo]]]] = None,
              lookup: VersionLookup = installed_version, importable: Optional[Callable[[str], bool]] = None,
              platform: str = sys.platform, machine: Optional[str] = None) -> InstallPlan:
    """The install plan for ``profile`` ("inference" or "training") on this machine.

    ``only`` restricts it to some components (e.g. ``["onnxruntime"]``); ``build`` forces CPU or
    CUDA builds ("auto": CUDA exactly when an NVIDIA GPU with a driver is found); ``reinstall``
    plans components even when they are already usable. ``gpu``/``probes``/``lookup``/
    ``importable``/``platform``/``machine`` replace the real probes in tests."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
    if build not in vocabulary.keys(BUILDS):
        raise ValueError(f"build must be one of {', '.join(vocabulary.keys(BUILDS))}")
    machine = (machine or _platform.machine() or "").lower()
    if gpu is None:
        gpu = detect_nvidia_gpu(probes) if probes is not None else detect_nvidia_gpu()
    cuda_wheels = (platform, machine) in CUDA_PLATFORMS
    use_cuda = cuda_wheels and (build == "cuda" or (build == "auto" and gpu.present))
    plan = InstallPlan(profile=profile, use_cuda=use_cuda, gpu=gpu)
    if build == "cuda" and not cuda_wheels:
        plan.notes.append(f"CUDA builds are not published for {platform}/{machine}; installing CPU builds")
    elif build == "cuda" and not gpu.present:
        plan.notes.append("CUDA builds requested although no NVIDIA GPU with a driver was found")

    keys = list(PROFILES[profile])
    if only:
        keys = [c.key for c in components_for(only)]
    kwargs = {"importable": importable} if importable else {}
    for key in keys:
        component = COMPONENTS[key]
        found = usable_version(component, lookup, **kwargs)
        if not reinstall and _satisfied_for_build(component, found, use_cuda):
            plan.already.append((key, found[0], found[1]))  # type: ignore[index]
            continue
        plan.requirements.append(component.requirement(gpu=use_cuda))

    if any(r.startswith("torch") for r in plan.requirements):
        if platform == "linux" and machine == "x86_64" and not use_cuda:
            plan.extra_index_urls.append(TORCH_CPU_INDEX)
            plan.notes.append("torch: CPU build from PyTorch's index (PyPI's Linux build bundles CUDA, ~3 GB)")
        elif platform == "win32" and use_cuda:
            plan.extra_index_urls.append(TORCH_CUDA_INDEX)
            plan.notes.append("torch: CUDA build from PyTorch's index (PyPI's Windows build is CPU only)")
    if use_cuda and any(r.startswith("onnxruntime-gpu") for r in plan.requirements):
        plan.notes.append("onnxruntime-gpu 1.20 needs the CUDA 12 runtime and cuDNN 9 libraries "
                          "(the CUDA build of torch ships them); without them ONNX Runtime falls back "
                          "to the CPU and the diagnostics report says so")
    return plan
