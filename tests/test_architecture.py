"""The import graph of the plugin, read from the source (ast, nothing imported): the QGIS-free
layers stay QGIS-free, no module imports itself back through others, and arrows only point down.

Layers, bottom to top: ``engine`` (alignment, tiling, runtimes...), then ``models`` (networks,
training; may use the engine) and ``environment`` (dependency installer, diagnostics), then
``processing_provider`` (the Processing adapter), then ``ui`` (dialogs over the algorithms), then
the plugin module (``__init__.py`` and ``plugin.py``, which registers both). Every import counts,
also the lazy ones inside functions: they run too, just later. Imports for type checkers only
(``if TYPE_CHECKING:``) count for the layers but not for cycles: they never run.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from tests.fixtures.paths import REPO_ROOT

PACKAGE = "modalseg"
LAYERS = {"engine": 0, "models": 1, "environment": 1, "processing_provider": 2, "ui": 3, "cli": 3, "": 4}
QGIS_FREE = ("engine", "models", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE] + parts)


def _source_files() -> List[Path]:
    files = [REPO_ROOT / "__init__.py", REPO_ROOT / "plugin.py"]
    for top in LAYERS:
        if top:
            files += sorted((REPO_ROOT / top).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


MODULES: Dict[str, Path] = {_module_name(path): path for path in _source_files()}


def _type_checking_only(tree: ast.AST) -> Set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    hidden: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return hidden


def _imports(name: str, path: Path, type_checking: bool = True) -> Iterator[Tuple[str, int]]:
    """(imported module, line) for every import in the file (without ``if TYPE_CHECKING:`` ones
    unless ``type_checking``); project names resolved to the module that defines them
    (``from .grid import Grid`` -> ``modalseg.engine.grid``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    hidden = set() if type_checking else _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule if submodule in MODULES else target), node.lineno


# What runs: every import but the type checkers' ones.
GRAPH: Dict[str, Set[str]] = {name: {target for target, _ in _imports(name, path, type_checking=False)
                                     if target in MODULES} for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def test_the_graph_sees_the_whole_plugin():
    assert {"modalseg", "modalseg.plugin", "modalseg.engine.segment", "modalseg.models.export",
            "modalseg.processing_provider.provider", "modalseg.ui.finetune_dialog"} <= set(MODULES)
    assert "modalseg.engine.grid" in GRAPH["modalseg.engine.segment"]
    assert "modalseg.processing_provider.provider" in GRAPH["modalseg.plugin"]


@pytest.mark.parametrize("layer", QGIS_FREE)
def test_qgis_free_layers_never_import_qgis(layer):
    offenders = [f"{MODULES[name].relative_to(REPO_ROOT)}:{line} imports {target}"
                 for name in MODULES if _layer(name) == layer
                 for target, line in _imports(name, MODULES[name])
                 if target == "qgis" or target.startswith(("qgis.", "PyQt"))]
    assert not offenders, "\n".join(offenders)


def test_arrows_point_down_only():
    """A module imports its own layer or lower ones; the engine never imports models (the caller
    that knows models passes what the engine needs, e.g. the torch network loader)."""
    offenders = []
    for name, path in MODULES.items():
        for target, line in _imports(name, path):
            if target not in MODULES:
                continue
            source_layer, target_layer = _layer(name), _layer(target)
            upward = LAYERS[target_layer] > LAYERS[source_layer]
            sideways = source_layer != target_layer and LAYERS[target_layer] == LAYERS[source_layer]
            if upward or sideways:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} ({source_layer or 'plugin'}) imports "
                                 f"{target} ({target_layer or 'plugin'})")
    assert not offenders, "\n".join(offenders)


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (or a module importing itself), Tarjan."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert not _cycles(GRAPH), "\n".join(" <-> ".join(c) for c in _cycles(GRAPH))


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}, "b": set()}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
