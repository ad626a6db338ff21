"""Precision variants of a model package: an int8 graph for CPUs, an fp16 graph for CUDA GPUs.

    python -m modalseg.models.quantize --package resources/models/modalseg-sgma-urban [--held-out]
    python -m modalseg.models.quantize --package my-model --output my-model-int8 \\
        --layers optical=ortho.tif,elevation=ndsm.tif,labels=labels.tif

The variant is written as ``<name>.<precision>.onnx`` beside the package's fp32 graph (in place, or
in a copy of the package in ``--output``): one package, two precisions, which ``segment`` chooses
from (``engine.precision``). Its embedded metadata is the package's, plus ``extra.precision``: the
precision, the source graph (name, version, SHA-256), the method, what stayed in float and why, the
calibration data and the accuracy cost measured on the given labelled layers (and, with
``--held-out``, on the held-out set of ``models.data.holdout``).

int8 is ONNX Runtime's static quantisation (QDQ format, per-channel int8 weights, uint8 activations,
MinMax ranges) calibrated on tiles read through the engine exactly as ``segment`` reads them
(binding, ground estimate, grid, normalisation, tiling), each tile once per modality subset (absent
modalities zeroed and flagged, as ``segment`` feeds them). The convolutions are quantised, and the
element-wise fusion, concatenation and resizing between them, so that int8 tensors flow from one
convolution to the next instead of being converted back to float around every one; see
:data:`KEPT_IN_FLOAT`. fp16 converts the float weights and arithmetic to half precision with
``onnxconverter-common``, the same parts kept in float32, inputs and outputs float32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.binding import LayerInput, Source, bind_modalities, reference_order
from ..engine.errors import WARNING_PREFIX, EngineError
from ..engine.gdal_mode import gdal_exceptions
from ..engine.grid import GridRequest, reference_grid
from ..engine.inputs import open_inputs
from ..engine.metrics import confusion_from_values, modality_subsets
from ..engine.package import (FLOAT_PRECISION, METADATA_KEY, VARIANT_PRECISIONS, ModelPackage, PackageError,
                              file_sha256, is_variant_file, load_package, load_variant, variant_path)
from ..engine.writers import class_nodata_value
from .data.shared_data import SHARED_DATA

Log = Callable[[str], None]
Progress = Callable[[float, str], None]
# int8 convolutions beat fp32 only with enough input channels per output pixel: measured on this
# project's networks, a 3- or 5-channel full-resolution stem is 5x slower in int8 (its packing costs
# more than its arithmetic) and grouped (depthwise) convolutions gain nothing.
MIN_QUANTISED_INPUT_CHANNELS = 16
CONVOLUTION_OPS = ("Conv", "ConvTranspose")
# Between convolutions: with these in float, every convolution sat between a QuantizeLinear and a
# DequantizeLinear and the float ops between them paid a layout change each; quantised, ONNX Runtime
# fuses them into QLinear kernels (measured on modalseg-sgma-urban on an AVX-512 VNNI CPU, one thread,
# bare runtime: 1.15x over fp32 with convolutions only, 1.44x with these).
BETWEEN_CONVOLUTION_OPS = ("Concat", "Mul", "Add", "Resize")
KEPT_IN_FLOAT = (
    "input preparation before the first convolution (derived height features: log height, roughness, "
    "slope): decimetre height differences would not survive 8-bit steps",
    "softmax over modalities and attention (Softmax, Exp, ReduceMax, MatMul, Einsum), the presence mask's "
    "arithmetic and the renormalising division: robustness shares still sum to 1",
    "normalisation and statistics (ReduceMean, ReduceSum, Sqrt, Div, Log): narrow ranges, large relative errors",
    f"convolutions with fewer than {MIN_QUANTISED_INPUT_CHANNELS} input channels or grouped (depthwise): "
    "slower in int8 than in float",
)
# fp16: what onnxconverter-common leaves in float32 (the same reasons; Resize also needs float scales)
FP16_FLOAT_OPS = ["Softmax", "MatMul", "Einsum", "ReduceMean", "ReduceSum", "Sqrt", "Div", "Log", "Resize",
                  "Upsample", "Range"]
DEFAULT_CALIBRATION_TILES = 48
LABELS_KEY = "labels"  # in a --layers entry: the label raster scoring the accuracy cost


@dataclass(frozen=True)
class LayerSet:
    """One area to calibrate on: layers by engine role (as ``segment`` takes them), optional labels."""

    layers: Dict[str, LayerInput]
    labels: Optional[str] = None

    def describe(self) -> Dict[str, str]:
        return {**{role: _recorded(layer.path) for role, layer in self.layers.items()},
                **({LABELS_KEY: _recorded(self.labels)} if self.labels else {})}


def _recorded(path: str) -> str:
    """A path as the metadata records it: files of the shared sample data relative to that folder
    (``shared/data/...``, the same on every developer's machine), others as given."""
    try:
        return f"shared/data/{Path(path).resolve().relative_to(SHARED_DATA.resolve()).as_posix()}"
    except ValueError:
        return path


@dataclass
class QuantizeReport:
    variant: Path  # the written graph
    package: Path  # the package folder holding it
    precision: str
    calibration_tiles: int
    accuracy_cost: Dict[str, object]
    warnings: List[str] = field(default_factory=list)


# -- calibration: tiles as segment feeds them ----------------------------------------------------------

@gdal_exceptions()
def calibration_feeds(package: ModelPackage, layer_sets: Sequence[LayerSet], max_tiles: int, warn: Log,
                      scratch: Path) -> List[Dict[str, np.ndarray]]:
    """Network inputs of up to ``max_tiles`` tiles (spread evenly over each area's tile plan, tiles of
    nodata only left out), each once per modality subset of the layers given: single-tile feeds."""
    meta = package.metadata
    per_set = max(1, max_tiles // max(1, len(layer_sets)))
    feeds: List[Dict[str, np.ndarray]] = []
    for layer_set in layer_sets:
        sources, _ = bind_modalities(meta, layer_set.layers)
        feeds.extend(_area_feeds(package, sources, per_set, warn, scratch))
    if not feeds:
        raise EngineError("the calibration layers have no tile with valid data")
    return feeds


def _area_feeds(package: ModelPackage, sources: List[Source], max_tiles: int, warn: Log,
                scratch: Path) -> Iterator[Dict[str, np.ndarray]]:
    meta = package.metadata
    grid = reference_grid(reference_order(sources), GridRequest())
    with open_inputs(sources, meta, grid, scratch, warn) as inputs:
        pipeline = inputs.pipeline(warn=warn)
        tiles = inputs.plan.all_tiles()
        chosen = [tiles[i] for i in np.linspace(0, len(tiles) - 1, min(max_tiles, len(tiles))).round().astype(int)]
        subsets = modality_subsets(inputs.used) if meta.presence_input else [inputs.used]
        for tile in dict.fromkeys(chosen):
            batch = pipeline.prepare([tile])
            if not batch.valid.any():
                continue
            for subset in subsets:
                yield _with_only(batch.feeds, subset, meta)


def _with_only(feeds: Dict[str, np.ndarray], subset: Sequence[str], meta) -> Dict[str, np.ndarray]:
    """The feeds with the modalities outside ``subset`` absent: zeros, presence 0 (as segment feeds them)."""
    out = {m: feeds[m] if m in subset else np.zeros_like(feeds[m]) for m in meta.modality_names}
    if meta.presence_input:
        out[meta.presence_input] = np.array([[1.0 if m in subset else 0.0 for m in meta.modality_names]], np.float32)
    return out


# -- the graphs ------------------------------------------------------------------------------------------

def _quantised_nodes(model) -> Tuple[List[str], List[str], List[str]]:
    """Names of the convolutions worth quantising and of those kept in float (see KEPT_IN_FLOAT),
    and of the ops between convolutions kept in float because they read input-derived tensors."""
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    quantised, kept = [], []
    for node in model.graph.node:
        if node.op_type not in CONVOLUTION_OPS:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = weights.get(node.input[1])
        # Conv weights are (out, in / group, kh, kw); ConvTranspose weights are (in, out / group, kh, kw).
        inputs = None if shape is None else (shape[1] * group if node.op_type == "Conv" else shape[0])
        if inputs is None or group > 1 or inputs < MIN_QUANTISED_INPUT_CHANNELS:
            kept.append(node.name)
        else:
            quantised.append(node.name)
    derived = _input_derived(model, set(quantised))
    kept_ops = [n.name for n in model.graph.node
                if n.op_type in BETWEEN_CONVOLUTION_OPS and any(name in derived for name in n.input)]
    return quantised, kept, kept_ops


def _input_derived(model, quantised: set) -> set:
    """Tensors computed from the graph inputs (the layers and the presence flags) alone, through no
    quantised convolution: derived input features (fixed-kernel float convolutions included) and the
    presence mask's arithmetic. The ops reading them stay float: an 8-bit range would lose the
    decimetre height differences, and the mask's additive bias spans thousands of units, which would
    leave no steps for the attention scores it is added to."""
    constants = {i.name for i in model.graph.initializer}
    derived = {i.name for i in model.graph.input if i.name not in constants}
    for node in model.graph.node:  # ONNX graphs are stored in topological order
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        variable = [name for name in node.input if name and name not in constants]
        if node.name not in quantised and variable and all(name in derived for name in variable):
            derived.update(node.output)
    return derived


def int8_graph(source: Path, feeds: Sequence[Dict[str, np.ndarray]], work: Path) -> Tuple[object, Dict[str, object]]:
    """The statically quantised model (onnx ModelProto) and a description of what was quantised."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(feeds)

        def get_next(self):
            return next(self._items, None)

    prepared, quantised_path = work / "prepared.onnx", work / "int8.onnx"
    # Shape inference and graph clean-up first (ONNX Runtime's advice for static quantisation); the
    # symbolic pass cannot follow the networks' dynamic shapes, the ONNX one can.
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantised, kept, kept_ops = _quantised_nodes(onnx.load(str(prepared)))
    cwd = os.getcwd()
    os.chdir(work)  # the calibrator writes its scratch model into the working folder
    try:
        quantize_static(str(prepared), str(quantised_path), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=[*CONVOLUTION_OPS, *BETWEEN_CONVOLUTION_OPS],
                        nodes_to_exclude=kept + kept_ops,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        os.chdir(cwd)
    method = (f"ONNX Runtime {onnxruntime.__version__} static quantisation: QDQ format, per-channel int8 weights, "
              f"uint8 activations, MinMax ranges over {len(feeds)} calibration tiles")
    return onnx.load(str(quantised_path)), {
        "method": method,
        "quantised": (f"{len(quantised)} of {len(quantised) + len(kept)} convolutions (the rest kept in float) and "
                      f"the {' / '.join(BETWEEN_CONVOLUTION_OPS)} nodes between them ({len(kept_ops)} that read "
                      "input-derived tensors kept in float)"),
        "kept_in_float": list(KEPT_IN_FLOAT)}


def fp16_graph(source: Path) -> Tuple[object, Dict[str, object]]:
    """The model with float16 weights and arithmetic (float32 inputs and outputs), for CUDA GPUs."""
    import onnx
    from onnxconverter_common import __version__ as converter_version
    from onnxconverter_common import float16

    from .weight_storage import float_initializers

    model = onnx.load(str(source))
    float_initializers(model)  # the converter refuses graphs holding float16 already
    model.graph.ClearField("value_info")  # stale float32 shapes would contradict the converted nodes
    with warnings.catch_warnings():  # one line per constant rounded into float16's range: said once below
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_FLOAT_OPS)
    _float32_outputs(model)
    return model, {"method": f"onnxconverter-common {converter_version} float16 conversion, float32 inputs and "
                             "outputs; constants beyond float16's range are clamped to it",
                   "kept_in_float": [f"{', '.join(FP16_FLOAT_OPS)}: softmax over modalities, attention, "
                                     "normalisation and resizing stay float32"]}


def _float32_outputs(model) -> None:
    """Graph outputs the converter left float16 (those also read inside the graph) get a Cast back;
    the nodes inside keep reading the float16 tensor."""
    from onnx import TensorProto, helper

    for output in model.graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        inner = f"{output.name}_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        model.graph.node.append(helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT,
                                                 name=f"{output.name}_to_float32"))
        output.type.tensor_type.elem_type = TensorProto.FLOAT


def _with_metadata(model, metadata: Dict[str, object]) -> None:
    entries = [e for e in model.metadata_props if e.key == METADATA_KEY]
    entry = entries[0] if entries else model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


# -- accuracy cost -----------------------------------------------------------------------------------------

def _class_map(package: ModelPackage, sources: List[Source], folder: Path, threads: Optional[int]) -> np.ndarray:
    from osgeo import gdal

    from ..engine.outputs import OutputPaths
    from ..engine.segment import RunOptions, run_segmentation

    out = folder / "classes.tif"
    run_segmentation(sources, package, GridRequest(), OutputPaths(str(out)), RunOptions(threads=threads))
    classes = gdal.Open(str(out)).ReadAsArray()
    os.remove(out)
    return classes


def measure_cost(fp32: ModelPackage, variant: ModelPackage, layer_sets: Sequence[LayerSet],
                 threads: Optional[int] = None) -> Dict[str, object]:
    """Per modality subset, over the given layers run whole through ``segment``'s engine: class
    agreement of the variant with the fp32 graph, and with labels their mIoU and its cost."""
    from osgeo import gdal

    from .held_out import figures  # the one mIoU definition of the held-out figures

    meta = fp32.metadata
    values = list(meta.class_values)
    n = len(values) + 1
    ignore = (0, class_nodata_value(meta.classes))
    agree: Dict[str, List[int]] = {}
    confusion: Dict[str, Dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="modalseg-quantize-") as folder:
        for layer_set in layer_sets:
            sources, _ = bind_modalities(meta, layer_set.layers)
            used = [m for m in meta.modality_names if any(s.modality == m for s in sources)]
            label = gdal.Open(layer_set.labels).ReadAsArray() if layer_set.labels else None
            for subset in (modality_subsets(used) if meta.presence_input else [tuple(used)]):
                key = "+".join(subset)
                chosen = [s for s in sources if s.modality in subset]
                a = _class_map(fp32, chosen, Path(folder), threads)
                b = _class_map(variant, chosen, Path(folder), threads)
                valid = a != class_nodata_value(meta.classes)
                counts = agree.setdefault(key, [0, 0])
                counts[0] += int((a[valid] == b[valid]).sum())
                counts[1] += int(valid.sum())
                if label is not None and label.shape == a.shape:
                    cms = confusion.setdefault(key, {p: np.zeros((n, n), np.int64) for p in ("fp32", "variant")})
                    cms["fp32"] += confusion_from_values(label, a, values, ignore)
                    cms["variant"] += confusion_from_values(label, b, values, ignore)
    subsets: Dict[str, Dict[str, object]] = {}
    for key, (same, total) in agree.items():
        row: Dict[str, object] = {"class_agreement": round(100.0 * same / max(1, total), 2), "pixels": total}
        if key in confusion:
            before, after = (figures(confusion[key][p], values)["miou"] for p in ("fp32", "variant"))
            row.update({"fp32_miou": before, "miou": after,
                        "miou_cost": None if before is None or after is None else round(before - after, 2)})
        subsets[key] = row
    return {"protocol": "the given layers run whole through segment's engine with each graph, per modality "
                        "subset; class agreement over the valid pixels; mIoU (percent, ground / building / low "
                        "vegetation / tree with >= 200 reference pixels) against the given labels",
            "layers": [s.describe() for s in layer_sets], "subsets": subsets}


def held_out_cost(fp32: ModelPackage, variant: ModelPackage, data: Path = SHARED_DATA, threads: int = 1,
                  log: Log = print) -> Dict[str, object]:
    """The held-out figures (``models.held_out``) of both graphs, and the cost per subset and on Last-1."""
    from .held_out import evaluate_held_out, states_seen_in_training

    seen = states_seen_in_training(fp32)  # the variant's protocol must carry the same caution
    before = evaluate_held_out(fp32, data, threads, seen, log=log)
    after = evaluate_held_out(variant, data, threads, seen, log=log)
    subsets = {}
    for key, f in before["subsets"].items():
        a, b = f["miou"], after["subsets"].get(key, {}).get("miou")
        subsets[key] = {"fp32_miou": a, "miou": b, "miou_cost": None if a is None or b is None else round(a - b, 2)}
    pooled = [(r["fp32_miou"], r["miou"]) for r in subsets.values() if r["miou_cost"] is not None]
    last1 = (min(a for a, _ in pooled), min(b for _, b in pooled)) if pooled else (None, None)
    mean = (float(np.mean([a for a, _ in pooled])), float(np.mean([b for _, b in pooled]))) if pooled else None
    return {"protocol": before["protocol"], "subsets": subsets,
            "average_cost": None if mean is None else round(mean[0] - mean[1], 2),
            "last1": {"fp32_miou": last1[0], "miou": last1[1],
                      "miou_cost": None if last1[0] is None else round(last1[0] - last1[1], 2)},
            "held_out": after}


# -- the command -----------------------------------------------------------------------------------------------

def quantize_package(source: "str | Path", layer_sets: Sequence[LayerSet], precision: str = "int8",
                     output: Optional["str | Path"] = None, max_tiles: int = DEFAULT_CALIBRATION_TILES,
                     held_out: bool = False, threads: Optional[int] = None, log: Log = print,
                     progress: Progress = lambda fraction, text: None) -> QuantizeReport:
    """Write the ``precision`` variant of the package at ``source``: beside its graph when ``output`` is
    None or the package's own folder, else into ``output`` (new or empty), a copy of the package with
    the variant. ``layer_sets`` calibrate the int8 graph and, with labels, score its cost."""
    if precision not in VARIANT_PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(VARIANT_PRECISIONS)}, not '{precision}'")
    package = load_package(source)
    meta = package.metadata
    if package.precision != FLOAT_PRECISION:
        raise EngineError(f"model file '{package.onnx_path.name}' is already a {package.precision} graph; "
                          "give the package's fp32 graph")
    if not layer_sets:
        raise EngineError("give calibration layers (the package ships no validation data to calibrate on)")
    warnings: List[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        log(WARNING_PREFIX + text)

    in_place = output is None or Path(output).resolve() == package.folder.resolve()
    target = package.folder if in_place else Path(output)
    if not in_place and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise EngineError(f"output folder '{target}' is not empty; choose a new or empty folder "
                          "(the source package is never changed)")
    import onnx

    with tempfile.TemporaryDirectory(prefix="modalseg-quantize-") as scratch:
        work = Path(scratch)
        calibration: Dict[str, object] = {"layers": [s.describe() for s in layer_sets]}
        if precision == "int8":
            progress(0.05, "reading calibration tiles")
            feeds = calibration_feeds(package, layer_sets, max_tiles, warn, work)
            log(f"calibrating on {len(feeds)} tile feeds (tiles x modality subsets) of {len(layer_sets)} area(s)")
            progress(0.2, "quantising")
            model, description = int8_graph(package.onnx_path, feeds, work)
            calibration["tile_feeds"] = len(feeds)
        else:
            progress(0.2, "converting to float16")
            model, description = fp16_graph(package.onnx_path)
            feeds = []
        record: Dict[str, object] = {
            "precision": precision,
            "source": {"name": meta.name, "version": meta.version, "file": package.onnx_path.name,
                       "sha256": file_sha256(package.onnx_path)},
            **description, "calibration": calibration}
        variant_meta = json.loads(meta.to_json())
        variant_meta["extra"]["precision"] = record
        trial_path = work / variant_path(package.onnx_path, precision).name
        onnx.save(model, str(trial_path))  # run with the metadata given here; embedded once complete
        trial = ModelPackage(trial_path, replace(meta, extra=variant_meta["extra"]))
        progress(0.5, "measuring the accuracy cost on the given layers")
        labelled = [s for s in layer_sets if s.labels] or list(layer_sets)
        record["accuracy_cost"] = measure_cost(replace(package, variants={}), trial, labelled, threads)
        if held_out:
            progress(0.7, "measuring the accuracy cost on the held-out set")
            cost = held_out_cost(replace(package, variants={}), trial, threads=threads or 1, log=log)
            variant_meta["metrics"]["held_out"] = cost.pop("held_out")
            record["held_out_cost"] = cost
        _with_metadata(model, variant_meta)
        onnx.save(model, str(trial_path))
        progress(0.9, "writing the package")
        destination = _publish(package, trial_path, precision, target, in_place)
    written = load_variant(load_package(destination), precision)  # the engine's reader is the judge
    log(f"wrote {written.onnx_path} ({written.onnx_path.stat().st_size / 1e6:.1f} MB)")
    progress(1.0, "done")
    return QuantizeReport(written.onnx_path, destination, precision, len(feeds), record["accuracy_cost"], warnings)


def _publish(package: ModelPackage, graph: Path, precision: str, target: Path, in_place: bool) -> Path:
    """Move the finished variant into place: beside the source graph, or into a copy of the package
    assembled in a hidden folder beside ``target`` and renamed, so a failure leaves nothing half-written."""
    if in_place:
        final = variant_path(package.onnx_path, precision)
        partial = final.with_name(f".{final.name}.partial")
        shutil.copyfile(graph, partial)
        os.replace(partial, final)
        return package.folder
    target.parent.mkdir(parents=True, exist_ok=True)
    assembling = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    assembling.mkdir()  # not mkdtemp: its folder is private, a package folder is not
    try:
        for item in package.folder.iterdir():  # the package's files, without its older variants
            if item.is_file() and not is_variant_file(item):
                shutil.copy2(item, assembling / item.name)
        shutil.copyfile(graph, assembling / graph.name)
        if target.exists():
            target.rmdir()  # checked empty above
        os.replace(assembling, target)
    except BaseException:
        shutil.rmtree(assembling, ignore_errors=True)
        raise
    return target


# -- command line ------------------------------------------------------------------------------------------------

def parse_layer_set(text: str) -> LayerSet:
    """``optical=a.tif,elevation=b.tif,labels=c.tif`` (roles of ``segment``; ``elevation`` is judged DSM
    or nDSM from its values, as ``segment``'s Auto does) -> a LayerSet."""
    layers: Dict[str, LayerInput] = {}
    labels = None
    for item in text.split(","):
        role, _, path = item.partition("=")
        if not path:
            raise EngineError(f"calibration layer '{item}' must look like role=file (e.g. optical=ortho.tif)")
        if role.strip() == LABELS_KEY:
            labels = path.strip()
        else:
            layers[role.strip()] = LayerInput(path.strip())
    return LayerSet(layers, labels)


def default_layer_sets(data: Path = SHARED_DATA) -> List[LayerSet]:
    """The bundled packages' calibration areas: LiDAR HD tiles of the shared data that train them
    (RGB + nDSM, and nDSM-only towns), never the held-out ones."""
    from .data.holdout import is_held_out
    from .data.rasters import find_lidar_stacks

    sets = []
    for folder in ("lidarhd_houses", "lidarhd_fields", "lidarhd_elevation"):
        for stack in find_lidar_stacks(data / folder, ("rgb", "ndsm")):
            if is_held_out(folder, stack.name):
                continue
            layers = {"elevation": LayerInput(str(stack.files["ndsm"]), elevation_type="ndsm")}
            if "rgb" in stack.files:
                layers["optical"] = LayerInput(str(stack.files["rgb"]))
            sets.append(LayerSet(layers, str(stack.label)))
    return sets


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Write the int8 (or fp16) variant of a ModalSeg model package.")
    ap.add_argument("--package", required=True, help="package folder or its .onnx file")
    ap.add_argument("--precision", default="int8", choices=VARIANT_PRECISIONS)
    ap.add_argument("--output", help="write a copy of the package with the variant here (default: beside the "
                                     "package's graph)")
    ap.add_argument("--layers", action="append", default=[],
                    help="a calibration area: role=file pairs, e.g. optical=o.tif,elevation=n.tif,labels=l.tif "
                         "(repeatable; default: the shared-data training tiles)")
    ap.add_argument("--tiles", type=int, default=DEFAULT_CALIBRATION_TILES, help="calibration tiles at most")
    ap.add_argument("--held-out", action="store_true", help="also measure the cost on the held-out set")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    try:
        layer_sets = [parse_layer_set(t) for t in a.layers] or default_layer_sets()
        report = quantize_package(a.package, layer_sets, a.precision, a.output, a.tiles, a.held_out, a.threads)
    except (EngineError, PackageError) as exc:
        raise SystemExit(f"quantisation failed: {exc}") from None
    print("cost on the given layers:", json.dumps(report.accuracy_cost["subsets"], indent=1))
    record = load_variant(load_package(report.package), a.precision).metadata.extra["precision"]
    if "held_out_cost" in record:
        print("held-out cost:", json.dumps({k: v for k, v in record["held_out_cost"].items() if k != "protocol"},
                                           indent=1))


if __name__ == "__main__":
    main()
