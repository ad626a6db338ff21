"""Model package: one self-describing ONNX graph plus its metadata (schema version 1).

A package is a folder (or the ``.onnx`` file inside it) holding

* ``<name>.onnx`` -- the graph, with the metadata JSON embedded in ``metadata_props``
  under the key :data:`METADATA_KEY`;
* ``<name>.json`` -- the same JSON mirrored beside it, readable without onnxruntime;
* optionally ``<name>.safetensors`` (or ``.pt``) -- the torch weights fine-tuning starts from;
* optionally precision variants ``<name>.int8.onnx`` / ``<name>.fp16.onnx`` (``models.quantize``):
  the same graph contract, the full metadata embedded, with ``extra.precision`` naming the precision
  and the SHA-256 of the ``<name>.onnx`` it was made from (:func:`load_variant` checks both).

Graph contract:

* one float32 input per modality, named after the modality (``B x bands x H x W``),
  already normalised as the modality's ``normalization`` entry says;
* when ``presence_input`` is set, a float32 input of that name, ``B x K`` (K = number of
  modalities, metadata order): 1 where the modality is present, 0 where it is absent.
  An absent modality is passed as zeros **and** flagged 0 here; networks trained with
  modality dropout / SGMA-style fusion ignore it. Without a presence input every
  modality is required;
* output ``logits``: ``B x N x H x W`` (N = number of classes, metadata order);
* optional output ``robustness``: ``B x K x H x W``, per-pixel share of each modality,
  summing to 1 over the present modalities and 0 for absent ones.

Everything here is plain Python (no qgis, no onnx, no torch) so the plugin can list and
validate packages cheaply; onnxruntime is imported only to check the graph itself.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .vocabulary import VARIANTS, keys

SCHEMA_VERSION = 1
METADATA_KEY = "modalseg"
MODALITY_KINDS = ("optical", "nir", "dsm", "ndsm", "dtm", "sar")
NORMALIZATION_TYPES = ("meanstd", "minmax", "percentile")
RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "average")
LOGITS_OUTPUT = "logits"
ROBUSTNESS_OUTPUT = "robustness"
FLOAT_PRECISION = "fp32"  # the package's own graph
VARIANT_PRECISIONS = keys(VARIANTS)  # graphs that may ship beside it
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


class PackageError(ValueError):
    """A model package is missing, unreadable or describes itself wrongly."""


@dataclass(frozen=True)
class ClassInfo:
    value: int
    name: str
    color: str  # "#rrggbb"

    @property
    def rgb(self) -> Tuple[int, int, int]:
        return tuple(int(self.color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass(frozen=True)
class Normalization:
    """How raw pixel values of one modality become network input.

    * ``meanstd``: ``(x - mean) / std`` per band, in the raster's own units;
    * ``minmax``: ``(x - min) / (max - min)`` per band, clipped to [0, 1] when ``clip``;
    * ``percentile``: like ``minmax`` with min / max taken as the ``low`` / ``high``
      percentiles of the whole source raster (computed once, so tiling cannot change them).
    """

    type: str
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    min: Tuple[float, ...] = ()
    max: Tuple[float, ...] = ()
    low: float = 2.0
    high: float = 98.0
    clip: bool = True


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str
    bands: int
    band_names: Tuple[str, ...]
    normalization: Normalization
    required: bool = False
    resampling: str = "bilinear"
    description: str = ""


@dataclass(frozen=True)
class GsdRange:
    """Ground sampling distances in metres: ``min``-``max`` the network runs at (``segment`` resamples
    into it), ``native`` the one it was trained around, and ``inputs`` the pixel sizes of the layers the
    package is meant for: a network run at one pixel size learns from coarser layers enlarged to it, as
    ``segment`` enlarges them, and takes finer ones shrunk to it. ``inputs`` is ``(min, max)`` unless the
    metadata states it; ``segment`` warns beyond twice outside it."""

    native: float
    min: float
    max: float
    inputs: Optional[Tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.inputs is None:
            object.__setattr__(self, "inputs", (self.min, self.max))

    @classmethod
    def of(cls, gsd: Mapping[str, Any]) -> "GsdRange":
        """From metadata's ``{"native", "min", "max"[, "inputs": [low, high]]}`` (metres); KeyError /
        TypeError / ValueError when one is missing or not a number."""
        low, high = gsd.get("inputs", (gsd["min"], gsd["max"]))
        return cls(float(gsd["native"]), float(gsd["min"]), float(gsd["max"]), (float(low), float(high)))

    def nearest(self, gsd: float) -> float:
        """The pixel size nearest ``gsd`` (metres) within the range."""
        return min(max(gsd, self.min), self.max)


@dataclass(frozen=True)
class PackageMetadata:
    schema_version: int
    name: str
    version: str
    architecture: str
    description: str
    license: str
    attribution: str
    training_data: str
    classes: Tuple[ClassInfo, ...]
    modalities: Tuple[ModalitySpec, ...]
    tile_size: int
    size_multiple: int
    overlap: int
    gsd: GsdRange
    presence_input: Optional[str] = None
    has_robustness: bool = False
    metrics: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    def modality(self, name: str) -> ModalitySpec:
        for spec in self.modalities:
            if spec.name == name:
                return spec
        raise PackageError(f"model '{self.name}' has no modality '{name}'")

    @property
    def modality_names(self) -> Tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def class_values(self) -> Tuple[int, ...]:
        return tuple(c.value for c in self.classes)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def _require(d: Dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise PackageError(f"model metadata: '{where}{key}' is missing")
    return d[key]


def _number_list(value: Any, count: int, where: str) -> Tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise PackageError(f"model metadata: '{where}' must list {count} numbers (one per band)")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise PackageError(f"model metadata: '{where}' must contain numbers only") from None


def _parse_normalization(d: Any, bands: int, where: str) -> Normalization:
    if not isinstance(d, dict):
        raise PackageError(f"model metadata: '{where}' must be an object")
    kind = _require(d, "type", where + ".")
    if kind not in NORMALIZATION_TYPES:
        raise PackageError(
            f"model metadata: '{where}.type' is '{kind}'; expected one of {', '.join(NORMALIZATION_TYPES)}")
    clip = bool(d.get("clip", True))
    if kind == "meanstd":
        mean = _number_list(_require(d, "mean", where + "."), bands, where + ".mean")
        std = _number_list(_require(d, "std", where + "."), bands, where + ".std")
        if any(s <= 0 for s in std):
            raise PackageError(f"model metadata: '{where}.std' must be positive")
        return Normalization(kind, mean=mean, std=std, clip=clip)
    if kind == "minmax":
        lo = _number_list(_require(d, "min", where + "."), bands, where + ".min")
        hi = _number_list(_require(d, "max", where + "."), bands, where + ".max")
        if any(h <= l for l, h in zip(lo, hi)):
            raise PackageError(f"model metadata: '{where}.max' must be above '{where}.min'")
        return Normalization(kind, min=lo, max=hi, clip=clip)
    low, high = float(d.get("low", 2.0)), float(d.get("high", 98.0))
    if not 0.0 <= low < high <= 100.0:
        raise PackageError(f"model metadata: '{where}' percentiles must satisfy 0 <= low < high <= 100")
    return Normalization(kind, low=low, high=high, clip=clip)


def _parse_modality(d: Any, index: int) -> ModalitySpec:
    where = f"modalities[{index}]"
    if not isinstance(d, dict):
        raise PackageError(f"model metadata: '{where}' must be an object")
    name = str(_require(d, "name", where + "."))
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        raise PackageError(f"model metadata: '{where}.name' ('{name}') must be an identifier")
    kind = _require(d, "kind", where + ".")
    if kind not in MODALITY_KINDS:
        raise PackageError(
            f"model metadata: '{where}.kind' is '{kind}'; expected one of {', '.join(MODALITY_KINDS)}")
    bands = _require(d, "bands", where + ".")
    if not isinstance(bands, int) or bands < 1:
        raise PackageError(f"model metadata: '{where}.bands' must be a positive integer")
    band_names = tuple(str(b) for b in d.get("band_names", [f"band {i + 1}" for i in range(bands)]))
    if len(band_names) != bands:
        raise PackageError(f"model metadata: '{where}.band_names' must name {bands} bands")
    resampling = d.get("resampling", "bilinear")
    if resampling not in RESAMPLING_METHODS:
        raise PackageError(f"model metadata: '{where}.resampling' must be one of {', '.join(RESAMPLING_METHODS)}")
    return ModalitySpec(
        name=name, kind=kind, bands=bands, band_names=band_names,
        normalization=_parse_normalization(_require(d, "normalization", where + "."), bands,
                                           where + ".normalization"),
        required=bool(d.get("required", False)), resampling=resampling,
        description=str(d.get("description", "")))


def _parse_classes(items: Any) -> Tuple[ClassInfo, ...]:
    if not isinstance(items, list) or not items:
        raise PackageError("model metadata: 'classes' must be a non-empty list")
    classes = []
    for i, c in enumerate(items):
        where = f"classes[{i}]"
        if not isinstance(c, dict):
            raise PackageError(f"model metadata: '{where}' must be an object")
        value = _require(c, "value", where + ".")
        if not isinstance(value, int) or not 0 <= value <= 254:
            raise PackageError(f"model metadata: '{where}.value' must be an integer in 0..254")
        color = str(c.get("color", "#808080"))
        if not _COLOR_RE.match(color):
            raise PackageError(f"model metadata: '{where}.color' must look like '#rrggbb'")
        classes.append(ClassInfo(value, str(_require(c, "name", where + ".")), color))
    values = [c.value for c in classes]
    if len(set(values)) != len(values):
        raise PackageError("model metadata: class values must be unique")
    return tuple(classes)


def parse_metadata(d: Any) -> PackageMetadata:
    """Validate a metadata dict and return it typed; every problem names the field."""
    if not isinstance(d, dict):
        raise PackageError("model metadata must be a JSON object")
    version = _require(d, "schema_version", "")
    if version != SCHEMA_VERSION:
        raise PackageError(
            f"model metadata schema version {version} is not supported (this ModalSeg reads {SCHEMA_VERSION})")
    modalities = d.get("modalities")
    if not isinstance(modalities, list) or not modalities:
        raise PackageError("model metadata: 'modalities' must be a non-empty list")
    specs = tuple(_parse_modality(m, i) for i, m in enumerate(modalities))
    if len({m.name for m in specs}) != len(specs):
        raise PackageError("model metadata: modality names must be unique")
    presence = d.get("presence_input")
    if presence is None and not all(m.required for m in specs):
        raise PackageError(
            "model metadata: optional modalities need a 'presence_input' to tell the network what is absent")
    tile = _require(d, "tile_size", "")
    multiple = int(d.get("size_multiple", 1))
    overlap = int(d.get("overlap", 0))
    if not isinstance(tile, int) or tile < 16:
        raise PackageError("model metadata: 'tile_size' must be an integer of at least 16")
    if multiple < 1 or tile % multiple:
        raise PackageError("model metadata: 'tile_size' must be a multiple of 'size_multiple'")
    if not 0 <= overlap < tile // 2 + 1:
        raise PackageError("model metadata: 'overlap' must be between 0 and half the tile size")
    gsd = _require(d, "gsd", "")
    try:
        gsd_range = GsdRange.of(gsd)
    except (KeyError, TypeError, ValueError):
        raise PackageError("model metadata: 'gsd' must hold numbers 'native', 'min' and 'max' (metres), and "
                           "'inputs' a pair of numbers when given") from None
    if not 0 < gsd_range.min <= gsd_range.native <= gsd_range.max:
        raise PackageError("model metadata: 'gsd' must satisfy 0 < min <= native <= max")
    if not 0 < gsd_range.inputs[0] <= gsd_range.inputs[1]:
        raise PackageError("model metadata: 'gsd.inputs' must be two pixel sizes, 0 < low <= high")
    return PackageMetadata(
        schema_version=version,
        name=str(_require(d, "name", "")),
        version=str(_require(d, "version", "")),
        architecture=str(_require(d, "architecture", "")),
        description=str(d.get("description", "")),
        license=str(_require(d, "license", "")),
        attribution=str(d.get("attribution", "")),
        training_data=str(_require(d, "training_data", "")),
        classes=_parse_classes(_require(d, "classes", "")),
        modalities=specs,
        tile_size=tile, size_multiple=multiple, overlap=overlap, gsd=gsd_range,
        presence_input=presence, has_robustness=bool(d.get("has_robustness", False)),
        metrics=dict(d.get("metrics", {})), extra=dict(d.get("extra", {})))


@dataclass(frozen=True)
class ModelPackage:
    onnx_path: Path
    metadata: PackageMetadata
    # precision -> variant graph found beside ``onnx_path``; checked by load_variant when chosen
    variants: Dict[str, Path] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.onnx_path.parent

    @property
    def precision(self) -> str:
        """What ``onnx_path`` holds: ``fp32``, or the precision a variant graph declares."""
        return str(self.metadata.extra.get("precision", {}).get("precision", FLOAT_PRECISION))

    @property
    def weights_path(self) -> Optional[Path]:
        for suffix in (".safetensors", ".pt"):
            candidate = self.onnx_path.with_suffix(suffix)
            if candidate.exists():
                return candidate
        return None


def variant_path(onnx_path: Path, precision: str) -> Path:
    """Where the ``precision`` variant of the graph ``onnx_path`` lives: ``<name>.<precision>.onnx``."""
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.onnx")


def is_variant_file(path: Path) -> bool:
    """Whether ``path`` is named as a precision variant (``<name>.<precision>.onnx``)."""
    return any(path.name.endswith(f".{precision}.onnx") for precision in VARIANT_PRECISIONS)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_onnx_path(path: "str | Path") -> Path:
    """Accept a package folder or its ``.onnx`` file (a folder's precision variants aside)."""
    p = Path(path)
    if p.is_dir():
        graphs = sorted(g for g in p.glob("*.onnx") if not is_variant_file(g))
        if len(graphs) != 1:
            raise PackageError(f"model folder '{p}' must contain exactly one .onnx file, found {len(graphs)}")
        return graphs[0]
    if not p.exists():
        raise PackageError(f"model file '{p}' does not exist")
    if p.suffix.lower() == ".json" and p.with_suffix(".onnx").exists():
        return p.with_suffix(".onnx")
    if p.suffix.lower() != ".onnx":
        raise PackageError(f"model file '{p}' is not an .onnx model package")
    return p


def read_sidecar_metadata(path: "str | Path") -> PackageMetadata:
    """Metadata from the JSON beside the graph: cheap, for listing packages."""
    onnx_path = resolve_onnx_path(path)
    sidecar = onnx_path.with_suffix(".json")
    try:
        return parse_metadata(json.loads(sidecar.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise PackageError(f"model '{onnx_path.name}' has no metadata file '{sidecar.name}'") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"metadata file '{sidecar.name}' is not valid JSON: {exc}") from None


def _check_graph_signature(meta: PackageMetadata, inputs: Dict[str, Sequence], outputs: Dict[str, Sequence],
                           source: str) -> None:
    expected = {m.name: m.bands for m in meta.modalities}
    if meta.presence_input:
        expected[meta.presence_input] = len(meta.modalities)
    missing = [n for n in expected if n not in inputs]
    unknown = [n for n in inputs if n not in expected]
    if missing or unknown:
        raise PackageError(
            f"model '{source}': graph inputs {sorted(inputs)} do not match the metadata "
            f"(missing {missing}, unexpected {unknown})")
    for m in meta.modalities:
        shape = inputs[m.name]
        if len(shape) != 4:
            raise PackageError(f"model '{source}': input '{m.name}' must be 4-D (batch, bands, height, width)")
        if isinstance(shape[1], int) and shape[1] != m.bands:
            raise PackageError(
                f"model '{source}': input '{m.name}' takes {shape[1]} bands but the metadata says {m.bands}")
    if LOGITS_OUTPUT not in outputs:
        raise PackageError(f"model '{source}': the graph has no '{LOGITS_OUTPUT}' output")
    n_classes = outputs[LOGITS_OUTPUT][1] if len(outputs[LOGITS_OUTPUT]) == 4 else None
    if isinstance(n_classes, int) and n_classes != len(meta.classes):
        raise PackageError(
            f"model '{source}': the graph predicts {n_classes} classes but the metadata lists {len(meta.classes)}")
    if meta.has_robustness and ROBUSTNESS_OUTPUT not in outputs:
        raise PackageError(f"model '{source}': metadata promises robustness maps but the graph has no "
                           f"'{ROBUSTNESS_OUTPUT}' output")


def load_package(path: "str | Path") -> ModelPackage:
    """Read and validate a package: embedded metadata, and the graph's inputs/outputs against it;
    the precision variants beside it are listed, and checked only when chosen (:func:`load_variant`)."""
    onnx_path = resolve_onnx_path(path)
    meta = _read_graph(onnx_path)
    package = ModelPackage(onnx_path=onnx_path, metadata=meta)
    if package.precision != FLOAT_PRECISION:  # a variant file given directly runs as it is
        return package
    found = {p: variant_path(onnx_path, p) for p in VARIANT_PRECISIONS if variant_path(onnx_path, p).exists()}
    return ModelPackage(onnx_path=onnx_path, metadata=meta, variants=found)


def load_variant(package: ModelPackage, precision: str) -> ModelPackage:
    """The ``precision`` graph shipped beside ``package``'s, validated: readable, declaring that
    precision, made from this very fp32 graph (SHA-256), with the package's classes and modalities."""
    meta = package.metadata
    path = package.variants.get(precision) or variant_path(package.onnx_path, precision)
    if not path.exists():
        raise PackageError(f"model '{meta.name}' ships no {precision} graph ('{path.name}' is not in "
                           f"'{package.folder}'); make one with modalseg:quantize or choose precision fp32")
    variant = _read_graph(path)
    declared = variant.extra.get("precision", {})
    if declared.get("precision") != precision:
        raise PackageError(f"model file '{path.name}' does not declare itself a {precision} graph of model "
                           f"'{meta.name}' (it says '{declared.get('precision', FLOAT_PRECISION)}')")
    source = declared.get("source", {})
    if source.get("sha256") != file_sha256(package.onnx_path):
        raise PackageError(f"model file '{path.name}' was made from another version of '{package.onnx_path.name}' "
                           f"(its recorded checksum differs): make it again with modalseg:quantize")
    if (variant.name, variant.classes, variant.modalities, variant.presence_input, variant.has_robustness) != \
            (meta.name, meta.classes, meta.modalities, meta.presence_input, meta.has_robustness):
        raise PackageError(f"model file '{path.name}' describes other classes or inputs than model '{meta.name}'")
    return ModelPackage(onnx_path=path, metadata=variant)


def _read_graph(onnx_path: Path) -> PackageMetadata:
    """The embedded metadata of a graph, checked against the graph's inputs and outputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise PackageError("onnxruntime is not installed; install it to run ModalSeg models") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise PackageError(f"model file '{onnx_path.name}' is not a readable ONNX graph: "
                           f"{str(exc).splitlines()[0][:300]}") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise PackageError(f"model '{onnx_path.name}' carries no ModalSeg metadata ('{METADATA_KEY}' in metadata_props)")
    try:
        meta = parse_metadata(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise PackageError(f"model '{onnx_path.name}': embedded metadata is not valid JSON: {exc}") from None
    _check_graph_signature(meta, {i.name: i.shape for i in session.get_inputs()},
                           {o.name: o.shape for o in session.get_outputs()}, onnx_path.name)
    return meta


def list_packages(folder: "str | Path", first: Optional[str] = None) -> List[Tuple[Path, PackageMetadata]]:
    """Packages found one level below ``folder`` (each in its own sub-folder), by name; the package
    named ``first`` (e.g. the default of the bundled ones) ahead of the others."""
    found = []
    for sidecar in sorted(Path(folder).glob("*/*.json")):
        onnx_path = sidecar.with_suffix(".onnx")
        if onnx_path.exists():
            try:
                found.append((onnx_path, read_sidecar_metadata(onnx_path)))
            except PackageError:
                continue  # a broken package must not hide the others; load_package reports it
    return sorted(found, key=lambda item: item[1].name != first)  # stable: by name otherwise
