"""Pins, GPU probes, the interpreter search and the install plan: no QGIS, no network, no GPU."""
import re
import sys
from pathlib import Path

import pytest

from modalseg.environment.pins import COMPONENTS, PROFILES, missing_components, satisfies, usable_version
from modalseg.environment.plan import TORCH_CPU_INDEX, TORCH_CUDA_INDEX, make_plan
from modalseg.environment.probes import (GpuInfo, detect_nvidia_gpu, find_python, looks_like_python,
                                         probe_cuda_driver_library, probe_nvidia_smi, probe_proc_driver)

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_GPU = GpuInfo(False)
NVIDIA = GpuInfo(True, ["NVIDIA RTX A2000"], "550.54", ["fake probe"])


def versions(**found):
    """A fake importlib.metadata lookup: distribution -> version."""
    return lambda dist: found.get(dist)


def importable_if(*modules):
    return lambda name: name in modules


# -- pins ---------------------------------------------------------------------------------------------
def test_pins_match_requirements_txt():
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", (REPO_ROOT / "requirements.txt").read_text(), re.M))
    for component in COMPONENTS.values():
        if component.spec.startswith("=="):
            assert pinned.get(component.key) == component.spec[2:], component.key


def test_version_matching_ignores_local_labels():
    assert satisfies("2.13.0+cpu", "==2.13.0")
    assert not satisfies("1.19.2", "==1.20.1")
    assert satisfies("1.10.1", ">=1.9") and not satisfies("1.8.0", ">=1.9")


def test_missing_components_need_exact_version_only_where_pinned_exactly():
    lookup = versions(onnxruntime="1.16.0", scipy="1.7.0", **{"scikit-image": "0.21.0"})
    have = importable_if("onnxruntime", "scipy", "skimage")
    # an old onnxruntime is not the tested one; QGIS's own scikit-image and scipy are never replaced
    assert missing_components(["onnxruntime", "scikit-image", "scipy"], lookup, have) == ["onnxruntime"]
    assert missing_components(["scipy"], versions(), importable_if()) == ["scipy"]
    gpu_build = versions(**{"onnxruntime-gpu": "1.20.1"})
    assert usable_version(COMPONENTS["onnxruntime"], gpu_build, importable_if("onnxruntime")) == \
        ("onnxruntime-gpu", "1.20.1")


# -- the plan: CPU or CUDA builds -------------------------------------------------------------------
def test_nvidia_gpu_gives_onnxruntime_gpu():
    plan = make_plan("inference", gpu=NVIDIA, lookup=versions(), importable=importable_if(), platform="linux",
                     machine="x86_64")
    assert plan.use_cuda
    assert "onnxruntime-gpu==1.20.1" in plan.requirements
    assert not any(r.startswith("onnxruntime==") for r in plan.requirements)


def test_no_gpu_gives_cpu_onnxruntime():
    plan = make_plan("inference", gpu=NO_GPU, lookup=versions(), importable=importable_if(), platform="linux",
                     machine="x86_64")
    assert not plan.use_cuda
    assert "onnxruntime==1.20.1" in plan.requirements and not plan.extra_index_urls


def test_gpu_choice_through_injected_probes():
    fake_smi = lambda: GpuInfo(True, ["NVIDIA H100"], "555.42", ["nvidia-smi lists 1 GPU(s)"])  # noqa: E731
    absent = lambda: None  # noqa: E731
    with_gpu = make_plan(probes=[absent, fake_smi], only=["onnxruntime"], lookup=versions(),
                         importable=importable_if(), platform="linux", machine="x86_64")
    without = make_plan(probes=[absent, absent], only=["onnxruntime"], lookup=versions(),
                        importable=importable_if(), platform="linux", machine="x86_64")
    assert with_gpu.requirements == ["onnxruntime-gpu==1.20.1"]
    assert without.requirements == ["onnxruntime==1.20.1"]


def test_cpu_build_forced_and_platforms_without_cuda_wheels():
    forced = make_plan(build="cpu", gpu=NVIDIA, only=["onnxruntime"], lookup=versions(),
                       importable=importable_if(), platform="linux", machine="x86_64")
    assert forced.requirements == ["onnxruntime==1.20.1"]
    mac = make_plan(build="cuda", gpu=NVIDIA, only=["onnxruntime"], lookup=versions(),
                    importable=importable_if(), platform="darwin", machine="arm64")
    assert mac.requirements == ["onnxruntime==1.20.1"] and any("not published" in n for n in mac.notes)


def test_torch_index_per_platform_and_build():
    common = dict(profile="training", lookup=versions(), importable=importable_if())
    linux_cpu = make_plan(gpu=NO_GPU, platform="linux", machine="x86_64", **common)
    assert "torch==2.13.0" in linux_cpu.requirements and linux_cpu.extra_index_urls == [TORCH_CPU_INDEX]
    linux_cuda = make_plan(gpu=NVIDIA, platform="linux", machine="x86_64", **common)
    assert linux_cuda.extra_index_urls == []  # PyPI's Linux torch is the CUDA build
    windows_cuda = make_plan(gpu=NVIDIA, platform="win32", machine="AMD64", **common)
    assert windows_cuda.extra_index_urls == [TORCH_CUDA_INDEX]
    assert "onnxruntime-gpu==1.20.1" in windows_cuda.requirements
    windows_cpu = make_plan(gpu=NO_GPU, platform="win32", machine="AMD64", **common)
    assert windows_cpu.extra_index_urls == []
    command = linux_cpu.manual_command("/usr/bin/python3", "/home/me/deps", platform="linux")
    assert command.startswith("/usr/bin/python3 -m pip install --target /home/me/deps --constraint")
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in command


def test_plan_skips_what_qgis_has_and_is_idempotent():
    lookup = versions(onnxruntime="1.20.1", scipy="1.10.1")
    have = importable_if("onnxruntime", "scipy")
    plan = make_plan("inference", gpu=NO_GPU, lookup=lookup, importable=have, platform="linux", machine="x86_64")
    assert plan.requirements == ["scikit-image==0.24.0"]  # only what QGIS lacks
    assert ("scipy", "scipy", "1.10.1") in plan.already
    done = make_plan("inference", gpu=NO_GPU, only=["onnxruntime"], lookup=lookup, importable=have,
                     platform="linux", machine="x86_64")
    assert done.empty
    again = make_plan("inference", gpu=NO_GPU, only=["onnxruntime"], reinstall=True, lookup=lookup,
                      importable=have, platform="linux", machine="x86_64")
    assert again.requirements == ["onnxruntime==1.20.1"]


def test_switching_to_cuda_replans_cpu_builds():
    lookup = versions(onnxruntime="1.20.1", torch="2.13.0+cpu")
    have = importable_if("onnxruntime", "torch")
    plan = make_plan("training", gpu=NVIDIA, only=["onnxruntime", "torch"], lookup=lookup, importable=have,
                     platform="linux", machine="x86_64")
    assert plan.requirements == ["onnxruntime-gpu==1.20.1", "torch==2.13.0"]
    cpu = make_plan("training", gpu=NO_GPU, only=["onnxruntime", "torch"], lookup=lookup, importable=have,
                    platform="linux", machine="x86_64")
    assert cpu.empty


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown package"):
        make_plan(only=["tensorflow"], gpu=NO_GPU)
    with pytest.raises(ValueError):
        make_plan(profile="everything", gpu=NO_GPU)
    assert set(PROFILES["inference"]) <= set(PROFILES["training"])


# -- GPU probes ----------------------------------------------------------------------------------------
def test_nvidia_smi_probe_parses_names_and_driver():
    output = "NVIDIA H100 80GB HBM3, 550.54.15\nNVIDIA H100 80GB HBM3, 550.54.15\n"
    info = probe_nvidia_smi(which=lambda name: "/usr/bin/nvidia-smi", run=lambda command: output)
    assert info.present and info.names == ["NVIDIA H100 80GB HBM3"] * 2 and info.driver_version == "550.54.15"
    assert probe_nvidia_smi(which=lambda name: None) is None
    broken = probe_nvidia_smi(which=lambda name: "/usr/bin/nvidia-smi", run=lambda command: None)
    assert broken is not None and not broken.present


def test_proc_and_library_probes(tmp_path):
    version_file = tmp_path / "version"
    version_file.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 2024\n")
    info = probe_proc_driver(version_file)
    assert info.present and info.driver_version == "550.54.15"
    assert probe_proc_driver(tmp_path / "absent") is None

    def refuse(name):
        raise OSError(name)

    assert probe_cuda_driver_library("linux", load=refuse) is None
    assert probe_cuda_driver_library("win32", load=lambda name: object()).evidence == ["nvcuda.dll loads"]
    assert probe_cuda_driver_library("darwin", load=lambda name: object()) is None


def test_detection_combines_probes_and_survives_broken_ones():
    def explode():
        raise RuntimeError("boom")

    smi_fails = lambda: GpuInfo(False, evidence=["nvidia-smi is installed but failed"])  # noqa: E731
    driver = lambda: GpuInfo(True, [], "550.1", ["/proc/driver/nvidia/version exists"])  # noqa: E731
    info = detect_nvidia_gpu([explode, smi_fails, driver])
    assert info.present and info.driver_version == "550.1"
    assert any("boom" in e for e in info.evidence)
    assert not detect_nvidia_gpu([explode, smi_fails]).present
    assert not detect_nvidia_gpu([]).present


def test_this_machine_has_no_gpu_or_detection_is_consistent():
    info = detect_nvidia_gpu()
    assert isinstance(info.present, bool) and info.describe()


# -- the interpreter -------------------------------------------------------------------------------
def test_qgis_binary_is_not_taken_for_python():
    assert not looks_like_python("/usr/bin/qgis")
    assert not looks_like_python(r"C:\OSGeo4W\bin\qgis-bin.exe")
    assert looks_like_python("/usr/bin/python3.11") and looks_like_python(r"C:\x\python.exe")


def test_find_python_inside_qgis_on_linux():
    files = {"/usr/bin/python3.11"}
    found = find_python(executable="/usr/bin/qgis", base_executable="/usr/bin/qgis", prefixes=["/usr"],
                        version=(3, 11), platform="linux", base_prefix="/usr", is_file=files.__contains__,
                        facts=lambda p: ("3.11", "/usr"))
    assert found == "/usr/bin/python3.11"


def test_find_python_prefers_the_same_installation_over_a_shim_on_path():
    # qgis_process on a machine with pyenv: sys.executable is the first python3 on PATH
    facts = {"/root/.pyenv/shims/python3": ("3.11", "/root/.pyenv/versions/3.11.9"),
             "/usr/bin/python3.11": ("3.11", "/usr")}
    found = find_python(executable="/root/.pyenv/shims/python3", base_executable="", prefixes=["/usr"],
                        version=(3, 11), platform="linux", base_prefix="/usr", is_file=facts.__contains__,
                        facts=facts.get)
    assert found == "/usr/bin/python3.11"
    only_shim = {"/root/.pyenv/shims/python3": ("3.11", "/root/.pyenv/versions/3.11.9")}
    assert find_python(executable="/root/.pyenv/shims/python3", base_executable="", prefixes=["/usr"],
                       version=(3, 11), platform="linux", base_prefix="/usr", is_file=only_shim.__contains__,
                       facts=only_shim.get) == "/root/.pyenv/shims/python3"


def test_find_python_inside_qgis_on_windows_and_macos():
    windows = find_python(executable=r"C:\OSGeo4W\bin\qgis-bin.exe", base_executable="",
                          prefixes=[r"C:\OSGeo4W\apps\Python312"], version=(3, 12), platform="win32",
                          base_prefix=r"C:\OSGeo4W\apps\Python312", is_file=lambda p: p.endswith("python.exe"),
                          facts=lambda p: ("3.12", r"C:\OSGeo4W\apps\Python312"))
    assert windows.endswith("python.exe") and "Python312" in windows
    mac_prefix = "/Applications/QGIS.app/Contents/Frameworks"
    mac = find_python(executable="/Applications/QGIS.app/Contents/MacOS/QGIS", base_executable="",
                      prefixes=[mac_prefix], version=(3, 9), platform="darwin",
                      base_prefix=mac_prefix, is_file={f"{mac_prefix}/bin/python3"}.__contains__,
                      facts=lambda p: ("3.9", mac_prefix))
    assert mac == f"{mac_prefix}/bin/python3"


def test_find_python_checks_the_version_and_fails_clearly():
    with pytest.raises(FileNotFoundError, match="tried"):
        find_python(executable="/opt/qgis", base_executable="", prefixes=["/opt"], version=(3, 99),
                    platform="linux", is_file=lambda p: True, facts=lambda p: ("3.11", "/usr"))


def test_find_python_here_is_a_working_interpreter():
    found = find_python()
    assert Path(found).is_file()
    assert found == sys.executable  # in a venv, the venv's python (it has the venv's paths)


def test_unused_gpu_advice_only_for_an_auto_cpu_run_of_an_onnxruntime_without_cuda_beside_a_gpu():
    from modalseg.environment.probes import unused_gpu_advice

    gpu = GpuInfo(True, ["NVIDIA H200"])
    cpu_run = "CPU (onnxruntime CPUExecutionProvider, 2 threads, fp32 graph 'x.onnx')"
    advice = unused_gpu_advice("auto", cpu_run, "Install it", lambda: False, lambda: gpu)
    assert advice == ("this machine has NVIDIA H200, but the run used the CPU: the installed onnxruntime has no CUDA "
                      "support. Install it to run on the GPU, several times faster")
    asked = []
    for device, ran_on, has_cuda in [("cpu", cpu_run, False), ("auto", "GPU (onnxruntime CUDAExecutionProvider)", True),
                                     ("auto", cpu_run, True), ("auto", "CPU (torch, 2 threads)", False)]:
        assert unused_gpu_advice(device, ran_on, "", lambda: has_cuda, lambda: asked.append(device) or gpu) is None
    assert asked == []  # the probes (nvidia-smi can take seconds) run only when the rest holds
    assert unused_gpu_advice("auto", cpu_run, "", lambda: False, lambda: NO_GPU) is None
