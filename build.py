#!/usr/bin/env python3
"""Set up, demo, test and package ModalSeg.

    python3 build.py setup-and-demo   # apt: QGIS + bindings; .venv; pip; run segment on the demo data
    python3 build.py setup            # only the set-up part (what CI runs first)
    python3 build.py demo [model.onnx] # only the demo run (default: the first bundled model)
    python3 build.py test [pytest args]
    python3 build.py zip              # dist/modalseg-<version>.zip, then `check` on it
    python3 build.py check [zip]      # metadata fields, zip layout, Bandit scan (medium severity and up)

Runs with any Python 3.8+; everything that needs QGIS runs in .venv, a virtual environment made
from Debian's /usr/bin/python3 with --system-site-packages (QGIS's bindings come from apt).
Every external command is run with an argument list (never through a shell).
"""
import argparse
import configparser
import os
import re
import shutil
import subprocess  # nosec B404 - build tool: runs apt, pip, pytest, qgis_process with fixed argument lists
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent
PACKAGE_NAME = "modalseg"
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
SYSTEM_PYTHON = Path("/usr/bin/python3")
BUILD_DIR = ROOT / "build"
DIST_DIR = ROOT / "dist"
DEMO_DIR = ROOT / "resources" / "demo"
DEMO_OUT = ROOT / "out" / "demo"
DEMO_STEM = "lidarprod_870000_6618000"

APT_PACKAGES = ["qgis", "python3-qgis", "qgis-providers", "python3-gdal", "python3-venv", "python3-pip"]
BACKPORTS_SOURCE = Path("/etc/apt/sources.list.d/modalseg-backports.sources")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Top-level entries of the checkout that never go into the plugin zip.
ZIP_EXCLUDED_TOP = {".git", ".ci", ".venv", ".github", ".gitignore", ".pytest_cache", "tests", "benchmarks",
                    "build", "dist", "out", "build.py", "shared", "pytest.ini", "tox.ini", "setup.cfg", "conftest.py",
                    ".pre-commit-config.yaml", ".editorconfig", ".flake8", "mypy.ini", "scripts", "docs",
                    "README.md"}
# The checkout's README is for developers (build.py, ../shared, tests); users get this one as README.md.
USER_README = Path("resources") / "USER_README.md"
ZIP_README = "README.md"
DEVELOPER_README_MARKS = ("build.py", "../shared", "pytest")
ZIP_EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints"}
ZIP_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".aux.xml", ".tmp.tif", ".orig", ".rej", ".swp")
# Fields plugins.qgis.org rejects an upload without, and those this project always fills.
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository")
PROJECT_METADATA = ("qgisMaximumVersion", "tracker", "homepage", "license", "icon", "tags",
                    "hasProcessingProvider")
MAX_ZIP_BYTES = 25 * 1024 * 1024  # plugins.qgis.org upload limit


class BuildError(RuntimeError):
    """A step failed; the message says which and what to do."""


def say(text: str) -> None:
    print(f"[build.py] {text}", flush=True)


def run(command: Sequence[str], env: Optional[Dict[str, str]] = None, check: bool = True,
        cwd: Optional[Path] = None) -> int:
    say("$ " + " ".join(str(c) for c in command))
    result = subprocess.run([str(c) for c in command], env=env, cwd=str(cwd or ROOT), check=False)  # nosec B603
    if check and result.returncode != 0:
        raise BuildError(f"command failed with exit code {result.returncode}: {' '.join(map(str, command))}")
    return result.returncode


def succeeds(command: Sequence[str], env: Optional[Dict[str, str]] = None) -> bool:
    try:
        return subprocess.run([str(c) for c in command], env=env, stdout=subprocess.DEVNULL,  # nosec B603
                              stderr=subprocess.DEVNULL, check=False).returncode == 0
    except OSError:
        return False


# -- set-up ---------------------------------------------------------------------------------------
def qgis_process_binary() -> Optional[str]:
    """Debian's /usr/bin/qgis_process is a wrapper that fails headless; the real binary is .bin."""
    return shutil.which("qgis_process.bin") or shutil.which("qgis_process")


def system_has_qgis() -> bool:
    return (SYSTEM_PYTHON.exists() and qgis_process_binary() is not None
            and succeeds([SYSTEM_PYTHON, "-c", "import qgis.core, osgeo.gdal, ensurepip"],
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}))


def os_release() -> Dict[str, str]:
    values: Dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip().strip('"')
    except OSError:
        pass
    return values


def apt_source_uris(codename: str) -> List[str]:
    """Debian mirror URIs already configured for ``codename`` (deb822 and one-line formats)."""
    uris: List[str] = []
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
            if codename in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                uris += [u for u in fields.get("URIs", "").split() if "debian" in u]
    list_files = [Path("/etc/apt/sources.list")] + (sorted(sources.glob("*.list")) if sources.is_dir() else [])
    for path in list_files:
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if match and match.group(2) == codename and "debian" in match.group(1):
                    uris.append(match.group(1))
    return list(dict.fromkeys(u for u in uris if "snapshot" not in u))


def backports_configured(codename: str) -> bool:
    suite = f"{codename}-backports"
    folder = Path("/etc/apt/sources.list.d")
    candidates = [Path("/etc/apt/sources.list")] + sorted(folder.glob("*.list")) + sorted(folder.glob("*.sources"))
    return any(path.is_file() and suite in path.read_text(encoding="utf-8", errors="replace")
               for path in candidates)


def privileged(command: List[str]) -> List[str]:
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo"):
        return ["sudo"] + command
    raise BuildError("installing QGIS needs root: run this command as root or install sudo")


def install_qgis_with_apt() -> None:
    """QGIS + Python bindings from apt; QGIS 3.40 LTR from bookworm-backports where possible."""
    if not shutil.which("apt-get"):
        raise BuildError("QGIS with its Python bindings is missing and this is not a Debian/Ubuntu machine; "
                         "install QGIS (3.22 or newer) and python3-qgis, then run this again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    release = os_release()
    codename = release.get("VERSION_CODENAME", "")
    use_backports = False
    if release.get("ID") == "debian" and codename == "bookworm":
        if backports_configured(codename):
            use_backports = True
        else:
            uris = apt_source_uris(codename)
            if uris and os.geteuid() == 0:
                BACKPORTS_SOURCE.write_text(
                    f"Types: deb\nURIs: {' '.join(uris)}\nSuites: {codename}-backports\nComponents: main\n"
                    f"Signed-By: {DEBIAN_KEYRING}\n", encoding="utf-8")
                say(f"added {BACKPORTS_SOURCE} ({codename}-backports, for QGIS 3.40 LTR)")
                use_backports = True
    run(privileged(["apt-get", "update"]), env=env)
    base = privileged(["apt-get", "install", "-y", "--no-install-recommends"])
    if use_backports and run(base + ["-t", f"{codename}-backports"] + APT_PACKAGES, env=env, check=False) == 0:
        return
    if use_backports:
        say("QGIS from backports failed to install; falling back to the release's QGIS (3.22 on bookworm)")
    run(base + APT_PACKAGES, env=env)


def venv_is_usable() -> bool:
    return VENV_PYTHON.exists() and succeeds(
        [VENV_PYTHON, "-c", "import qgis.core, osgeo.gdal"], env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})


def setup() -> None:
    if system_has_qgis():
        say("QGIS, its Python bindings and python3-venv are installed")
    else:
        install_qgis_with_apt()
        if not system_has_qgis():
            raise BuildError("QGIS was installed but /usr/bin/python3 still cannot import qgis.core")
    if not venv_is_usable():
        if VENV.exists():
            say(f"{VENV} cannot import QGIS (not made from {SYSTEM_PYTHON} with --system-site-packages?); "
                f"recreating it")
            shutil.rmtree(VENV)
        run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", VENV])
    run([VENV_PYTHON, "-m", "pip", "install", "-r", ROOT / "requirements.txt"])
    version = subprocess.run([str(VENV_PYTHON), "-c", "from qgis.core import Qgis; print(Qgis.QGIS_VERSION)"],  # nosec
                             env=qgis_env(), capture_output=True, text=True, check=False).stdout.strip()
    say(f"set-up done: QGIS {version or '?'}, virtual environment {VENV}")


# -- QGIS environment ---------------------------------------------------------------------------------
def venv_site_packages() -> str:
    return subprocess.run([str(VENV_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],  # nosec
                          capture_output=True, text=True, check=True).stdout.strip()


def plugin_folder() -> Path:
    """A QGIS plugin folder holding ``modalseg`` -> this checkout (the checkout may be named anything)."""
    folder = BUILD_DIR / "qgis-plugins"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / PACKAGE_NAME
    if link.is_symlink() and link.resolve() != ROOT:
        link.unlink()
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    return folder


def qgis_env() -> Dict[str, str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    if VENV_PYTHON.exists():
        site = venv_site_packages()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(VENV / "bin"), os.environ.get("PATH", "")))
        env["VIRTUAL_ENV"] = str(VENV)
    env["QGIS_PLUGINPATH"] = str(plugin_folder())
    # A profile of our own: enabling the plugin for the demo must not touch the user's QGIS settings.
    env.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(BUILD_DIR / "qgis-profile"))
    return env


def enable_plugin(binary: str, env: Dict[str, str]) -> None:
    """``qgis_process plugins enable`` exits 1 when the plugin is already enabled; both are fine."""
    enabled = subprocess.run([binary, "plugins", "enable", PACKAGE_NAME], env=env, capture_output=True,  # nosec
                             text=True, check=False)
    if enabled.returncode != 0 and "already enabled" not in enabled.stdout + enabled.stderr:
        raise BuildError(f"qgis_process could not enable the plugin:\n{enabled.stdout}{enabled.stderr}")


# -- demo ---------------------------------------------------------------------------------------------------
def bundled_models() -> List[Path]:
    """Package graphs under resources/models/<package>/ (with the .json metadata beside them)."""
    return sorted(p for p in (ROOT / "resources" / "models").glob("*/*.onnx") if p.with_suffix(".json").exists())


def demo(model_file: Optional[str] = None) -> None:
    if model_file is None and not bundled_models():
        raise BuildError("no bundled model package in resources/models/ yet; pass one: "
                         "`python3 build.py demo path/to/package.onnx`")
    if not venv_is_usable():
        raise BuildError("run `python3 build.py setup` first")
    binary = qgis_process_binary()
    if binary is None:
        raise BuildError("qgis_process is not installed; run `python3 build.py setup` first")
    env = qgis_env()
    enable_plugin(binary, env)
    DEMO_OUT.mkdir(parents=True, exist_ok=True)
    outputs = {"OUTPUT": DEMO_OUT / "classes.tif", "ROBUSTNESS": DEMO_OUT / "robustness.tif",
               "CONFIDENCE": DEMO_OUT / "confidence.tif", "DOMINANT": DEMO_OUT / "dominant_modality.tif"}
    for path in outputs.values():
        if path.exists():
            path.unlink()
    inputs = {"OPTICAL": DEMO_DIR / f"{DEMO_STEM}_rgb.tif", "ELEVATION": DEMO_DIR / f"{DEMO_STEM}_dsm.tif",
              "ELEVATION_TYPE": "1", "DTM": DEMO_DIR / f"{DEMO_STEM}_dtm.tif", "MODEL": "0"}
    if model_file:
        inputs["MODEL_FILE"] = Path(model_file).resolve()
    arguments = [f"{name}={value}" for name, value in {**inputs, **outputs}.items()]
    run([binary, "run", f"{PACKAGE_NAME}:segment", "--"] + arguments, env=env)
    missing = [str(p) for p in outputs.values() if not p.exists()]
    if missing:
        raise BuildError(f"the demo run finished but did not write {', '.join(missing)}")
    print("\nModalSeg demo outputs (IGN - LiDAR HD demo tile, Etalab 2.0):")
    for name, path in outputs.items():
        print(f"  {name:<11} {path}")
    print("Open them in QGIS next to resources/demo/*.tif, or inspect them with gdalinfo.")


# -- tests ----------------------------------------------------------------------------------------------
def test(pytest_args: Sequence[str]) -> int:
    if not venv_is_usable():
        raise BuildError("run `python3 build.py setup` first")
    code = run([VENV_PYTHON, "-m", "pytest", *(pytest_args or ["tests", "-q", "-ra"])], env=qgis_env(), check=False)
    if code == 5:
        say("pytest collected no tests: treating that as a failure")
        return 1
    return code


# -- zip and checks ------------------------------------------------------------------------------------------
def read_metadata(text: str) -> Dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the camelCase keys plugins.qgis.org uses
    parser.read_string(text)
    if not parser.has_section("general"):
        raise BuildError("metadata.txt has no [general] section")
    return dict(parser.items("general"))


def candidate_files() -> List[Path]:
    """Files of the checkout that git would track (respecting .gitignore), or all files without git."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],  # nosec
                                 cwd=str(ROOT), capture_output=True, check=False)
        if listing.returncode == 0:
            return [ROOT / name for name in listing.stdout.decode().split("\0") if name]
    return [p for p in ROOT.rglob("*") if p.is_file()]


def name_in_zip(relative: Path) -> str:
    """Where a checkout file goes inside the plugin folder of the zip (the user README is renamed)."""
    return ZIP_README if relative == USER_README else relative.as_posix()


def checkout_path(name_in_plugin: Path) -> Path:
    """The checkout file a zip entry comes from (the inverse of ``name_in_zip``)."""
    return USER_README if name_in_plugin == Path(ZIP_README) else name_in_plugin


def include_in_zip(relative: Path) -> bool:
    parts = relative.parts
    if not parts or parts[0] in ZIP_EXCLUDED_TOP:
        return False
    if any(part in ZIP_EXCLUDED_PARTS for part in parts):
        return False
    return not relative.name.endswith(ZIP_EXCLUDED_SUFFIXES)


def build_zip() -> Path:
    metadata = read_metadata((ROOT / "metadata.txt").read_text(encoding="utf-8"))
    DIST_DIR.mkdir(exist_ok=True)
    target = DIST_DIR / f"{PACKAGE_NAME}-{metadata['version']}.zip"
    files = sorted({p for p in candidate_files()
                    if p.is_file() and not p.is_symlink() and include_in_zip(p.relative_to(ROOT))})
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, f"{PACKAGE_NAME}/{name_in_zip(path.relative_to(ROOT))}")
    say(f"wrote {target} ({len(files)} files, {target.stat().st_size / 1e6:.2f} MB)")
    return target


def zip_problems(zip_path: Path) -> List[str]:
    """Layout and metadata problems that plugins.qgis.org (or a user's QGIS) would trip over."""
    problems: List[str] = []
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        tops = {name.split("/", 1)[0] for name in names}
        if tops != {PACKAGE_NAME}:
            problems.append(f"the zip must hold exactly one top-level folder '{PACKAGE_NAME}/', found {sorted(tops)}")
        for required in ("metadata.txt", "__init__.py", "LICENSE"):
            if f"{PACKAGE_NAME}/{required}" not in names:
                problems.append(f"{required} is missing from the zip")
        for name in names:
            relative = Path(name).relative_to(PACKAGE_NAME) if name.startswith(PACKAGE_NAME + "/") else Path(name)
            if not include_in_zip(checkout_path(relative)):
                problems.append(f"{name} must not be in the zip")
        readme = f"{PACKAGE_NAME}/{ZIP_README}"
        if readme not in names:
            problems.append(f"{ZIP_README} (the user README, from {USER_README.as_posix()}) is missing from the zip")
        elif any(mark in archive.read(readme).decode("utf-8", "replace") for mark in DEVELOPER_README_MARKS):
            problems.append(f"{ZIP_README} in the zip is the developer README; ship {USER_README.as_posix()}")
        if f"{PACKAGE_NAME}/metadata.txt" in names:
            metadata = read_metadata(archive.read(f"{PACKAGE_NAME}/metadata.txt").decode("utf-8"))
            for key in REQUIRED_METADATA + PROJECT_METADATA:
                if not metadata.get(key, "").strip():
                    problems.append(f"metadata.txt: '{key}' is missing or empty")
            if metadata.get("name") and metadata["name"].lower() != PACKAGE_NAME:
                problems.append(f"metadata.txt: name '{metadata['name']}' does not match the folder '{PACKAGE_NAME}'")
            if not re.match(r"^\d+\.\d+(\.\d+)?$", metadata.get("version", "")):
                problems.append("metadata.txt: version must look like 1.2.3")
            if metadata.get("hasProcessingProvider", "").lower() not in ("yes", "true"):
                problems.append("metadata.txt: hasProcessingProvider must be yes")
            icon = metadata.get("icon", "")
            if icon and f"{PACKAGE_NAME}/{icon}" not in names:
                problems.append(f"metadata.txt: icon '{icon}' is not in the zip")
        if f"{PACKAGE_NAME}/__init__.py" in names and \
                b"def classFactory" not in archive.read(f"{PACKAGE_NAME}/__init__.py"):
            problems.append("__init__.py does not define classFactory(iface)")
    if zip_path.stat().st_size > MAX_ZIP_BYTES:
        problems.append(f"the zip is {zip_path.stat().st_size / 1e6:.1f} MB; plugins.qgis.org accepts at most "
                        f"{MAX_ZIP_BYTES / 1e6:.0f} MB")
    return problems


FORBIDDEN_CODE = ((re.compile(r"shell\s*=\s*True"), "subprocess with shell=True"),
                  (re.compile(r"^\s*(import\s+(c?pickle|dill)\b|from\s+(c?pickle|dill)\s+import)", re.M), "pickle"))
TORCH_LOAD = re.compile(r"\btorch\.load\(")


def unsafe_torch_loads(text: str) -> int:
    """torch.load calls whose arguments (up to the matching parenthesis) lack weights_only=True."""
    count = 0
    for match in TORCH_LOAD.finditer(text):
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        if not re.search(r"weights_only\s*=\s*True", text[match.end():end]):
            count += 1
    return count


def code_problems(folder: Path) -> List[str]:
    """House rules the Bandit scan does not cover at medium severity (pickle imports are 'low' there)."""
    problems = []
    for path in sorted(folder.rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern, what in FORBIDDEN_CODE:
            if pattern.search(text):
                problems.append(f"{path.relative_to(folder)}: {what}")
        if unsafe_torch_loads(text):
            problems.append(f"{path.relative_to(folder)}: torch.load without weights_only=True")
    return problems


def bandit_executable() -> str:
    candidate = VENV / "bin" / "bandit"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("bandit")
    if found is None:
        raise BuildError("bandit is not installed; run `python3 build.py setup` (it is in requirements.txt)")
    return found


def check(zip_path: Path) -> None:
    problems = zip_problems(zip_path)
    with tempfile.TemporaryDirectory(prefix="modalseg-check-") as tmp:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tmp)  # nosec B202 - our own freshly built archive
        problems += code_problems(Path(tmp))
        # Same scan as plugins.qgis.org: recursive, medium severity and up.
        if run([bandit_executable(), "-r", "-ll", "-q", str(Path(tmp) / PACKAGE_NAME)], check=False) != 0:
            problems.append("Bandit reported issues of medium or high severity (see above)")
    if problems:
        raise BuildError("the plugin zip failed its checks:\n  - " + "\n  - ".join(problems))
    say(f"{zip_path.name}: layout, metadata and Bandit scan OK")


def latest_zip() -> Path:
    zips = sorted(DIST_DIR.glob(f"{PACKAGE_NAME}-*.zip"), key=lambda p: p.stat().st_mtime)
    if not zips:
        raise BuildError("no zip in dist/; run `python3 build.py zip`")
    return zips[-1]


def main(argv: Iterable[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["setup-and-demo", "setup", "demo", "test", "zip", "check"])
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="test: pytest arguments; check: the zip; demo: a model package")
    args = parser.parse_args(list(argv))
    try:
        if args.command in ("setup", "setup-and-demo"):
            setup()
        if args.command in ("demo", "setup-and-demo"):
            demo(args.rest[0] if args.rest else None)
        if args.command == "test":
            return test(args.rest)
        if args.command == "zip":
            check(build_zip())
        if args.command == "check":
            check(Path(args.rest[0]) if args.rest else latest_zip())
    except BuildError as exc:
        print(f"[build.py] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
