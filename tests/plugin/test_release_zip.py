"""Release plumbing: the installable zip and its checks (layout, metadata, Bandit)."""
import importlib.util
import subprocess  # nosec B404 - argument lists only
import sys
import zipfile

import pytest

from tests.plugin.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("modalseg_build", REPO_ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built_zip(build):
    """``build.py zip`` run once (it also checks the zip); the path of the zip it wrote."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "zip"], cwd=str(REPO_ROOT),  # nosec
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = build.read_metadata((REPO_ROOT / "metadata.txt").read_text(encoding="utf-8"))["version"]
    return REPO_ROOT / "dist" / f"modalseg-{version}.zip"


def test_zip_is_built_and_passes_its_checks(built_zip):
    with zipfile.ZipFile(built_zip) as archive:
        names = archive.namelist()
    assert {name.split("/", 1)[0] for name in names} == {"modalseg"}
    for required in ("modalseg/LICENSE", "modalseg/metadata.txt", "modalseg/__init__.py", "modalseg/icon.png",
                     "modalseg/processing_provider/algorithm_segment.py", "modalseg/engine/__init__.py",
                     "modalseg/resources/segment_class_areas.model3"):
        assert required in names, required
    for name in names:
        assert not name.startswith(("modalseg/tests/", "modalseg/.git", "modalseg/.venv/", "modalseg/benchmarks/",
                                    "modalseg/.ci/", "modalseg/build.py")), name
        assert "__pycache__" not in name and not name.endswith(".pyc"), name


def test_zip_ships_the_user_readme_not_the_developer_one(build, built_zip):
    with zipfile.ZipFile(built_zip) as archive:
        names = archive.namelist()
        readme = archive.read("modalseg/README.md").decode("utf-8")
    assert readme == (REPO_ROOT / "resources" / "USER_README.md").read_text(encoding="utf-8")
    for developer_word in ("build.py", "../shared", "pytest", "tests/"):
        assert developer_word not in readme, developer_word
    assert "Dependencies" in readme and "pip install" in readme  # how to get onnxruntime, from QGIS itself
    assert "modalseg/resources/USER_README.md" not in names
    assert not any(name.startswith(("modalseg/scripts/", "modalseg/docs/")) for name in names)
    assert build.zip_problems(built_zip) == []


def test_metadata_points_to_the_installer_and_has_a_changelog_of_this_version(build):
    metadata = build.read_metadata((REPO_ROOT / "metadata.txt").read_text(encoding="utf-8"))
    assert "python3 -m pip install onnxruntime" not in metadata["about"]  # fails on Debian 12 (PEP 668)
    assert "Install dependencies" in metadata["about"] and "Dependencies..." in metadata["about"]
    changelog = metadata["changelog"].strip().splitlines()
    assert changelog[0].strip() == metadata["version"], changelog[:2]
    assert any("fine-tune" in line.lower() for line in changelog) and len(changelog) >= 4


def test_check_rejects_a_bad_zip(build, tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("modalseg/metadata.txt", "[general]\nname=ModalSeg\nversion=0.1\n")
        archive.writestr("modalseg/__init__.py", "x = 1\n")
        archive.writestr("modalseg/tests/test_x.py", "")
        archive.writestr("other/readme.txt", "")
        archive.writestr("modalseg/README.md", "Run `python3 build.py test` with ../shared/data\n")
    problems = " | ".join(build.zip_problems(bad))
    for expected in ("one top-level folder", "LICENSE is missing", "'author' is missing", "classFactory",
                     "modalseg/tests/test_x.py must not be in the zip", "README.md in the zip is the developer README"):
        assert expected in problems, problems


def test_house_rules_scan_finds_shell_true_pickle_and_unsafe_torch_load(build, tmp_path):
    (tmp_path / "bad.py").write_text("import pickle\nimport subprocess\nsubprocess.run('ls', shell=True)\n"
                                     "import torch\ntorch.load('w.pt')\n")
    (tmp_path / "good.py").write_text("import torch\ntorch.load(path_of('w.pt'),\n           map_location='cpu', "
                                      "weights_only=True)\n")
    problems = " | ".join(build.code_problems(tmp_path))
    assert "shell=True" in problems and "pickle" in problems and "weights_only" in problems
    assert "good.py" not in problems
