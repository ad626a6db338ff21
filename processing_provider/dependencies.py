"""Which optional Python packages an algorithm needs, and a plain message when one is missing.

The plugin itself loads without onnxruntime or torch (the QGIS Python rarely has them); only
running an algorithm needs them, so the check happens in ``processAlgorithm``.
"""
import importlib.util
from typing import Iterable, List

# Versions the plugin is tested with (requirements.txt pins the same ones).
TESTED_VERSIONS = {
    "numpy": "numpy<2",
    "onnxruntime": "onnxruntime==1.20.1",
    "torch": "torch==2.13.0",
}


def missing_packages(names: Iterable[str]) -> List[str]:
    """The subset of ``names`` that cannot be imported in this Python."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def missing_packages_message(missing: List[str], purpose: str) -> str:
    """Message for an analyst: what is missing, why it is needed, and the command that fixes it."""
    specs = " ".join(f'"{TESTED_VERSIONS.get(name, name)}"' for name in missing)
    names = ", ".join(missing)
    return (f"ModalSeg needs the Python package(s) {names} for {purpose}, but the Python that "
            f"QGIS uses cannot import them. Install them into that Python, "
            f"for example: python3 -m pip install {specs} (on Windows, from the OSGeo4W shell), "
            f"then restart QGIS.")
