"""Install a plan with pip into a plugin-local folder, record it in a manifest, and remove it again.

Why it works the way it does:

- pip runs as a subprocess of the *real* interpreter (``probes.find_python``) with an argument
  list; never ``pip`` as a library inside QGIS (it would share, and might upgrade, QGIS's
  already imported modules).
- A constraints file pins numpy and every other distribution QGIS's Python already has to the
  installed version, so the resolver can never pick numpy 2 or upgrade anything QGIS ships.
- Resolution is a ``--dry-run --report`` against QGIS's Python as it is (what is already there
  counts as installed); only the missing distributions are then installed with ``--target`` and
  ``--no-deps``. ``--target`` alone would re-download numpy & co. (pip ignores installed
  packages with ``--target``). pip older than 22.2 has no ``--report``: it installs with
  dependencies and the copies of what QGIS already has are dropped afterwards.
- pip installs into a staging folder beside the target; only a complete, successful run is
  moved in, so a failed or cancelled install leaves the previous state untouched.
- The manifest lists every top-level entry the installer created; removal deletes exactly those.
"""
import importlib
import importlib.metadata
import json
import os
import queue
import re
import shutil
import subprocess  # nosec B404 - pip is run with argument lists, never through a shell
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .pins import COMPONENTS, canonical_name
from .plan import InstallPlan
from .probes import find_python

MANIFEST_NAME = "modalseg-manifest.json"
MANIFEST_VERSION = 1
REPORT_MIN_PIP = (22, 2)  # first pip with ``install --dry-run --report``
PIP_QUIET_OPTIONS = ["--no-input", "--disable-pip-version-check", "--progress-bar", "off", "--no-color"]

Progress = Callable[[float, str], None]
Log = Callable[[str], None]
# (arguments, environment, line callback, cancel check) -> exit code
Runner = Callable[[List[str], Dict[str, str], Callable[[str], None], Callable[[], bool]], int]


class InstallError(RuntimeError):
    """The install failed or was cancelled; the message says why and what to do."""


@dataclass
class InstallResult:
    folder: Path
    installed: List[Tuple[str, str]] = field(default_factory=list)   # (distribution, version) now in the folder
    provided_by_qgis: List[Tuple[str, str]] = field(default_factory=list)  # resolved but already in QGIS's Python
    replaced: List[Tuple[str, str]] = field(default_factory=list)    # earlier installs this run replaced
    bytes_added: int = 0
    seconds: float = 0.0
    nothing_to_do: bool = False
    pip_commands: List[List[str]] = field(default_factory=list)


# -- folder, manifest, sys.path -------------------------------------------------------------------
def deps_folder(profile_dir: "str | os.PathLike", version: Sequence[int] = tuple(sys.version_info[:2])) -> Path:
    """``<QGIS profile>/python/modalseg_deps/py311``: beside the profile's plugins, one per Python
    version (compiled wheels fit one version only, and a QGIS upgrade may bring a new Python)."""
    return Path(profile_dir) / "python" / "modalseg_deps" / f"py{version[0]}{version[1]}"


def activate(folder: "str | os.PathLike") -> bool:
    """Put the folder first on ``sys.path`` (True if it was added now).

    First, so that the tested onnxruntime/torch pinned there win over an older copy in QGIS's
    Python; safe because the installer never puts a distribution there that QGIS's Python
    already has in another version, except the pinned ones it was asked for."""
    path = str(Path(folder))
    if not Path(folder).is_dir() or path in sys.path:
        return False
    sys.path.insert(0, path)
    importlib.invalidate_caches()  # modules installed while QGIS runs become importable at once
    return True


def deactivate(folder: "str | os.PathLike") -> None:
    path = str(Path(folder))
    while path in sys.path:
        sys.path.remove(path)
    importlib.invalidate_caches()


def read_manifest(folder: "str | os.PathLike") -> Dict:
    """The manifest of a folder, or an empty one."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION, "dists": {}}
    data.setdefault("dists", {})
    return data


def _write_manifest(folder: Path, manifest: Dict) -> None:
    temporary = folder / (MANIFEST_NAME + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, folder / MANIFEST_NAME)


def _inside(folder: Path, name: str) -> Path:
    """``folder/name`` for a plain entry name; refuses anything that could point elsewhere."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        raise InstallError(f"refusing to touch '{name}': not a plain entry of {folder}")
    return folder / name


def _remove_entry(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# -- what QGIS's Python already has ----------------------------------------------------------------
def base_distributions(exclude: Optional["str | os.PathLike"] = None,
                       path: Optional[Sequence[str]] = None) -> Dict[str, Tuple[str, str]]:
    """canonical name -> (name, version) of the distributions on ``sys.path`` (first one wins, as
    for imports), leaving out the plugin-local folder."""
    excluded = os.path.realpath(str(exclude)) if exclude else None
    entries = [p for p in (sys.path if path is None else path)
               if not (excluded and os.path.realpath(p or ".") == excluded)]
    found: Dict[str, Tuple[str, str]] = {}
    for dist in importlib.metadata.distributions(path=entries):
        name, version = dist.metadata.get("Name"), dist.version
        if name and version and canonical_name(name) not in found:
            found[canonical_name(name)] = (name, version)
    return found


_VERSION = re.compile(r"^\d+(\.\d+)*([abc]|rc|\.post|\.dev)?\d*(\+[\w.]+)?$")


def constraints_text(base: Dict[str, Tuple[str, str]], free: Iterable[str] = ()) -> str:
    """``name==version`` for every distribution QGIS's Python has, except the ``free`` ones (the
    pinned components being installed, which must be allowed to differ from an old copy)."""
    released = {canonical_name(n) for n in free}
    lines = ["# Written by ModalSeg: keep what QGIS's Python ships exactly as it is."]
    for key in sorted(base):
        name, version = base[key]
        if key in released or not _VERSION.match(version):
            continue  # a distribution-patched version string pip cannot compare is left free
        lines.append(f"{name}=={version.split('+', 1)[0]}")
    return "\n".join(lines) + "\n"


def freed_names(plan: InstallPlan) -> List[str]:
    """Distributions the plan installs (and their alternative builds): never constrained."""
    names: List[str] = []
    for requirement in plan.requirements:
        name = re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0]
        names.append(name)
        for component in COMPONENTS.values():
            if canonical_name(name) in {canonical_name(d) for d in component.dists}:
                names += list(component.dists)
    return names


# -- pip --------------------------------------------------------------------------------------------
def run_subprocess(arguments: List[str], env: Dict[str, str], on_line: Callable[[str], None],
                   is_cancelled: Callable[[], bool]) -> int:
    """Run a command, hand every output line to ``on_line`` as it comes, stop it on cancel."""
    kwargs = {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if sys.platform == "win32" else {}
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # nosec B603
                               stdin=subprocess.DEVNULL, env=env, text=True, encoding="utf-8",
                               errors="replace", bufsize=1, **kwargs)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:  # a thread, so that cancel is noticed even while pip prints nothing
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while True:
        if is_cancelled():
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise InstallError("cancelled; nothing was changed in the dependency folder")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        on_line(line)
    reader.join(timeout=5)
    return process.wait()


class PipProgress:
    """Turns pip's log lines into progress text and a fraction within [start, end].

    Each line reaches the user once: a line that becomes progress text is not also logged,
    because Processing (its dialog and qgis_process) already writes every progress text into
    the log. ``record`` (when given) still sees every line, for error reports."""

    def __init__(self, progress: Progress, log: Log, start: float, end: float, expected: int,
                 record: Optional[Callable[[str], None]] = None) -> None:
        self.progress, self.log, self.start, self.end = progress, log, start, end
        self.record = record or (lambda text: None)
        self.expected = max(1, expected)
        self.steps = 0
        self.errors: List[str] = []

    def __call__(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        self.record(text)
        message = None
        match = re.match(r"^(Collecting|Downloading|Using cached|Processing|Obtaining)\s+(\S+)(.*)$", text)
        if match:
            self.steps += 1
            verb = {"Collecting": "Resolving", "Using cached": "Using cached"}.get(match.group(1), match.group(1))
            message = f"{verb} {match.group(2)}{match.group(3)}".strip()
        elif text.startswith("Installing collected packages:"):
            message = "Installing " + text.split(":", 1)[1].strip()
        elif text.startswith("Successfully installed"):
            message = text
        elif text.startswith("ERROR:") or text.startswith("error:"):
            self.errors.append(text)
        if message:
            # Two lines per package (collect + download) is typical; never reach the end early.
            fraction = min(0.95, self.steps / (2.0 * self.expected))
            self.progress(self.start + (self.end - self.start) * fraction, message)
        else:
            self.log(text)


def pip_version(python: str, env: Dict[str, str], runner: Runner) -> Tuple[int, ...]:
    """pip's version in that Python; InstallError when it has no pip."""
    output: List[str] = []
    code = runner([python, "-m", "pip", "--version"], env, output.append, lambda: False)
    match = re.match(r"pip (\d+)\.(\d+)", "\n".join(output))
    if code != 0 or not match:
        raise InstallError(
            f"pip is not available in QGIS's Python ({python}): " + " ".join(output)[-300:] +
            " - install it (Debian/Ubuntu: sudo apt install python3-pip; elsewhere: "
            f"{python} -m ensurepip --user) and run this again")
    return int(match.group(1)), int(match.group(2))


def pip_environment(python_path: Sequence[str]) -> Dict[str, str]:
    env = dict(os.environ)
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join(python_path)
    else:
        env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive as pip prints them, for the progress
    env["PIP_NO_INPUT"] = "1"
    # A user-wide "require a virtualenv" setting would stop pip; --target is not an environment install.
    env["PIP_REQUIRE_VIRTUALENV"] = "0"
    return env


def _failure(what: str, code: int, watcher: PipProgress, tail: List[str]) -> InstallError:
    detail = "\n".join(watcher.errors[-5:] or tail[-8:])
    return InstallError(f"{what} failed (pip exit code {code}):\n{detail}")


# -- staged distributions ---------------------------------------------------------------------------
def staged_distributions(folder: Path) -> Dict[str, Dict]:
    """canonical name -> {name, version, entries} for every ``*.dist-info`` pip wrote into ``folder``.

    ``entries`` are the top-level names the distribution owns (from its RECORD); scripts, which
    pip puts outside the import folder (``../../bin``), are not kept: ModalSeg imports modules only."""
    result: Dict[str, Dict] = {}
    for info in sorted(folder.glob("*.dist-info")):
        dist = importlib.metadata.PathDistribution(info)
        name, version = dist.metadata.get("Name"), dist.version
        if not name:
            continue
        entries = {info.name}
        for record in dist.files or []:
            parts = Path(str(record)).parts
            if parts and parts[0] not in ("..", "") and not os.path.isabs(str(record)):
                entries.add(parts[0])
        result[canonical_name(name)] = {"name": name, "version": version,
                                        "entries": sorted(e for e in entries if (folder / e).exists())}
    return result


def _refuse_replacing_loaded_modules(folder: Path, entries: Iterable[str]) -> None:
    """Windows cannot delete a loaded extension module (.pyd): stop before touching anything."""
    roots = [os.path.realpath(str(folder / entry)) for entry in entries]
    for module in list(sys.modules.values()):
        location = os.path.realpath(getattr(module, "__file__", None) or "")
        if any(location.startswith(root + os.sep) for root in roots):
            raise InstallError(f"{module.__name__} from {folder} is loaded in this QGIS session and Windows "
                               f"cannot replace it; restart QGIS and run the installer before any other "
                               f"ModalSeg algorithm")


def _merge(staging: Path, folder: Path, keep: Dict[str, Dict], manifest: Dict) -> Tuple[List[Tuple[str, str]], int]:
    """Move the kept distributions from staging into the folder, replacing earlier installs that
    own the same distribution name or the same top-level entries (onnxruntime -> onnxruntime-gpu)."""
    replaced: List[Tuple[str, str]] = []
    new_entries = sorted({e for d in keep.values() for e in d["entries"]})
    if sys.platform == "win32":
        _refuse_replacing_loaded_modules(folder, new_entries)
    for key, old in list(manifest["dists"].items()):
        if key in keep or set(new_entries) & set(old["entries"]):
            for entry in old["entries"]:
                target = _inside(folder, entry)
                if target.exists() or target.is_symlink():
                    _remove_entry(target)
            replaced.append((old["name"], old["version"]))
            del manifest["dists"][key]
    added = 0
    # Moved once per entry: distributions may share a top-level folder (namespace packages).
    for entry in new_entries:
        target = _inside(folder, entry)
        if target.exists() or target.is_symlink():
            _remove_entry(target)  # a leftover of an interrupted older run, not in the manifest
        os.replace(staging / entry, target)
        added += _size(target)
    manifest["dists"].update(keep)
    return replaced, added


# -- install / uninstall ----------------------------------------------------------------------------
def install(plan: InstallPlan, folder: "str | os.PathLike", python: Optional[str] = None,
            progress: Progress = lambda fraction, text: None, log: Log = lambda text: None,
            is_cancelled: Callable[[], bool] = lambda: False, runner: Runner = run_subprocess,
            base: Optional[Dict[str, Tuple[str, str]]] = None, use_report: Optional[bool] = None) -> InstallResult:
    """Install ``plan`` into ``folder`` and put the folder on ``sys.path``. Idempotent: an empty plan
    (everything already usable) returns at once with ``nothing_to_do``."""
    started = time.monotonic()
    folder = Path(folder)
    result = InstallResult(folder=folder)
    if plan.empty:
        result.nothing_to_do = True
        activate(folder)
        progress(1.0, "Nothing to install: every package is already usable")
        return result
    python = python or find_python()
    base = base_distributions(exclude=folder) if base is None else base
    base_python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                        if p and os.path.realpath(p) != os.path.realpath(str(folder))]
    env = pip_environment(base_python_path)
    progress(0.0, f"Checking pip in {python}")
    version = pip_version(python, env, runner)
    log(f"pip {'.'.join(map(str, version))} in {python}")
    if use_report is None:
        use_report = version >= REPORT_MIN_PIP

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=str(folder.parent)))  # same disk: moves are renames
    try:
        constraints = staging / "constraints.txt"
        constraints.write_text(constraints_text(base, freed_names(plan)), encoding="utf-8")
        target = staging / "target"
        index = plan.index_arguments()
        tail: List[str] = []

        def keep_tail(line: str) -> None:
            tail.append(line)
            del tail[:-40]

        if use_report:
            report_file = staging / "report.json"
            arguments = [python, "-m", "pip", "install", "--dry-run", "--report", str(report_file),
                         "--constraint", str(constraints), *PIP_QUIET_OPTIONS, *index, *plan.requirements]
            result.pip_commands.append(arguments)
            watcher = PipProgress(progress, log, 0.02, 0.3, len(plan.requirements) * 3, record=keep_tail)
            code = runner(arguments, env, watcher, is_cancelled)
            if code != 0 and any("externally-managed" in line for line in tail):
                use_report = False  # pip 23.0.0 applies PEP 668 to dry runs too: install the other way
            elif code != 0:
                raise _failure("Resolving the packages", code, watcher, tail)
        if use_report:
            report = json.loads(report_file.read_text(encoding="utf-8"))
            resolved = [(i["metadata"]["name"], i["metadata"]["version"]) for i in report.get("install", [])]
            wanted = [f"{name}=={version}" for name, version in resolved
                      if base.get(canonical_name(name), (None, None))[1] != version]
            arguments = [python, "-m", "pip", "install", "--target", str(target), "--no-deps",
                         "--constraint", str(constraints), "--no-warn-script-location", *PIP_QUIET_OPTIONS,
                         *index, *wanted]
        else:
            wanted = list(plan.requirements)
            arguments = plan.pip_install_arguments(python, str(target), str(constraints))
            arguments[4:4] = PIP_QUIET_OPTIONS + ["--no-warn-script-location"]
        if not wanted:
            result.nothing_to_do = True
        else:
            result.pip_commands.append(arguments)
            watcher = PipProgress(progress, log, 0.3, 0.9, len(wanted), record=keep_tail)
            code = runner(arguments, env, watcher, is_cancelled)
            if code != 0:
                raise _failure("Installing the packages", code, watcher, tail)
            progress(0.92, "Moving the packages into place")
            staged = staged_distributions(target)
            keep = {}
            for key, dist in staged.items():
                if base.get(key, (None, None))[1] == dist["version"]:
                    result.provided_by_qgis.append((dist["name"], dist["version"]))  # a copy QGIS has
                else:
                    keep[key] = dist
            folder.mkdir(parents=True, exist_ok=True)
            manifest = read_manifest(folder)
            result.replaced, result.bytes_added = _merge(target, folder, keep, manifest)
            manifest.update({"version": MANIFEST_VERSION, "python": ".".join(map(str, sys.version_info[:3])),
                             "profile": plan.profile, "cuda": plan.use_cuda, "requirements": plan.requirements,
                             "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
            _write_manifest(folder, manifest)
            result.installed = sorted((d["name"], d["version"]) for d in keep.values())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.exists():
            try:
                folder.parent.rmdir()  # a failed first install leaves no empty modalseg_deps behind
            except OSError:
                pass
    activate(folder)
    result.seconds = time.monotonic() - started
    progress(1.0, "Done")
    return result


def uninstall(folder: "str | os.PathLike") -> List[Tuple[str, str]]:
    """Delete what the installer put into ``folder`` (per its manifest) and nothing else; the folder
    itself goes too when it is then empty. Returns the removed (distribution, version) pairs.
    Modules already imported stay loaded until QGIS restarts."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    removed = []
    for key, dist in sorted(manifest["dists"].items()):
        for entry in dist["entries"]:
            target = _inside(folder, entry)
            if target.exists() or target.is_symlink():
                _remove_entry(target)
        removed.append((dist["name"], dist["version"]))
    for name in (MANIFEST_NAME, MANIFEST_NAME + ".tmp"):
        if (folder / name).exists():
            (folder / name).unlink()
    for path in (folder, folder.parent):
        try:
            path.rmdir()  # only when empty: a folder holding anything else is left alone
        except OSError:
            break
    deactivate(folder)
    return removed
