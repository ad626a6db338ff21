"""Packages whose public names load their module on first use (PEP 562), so importing the package
costs nothing: the plugin builds its Processing parameters from light modules at load time, and that
must work where numpy, GDAL or torch are missing or broken (the problem is reported when an
algorithm runs instead)."""
from importlib import import_module
from typing import Any, Callable, Dict, List, MutableMapping, Sequence, Tuple


def lazy_exports(package: str, namespace: MutableMapping[str, Any], exports: Dict[str, Sequence[str]]
                 ) -> Tuple[Callable[[str], Any], Callable[[], List[str]], List[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, whose module ``m`` defines the
    public names ``exports[m]``; ``namespace`` is the package's ``globals()``."""
    public = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module attribute hook's name
        module = public.get(name)
        if module is None:  # a submodule not imported yet, e.g. ``engine.package`` after ``from .. import engine``
            try:
                return import_module(f".{name}", package)
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> List[str]:  # noqa: N807 - the module attribute hook's name
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__, sorted(public)
