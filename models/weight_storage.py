"""Package weights stored in half precision: half the download, the same float32 arithmetic.

The plugin zip has a size limit (plugins.qgis.org) and a package holds its weights twice (the
ONNX graph and the fine-tuning safetensors). With ``float16`` storage each large float32
initializer of the graph is stored as float16 with a ``Cast`` to float32 in front of its users --
ONNX Runtime folds those casts when a session starts, so the graph still computes in float32 at
the same speed -- and the safetensors hold float16 tensors, which ``load_state_dict`` copies into
the float32 network. Rounding the torch network's own weights first (``round_to_half``) keeps the
torch network and the fine-tuning weights identical to what the graph holds.

``python -m modalseg.models.weight_storage PACKAGE...`` re-stores existing float32 packages.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

WEIGHT_STORAGES = ("float32", "float16")
HALF = "float16"
_MIN_ELEMENTS = 64  # small tensors (biases, scales) save nothing worth a Cast node
_HALF_MAX = float(np.finfo(np.float16).max)
_HALF_SUFFIX = "__float16"
# graph vs torch after float16 storage: the exporter folds batch norms into convolutions in float32
# and those folded weights are rounded again; on the bundled packages logits moved by up to 0.06
# (on unit-scale random inputs) with >= 99.99 % of pixels keeping their class
HALF_PARITY_TOLERANCE = 0.25


def round_to_half(net: Any) -> None:
    """Round every float32 parameter and buffer of ``net`` to the nearest float16 value, in place."""
    import torch

    with torch.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())


def half_initializers(model: Any) -> int:
    """Store the large float32 initializers of an ONNX ``model`` as float16 behind a Cast to float32,
    in place; tensors that float16 cannot hold (values beyond its range) stay float32. Returns the
    number of initializers converted."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name.endswith(_HALF_SUFFIX):
            continue
        values = numpy_helper.to_array(init)
        if values.size < _MIN_ELEMENTS or not np.all(np.abs(values) <= _HALF_MAX):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), name + _HALF_SUFFIX))
        casts.append(helper.make_node("Cast", [name + _HALF_SUFFIX], [name], to=onnx.TensorProto.FLOAT,
                                      name=f"restore_float32_{len(casts)}"))
    for index, node in enumerate(casts):  # first in the graph: topological order holds
        graph.node.insert(index, node)
    return len(casts)


def float_initializers(model: Any) -> int:
    """Undo ``half_initializers`` in place (each float16 initializer and its Cast become one float32
    initializer again), for tools that rewrite the arithmetic themselves (the fp16 converter);
    returns the number restored."""
    from onnx import numpy_helper

    graph = model.graph
    halves = {init.name: init for init in graph.initializer if init.name.endswith(_HALF_SUFFIX)}
    casts = [node for node in graph.node if node.op_type == "Cast" and len(node.input) == 1
             and node.input[0] in halves]
    for node in casts:
        half = halves.pop(node.input[0])
        restored = numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), node.output[0])
        graph.initializer.remove(half)
        graph.initializer.append(restored)
        graph.node.remove(node)
    return len(casts)


def half_state_dict(state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` with its float32 tensors as float16 (integer buffers unchanged)."""
    import torch

    return {key: value.half() if value.dtype == torch.float32 else value for key, value in state.items()}


def save_weights(state: Dict[str, Any], path: Path, architecture: Any, name: str, storage: str) -> None:
    """Write a package's fine-tuning weights (safetensors, as ``storage`` says)."""
    from safetensors.torch import save_file

    save_file(half_state_dict(state) if storage == HALF else state, str(path),
              metadata={"architecture": str(architecture), "modalseg_name": str(name)})


def storage_of(extra: Dict[str, Any]) -> str:
    """The weight storage a package's ``extra`` metadata records (float32 for packages that predate it)."""
    return str(extra.get("torch", {}).get("weight_storage", "float32"))


def store_package_half(folder: "str | Path") -> Path:
    """Re-store a float32 package's graph and fine-tuning weights in float16, in place (each file
    written beside and swapped in); returns the .onnx path. A package with a precision variant
    (int8) must be quantised again afterwards: the variant names the graph it came from."""
    import onnx
    from safetensors.torch import load_file

    from ..engine.package import METADATA_KEY, load_package

    package = load_package(folder)
    onnx_path = package.onnx_path
    model = onnx.load(str(onnx_path))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(entry.value)
    if storage_of(meta.get("extra", {})) == HALF:
        return onnx_path
    half_initializers(model)
    meta.setdefault("extra", {}).setdefault("torch", {})["weight_storage"] = HALF
    entry.value = json.dumps(meta)
    weights = onnx_path.with_suffix(".safetensors")
    with tempfile.TemporaryDirectory(dir=onnx_path.parent) as tmp:
        staged = Path(tmp)
        onnx.save(model, str(staged / onnx_path.name))
        (staged / onnx_path.with_suffix(".json").name).write_text(
            json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        if weights.exists():
            save_weights(load_file(str(weights)), staged / weights.name, meta["extra"]["torch"].get("architecture"),
                         meta["name"], HALF)
        for path in staged.iterdir():
            path.replace(onnx_path.parent / path.name)
    return onnx_path


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Re-store model packages' weights in float16 (same float32 "
                                             "arithmetic, half the size).")
    ap.add_argument("packages", nargs="+", help="package folders or .onnx files")
    args = ap.parse_args(argv)
    for given in args.packages:
        folder = Path(given) if Path(given).is_dir() else Path(given).parent
        before = sum(p.stat().st_size for p in folder.iterdir())
        path = store_package_half(folder)
        after = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{folder.name}: weights stored as float16, {before / 1e6:.1f} -> {after / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
