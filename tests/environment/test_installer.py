"""The installer's staging, pruning, manifest, replacement and removal, with a fake pip (no network).

The real pip run against the package registry is in tests/plugin/test_dependencies_fresh_venv.py.
"""
import json
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from modalseg.environment.installer import (MANIFEST_NAME, InstallError, PipProgress, activate, base_distributions,
                                            constraints_text, deactivate, deps_folder, install, read_manifest,
                                            uninstall)
from modalseg.environment.plan import make_plan
from modalseg.environment.probes import GpuInfo

# What the fake index resolves each requirement to: distribution -> (version, top-level names, dependencies)
INDEX = {
    "onnxruntime": ("1.20.1", ["onnxruntime"], ["numpy", "flatbuffers"]),
    "onnxruntime-gpu": ("1.20.1", ["onnxruntime"], ["numpy", "flatbuffers"]),
    "flatbuffers": ("25.1.0", ["flatbuffers"], []),
    "numpy": ("1.24.2", ["numpy"], []),
}
BASE = {"numpy": ("numpy", "1.24.2"), "scipy": ("scipy", "1.10.1")}  # what "QGIS's Python" has


class FakePip:
    """Stands in for ``python -m pip``: answers --version, writes --report, 'installs' into --target."""

    def __init__(self, pip_version: str = "23.0.1", fail_install: bool = False, cancel_after: int = -1):
        self.pip_version, self.fail_install, self.cancel_after = pip_version, fail_install, cancel_after
        self.commands: List[List[str]] = []

    def resolve(self, requirements: List[str], with_installed: bool) -> Dict[str, str]:
        found: Dict[str, str] = {}
        todo = [r.split("==")[0] for r in requirements if not r.startswith("-")]
        while todo:
            name = todo.pop()
            if name in found or (with_installed and name in BASE):
                continue
            found[name] = INDEX[name][0]
            todo += INDEX[name][2]
        return found

    def __call__(self, arguments, env, on_line, is_cancelled) -> int:
        self.commands.append(arguments)
        assert arguments[1:3] == ["-m", "pip"]
        if arguments[3] == "--version":
            on_line(f"pip {self.pip_version} from /usr/lib/python3/dist-packages/pip (python 3.11)")
            return 0
        requirements = [a for a in arguments if "==" in a and not a.startswith("-") and "/" not in a]
        if "--dry-run" in arguments:
            resolved = self.resolve(requirements, with_installed=True)
            for name in resolved:
                on_line(f"Collecting {name}")
            report = {"version": "1", "install": [{"metadata": {"name": n, "version": v}} for n, v in resolved.items()]}
            Path(arguments[arguments.index("--report") + 1]).write_text(json.dumps(report))
            return 0
        target = Path(arguments[arguments.index("--target") + 1])
        resolved = self.resolve(requirements, with_installed=False) if "--no-deps" not in arguments else \
            dict(r.split("==") for r in requirements)
        for count, (name, version) in enumerate(resolved.items()):
            if count == self.cancel_after:
                assert is_cancelled()
                raise InstallError("cancelled; nothing was changed in the dependency folder")
            on_line(f"Downloading {name}-{version}-py3-none-any.whl (1.0 MB)")
        if self.fail_install:
            on_line("ERROR: No matching distribution found for onnxruntime==1.20.1")
            return 1
        target.mkdir(parents=True, exist_ok=True)
        for name, version in resolved.items():
            info = target / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            records = [f"{info.name}/METADATA", f"{info.name}/RECORD", f"../../bin/{name}-tool"]
            for top in INDEX[name][1]:
                (target / top).mkdir(exist_ok=True)
                (target / top / "__init__.py").write_text(f"__version__ = {version!r}  # {name}\n")
                records.append(f"{top}/__init__.py")
            (info / "RECORD").write_text("\n".join(f"{r},," for r in records) + "\n")
        on_line("Successfully installed " + " ".join(f"{n}-{v}" for n, v in resolved.items()))
        return 0


def plan_for(name: str = "onnxruntime"):
    gpu = GpuInfo(name.endswith("-gpu"), ["fake"] if name.endswith("-gpu") else [])
    return make_plan(only=["onnxruntime"], gpu=gpu, lookup=lambda d: None, importable=lambda m: False,
                     platform="linux", machine="x86_64")


@pytest.fixture
def folder(tmp_path):
    path = deps_folder(tmp_path / "profile", (3, 11))
    yield path
    deactivate(path)


def test_folder_layout(tmp_path):
    assert deps_folder(tmp_path, (3, 12)) == tmp_path / "python" / "modalseg_deps" / "py312"


def test_install_resolves_against_qgis_and_installs_only_what_is_missing(folder):
    pip = FakePip()
    lines: List[str] = []
    steps: List[float] = []
    result = install(plan_for(), folder, python="/usr/bin/python3", runner=pip, base=BASE, log=lines.append,
                     progress=lambda fraction, text: steps.append(fraction))
    assert sorted(result.installed) == [("flatbuffers", "25.1.0"), ("onnxruntime", "1.20.1")]
    dry_run, real = pip.commands[1], pip.commands[2]
    assert "--dry-run" in dry_run and "--target" not in dry_run
    assert "--target" in real and "--no-deps" in real and "numpy==1.24.2" not in real
    constraints = Path(real[real.index("--constraint") + 1])
    assert not constraints.exists()  # staging is cleaned up
    assert (folder / "onnxruntime" / "__init__.py").exists() and not (folder / "numpy").exists()
    assert not (folder / "bin").exists() and not list(folder.parent.glob(".staging-*"))
    manifest = read_manifest(folder)
    assert set(manifest["dists"]) == {"onnxruntime", "flatbuffers"}
    assert manifest["requirements"] == ["onnxruntime==1.20.1"]
    assert steps == sorted(steps) and steps[-1] == 1.0
    assert str(folder) == sys.path[0]  # importable at once


def test_old_pip_installs_with_dependencies_then_drops_what_qgis_has(folder):
    pip = FakePip(pip_version="21.3.1")
    result = install(plan_for(), folder, python="/usr/bin/python3", runner=pip, base=BASE)
    assert not any("--dry-run" in c for c in pip.commands)
    assert ("numpy", "1.24.2") in result.provided_by_qgis
    assert not (folder / "numpy").exists() and (folder / "onnxruntime").exists()
    assert "numpy" not in read_manifest(folder)["dists"]


def test_switching_build_replaces_the_old_distribution(folder):
    install(plan_for("onnxruntime"), folder, python="python3", runner=FakePip(), base=BASE)
    result = install(plan_for("onnxruntime-gpu"), folder, python="python3", runner=FakePip(), base=BASE)
    assert ("onnxruntime", "1.20.1") in result.replaced
    assert not list(folder.glob("onnxruntime-1.20.1.dist-info"))
    assert list(folder.glob("onnxruntime_gpu-1.20.1.dist-info"))
    assert "onnxruntime-gpu" in read_manifest(folder)["dists"] and "onnxruntime" not in read_manifest(folder)["dists"]


def test_empty_plan_does_nothing():
    plan = make_plan(only=["onnxruntime"], gpu=GpuInfo(False), lookup=lambda d: "1.20.1",
                     importable=lambda m: True, platform="linux", machine="x86_64")
    pip = FakePip()
    result = install(plan, Path("/nonexistent/deps"), python="python3", runner=pip, base=BASE)
    assert result.nothing_to_do and pip.commands == []


def test_failed_or_cancelled_install_leaves_the_folder_as_it_was(folder):
    install(plan_for(), folder, python="python3", runner=FakePip(), base=BASE)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(InstallError, match="No matching distribution"):
        install(plan_for("onnxruntime-gpu"), folder, python="python3", runner=FakePip(fail_install=True), base=BASE)
    with pytest.raises(InstallError, match="cancelled"):
        install(plan_for("onnxruntime-gpu"), folder, python="python3", runner=FakePip(cancel_after=1), base=BASE,
                is_cancelled=lambda: True)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not list(folder.parent.glob(".staging-*"))


def test_missing_pip_is_reported(folder):
    def no_pip(arguments, env, on_line, is_cancelled):
        on_line("/usr/bin/python3: No module named pip")
        return 1

    with pytest.raises(InstallError, match="pip is not available"):
        install(plan_for(), folder, python="/usr/bin/python3", runner=no_pip, base=BASE)


def test_uninstall_removes_exactly_what_was_installed(folder):
    install(plan_for(), folder, python="python3", runner=FakePip(), base=BASE)
    (folder / "my_own_module.py").write_text("x = 1\n")  # not ModalSeg's: must survive
    removed = uninstall(folder)
    assert sorted(removed) == [("flatbuffers", "25.1.0"), ("onnxruntime", "1.20.1")]
    assert sorted(p.name for p in folder.iterdir()) == ["my_own_module.py"]
    (folder / "my_own_module.py").unlink()
    install(plan_for(), folder, python="python3", runner=FakePip(), base=BASE)
    uninstall(folder)
    assert not folder.exists() and not folder.parent.exists()  # empty folders go too
    assert uninstall(folder) == []  # removing twice is fine


def test_manifest_entries_cannot_escape_the_folder(folder):
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(
        {"version": 1, "dists": {"evil": {"name": "evil", "version": "1", "entries": ["../../outside"]}}}))
    with pytest.raises(InstallError, match="refusing"):
        uninstall(folder)


def test_constraints_pin_what_qgis_has_except_the_packages_installed():
    text = constraints_text({"numpy": ("numpy", "1.24.2"), "onnxruntime": ("onnxruntime", "1.16.0"),
                             "python-apt": ("python-apt", "2.6.0"), "odd": ("odd", "1.0~git")},
                            free=["onnxruntime", "onnxruntime-gpu"])
    lines = text.splitlines()
    assert "numpy==1.24.2" in lines and "python-apt==2.6.0" in lines
    assert not any(l.startswith("onnxruntime") or l.startswith("odd") for l in lines)


def test_base_distributions_see_numpy_and_leave_the_folder_out(tmp_path):
    base = base_distributions(exclude=tmp_path)
    import numpy

    assert base["numpy"][1] == numpy.__version__


def test_activate_only_existing_folders_once(tmp_path):
    assert not activate(tmp_path / "missing")
    assert activate(tmp_path) and not activate(tmp_path)
    deactivate(tmp_path)
    assert str(tmp_path) not in sys.path


def test_progress_lines():
    seen = []
    logged = []
    watcher = PipProgress(lambda fraction, text: seen.append((fraction, text)), logged.append, 0.3, 0.9, expected=2)
    for line in ["Collecting onnxruntime==1.20.1", "  Downloading onnxruntime-1.20.1-cp311.whl (13.3 MB)",
                 "Requirement already satisfied: numpy", "Installing collected packages: onnxruntime",
                 "ERROR: boom", ""]:
        watcher(line)
    texts = [t for _, t in seen]
    assert texts[0] == "Resolving onnxruntime==1.20.1"
    assert texts[1] == "Downloading onnxruntime-1.20.1-cp311.whl (13.3 MB)"
    assert texts[2] == "Installing onnxruntime"
    assert all(0.3 <= f <= 0.9 for f, _ in seen) and watcher.errors == ["ERROR: boom"]
    # each line reaches the user once: as progress text (Processing logs it) or as a log line
    assert logged == ["Requirement already satisfied: numpy", "ERROR: boom"]


def test_every_pip_line_of_an_install_reaches_the_user_once(folder):
    pip = FakePip()
    logged: List[str] = []
    texts: List[str] = []
    install(plan_for(), folder, python="/usr/bin/python3", runner=pip, base=BASE, log=logged.append,
            progress=lambda fraction, text: texts.append(text))
    shown = logged + texts  # what a Processing dialog shows: log lines and progress texts
    for needle in ("flatbuffers-25.1.0-py3-none-any.whl", "onnxruntime-1.20.1-py3-none-any.whl",
                   "Successfully installed"):
        assert sum(needle in line for line in shown) == 1, (needle, shown)


def test_windows_refuses_to_replace_a_loaded_module(folder, monkeypatch):
    import types

    install(plan_for("onnxruntime"), folder, python="python3", runner=FakePip(), base=BASE)
    loaded = types.ModuleType("onnxruntime_loaded")
    loaded.__file__ = str(folder / "onnxruntime" / "__init__.py")
    monkeypatch.setitem(sys.modules, "onnxruntime_loaded", loaded)
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(InstallError, match="restart QGIS"):
        install(plan_for("onnxruntime-gpu"), folder, python="python3", runner=FakePip(), base=BASE)
    monkeypatch.undo()
    assert "onnxruntime" in read_manifest(folder)["dists"]  # untouched
