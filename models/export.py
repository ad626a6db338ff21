"""Torch network -> ModalSeg model package (folder with .onnx, .json, .safetensors).

The graph takes one float32 input per modality (named after it, B x C x H x W, already
normalised) plus ``present`` (B x K, 1 = modality given, 0 = absent and passed as zeros), and
returns ``logits`` (B x N x H x W) and, when the network has them, ``robustness``
(B x K x H x W). The metadata is validated with the engine's own parser *before* anything is
written, embedded in the graph's ``metadata_props`` and mirrored as JSON. The package is built
in a temporary folder and renamed into place, so readers never see half a package; the ONNX
graph must match torch within ``tolerance`` on random inputs (with and without absent
modalities) or the export fails.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..engine.package import (LOGITS_OUTPUT, METADATA_KEY, ROBUSTNESS_OUTPUT, SCHEMA_VERSION, PackageError,
                              parse_metadata)

PRESENCE_INPUT = "present"
CLASSES = [  # the LiDAR HD label scheme of shared/data (value 0 = nodata is never predicted)
    {"value": 1, "name": "ground / impervious", "color": "#a0a0a0"},
    {"value": 2, "name": "building", "color": "#e31a1c"},
    {"value": 3, "name": "low vegetation", "color": "#b2df8a"},
    {"value": 4, "name": "tree", "color": "#33a02c"},
    {"value": 5, "name": "water", "color": "#1f78b4"},
    {"value": 6, "name": "other", "color": "#ff7f00"},
]
LIDAR_ATTRIBUTION = "IGN – LiDAR HD (Etalab Open Licence 2.0)"


class ExportError(RuntimeError):
    """The network and its metadata disagree, or the ONNX graph does not reproduce torch."""


def _in_channels(net: Any) -> Dict[str, int]:
    ch = net.in_channels
    if isinstance(ch, Mapping):
        return {m: int(ch[m]) for m in net.modalities}
    return {m: int(c) for m, c in zip(net.modalities, ch)}


class _OnnxWrapper:
    """Positional-argument facade (torch.onnx needs one) over the dict-in / dict-out contract."""

    @staticmethod
    def build(net: Any):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net
                self.names = list(net.modalities)

            def forward(self, *args):
                inputs = {n: a for n, a in zip(self.names, args[:-1])}
                out = self.net(inputs, args[-1])
                if getattr(net, "has_robustness", False):
                    return out[LOGITS_OUTPUT], out[ROBUSTNESS_OUTPUT]
                return out[LOGITS_OUTPUT]

        return Wrapper()


def check_consistency(net: Any, meta: Dict[str, Any]) -> None:
    """The metadata must describe the network exactly (names, order, bands, classes)."""
    names = [m["name"] for m in meta["modalities"]]
    if names != list(net.modalities):
        raise ExportError(f"metadata modalities {names} != network modalities {list(net.modalities)} (order matters)")
    ch = _in_channels(net)
    for m in meta["modalities"]:
        if m["bands"] != ch[m["name"]]:
            raise ExportError(f"modality '{m['name']}': metadata says {m['bands']} bands, network takes {ch[m['name']]}")
    if len(meta["classes"]) != int(net.num_classes):
        raise ExportError(f"metadata lists {len(meta['classes'])} classes, network predicts {net.num_classes}")
    if int(meta["tile_size"]) % int(getattr(net, "size_multiple", 1)):
        raise ExportError("tile_size must be a multiple of the network's size_multiple")


def _random_inputs(net: Any, size: int, batch: int, seed: int) -> List[Dict[str, np.ndarray]]:
    """Random cases: all present, and each modality in turn absent (when there are several)."""
    rng = np.random.default_rng(seed)
    ch = _in_channels(net)
    k = len(net.modalities)
    presences = [np.ones(k, np.float32)]
    if k > 1:
        for i in range(k):
            p = np.ones(k, np.float32)
            p[i] = 0.0
            presences.append(p)
    cases = []
    for p in presences:
        feed = {}
        for i, m in enumerate(net.modalities):
            x = rng.normal(0.0, 1.0, size=(batch, ch[m], size, size)).astype(np.float32)
            feed[m] = x * p[i]  # absent = zeros, as the engine passes it
        feed[PRESENCE_INPUT] = np.tile(p, (batch, 1))
        cases.append(feed)
    return cases


def onnx_parity(net: Any, onnx_path: Path, size: int, seed: int = 0) -> float:
    """Max abs difference of logits (and robustness) between onnxruntime and torch."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    net.eval()
    for feed in _random_inputs(net, size, 2, seed):
        with torch.no_grad():
            ref = net({m: torch.from_numpy(feed[m]) for m in net.modalities},
                      torch.from_numpy(feed[PRESENCE_INPUT]))
        got = sess.run(None, feed)
        names = [o.name for o in sess.get_outputs()]
        for name, value in zip(names, got):
            worst = max(worst, float(np.abs(ref[name].numpy() - value).max()))
    return worst


def _state_dict_tensors(net: Any) -> Dict[str, Any]:
    # safetensors refuses shared / non-contiguous storage: store independent copies
    return {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}


def export_package(net: Any, metadata: Dict[str, Any], out_dir: "str | Path",
                   architecture: Optional[str] = None, config: Optional[Dict[str, Any]] = None,
                   file_name: Optional[str] = None, parity_size: Optional[int] = None,
                   tolerance: float = 1e-3, opset: int = 17, weight_storage: str = "float32") -> Path:
    """Write a complete package into ``out_dir`` (replaced atomically); return the .onnx path.

    ``weight_storage`` ``float16`` stores the graph's and the fine-tuning weights in half precision
    (``models.weight_storage``: half the size, float32 arithmetic); ``net``'s weights are rounded
    to float16 in place first, so the torch network is the graph that was written.

    ``metadata`` is the package metadata without the graph-specific fields, which are filled
    here: ``presence_input``, ``has_robustness`` and ``extra.torch`` (``architecture`` and
    ``config`` let the engine's torch runtime rebuild the network with
    ``models.networks.registry.build_network(architecture, config)``).
    """
    import onnx
    import torch

    from .weight_storage import (HALF, HALF_PARITY_TOLERANCE, WEIGHT_STORAGES, half_initializers, round_to_half,
                                 save_weights)

    if weight_storage not in WEIGHT_STORAGES:
        raise ExportError(f"weight storage '{weight_storage}' is not one of {', '.join(WEIGHT_STORAGES)}")
    out_dir = Path(out_dir)
    meta = copy.deepcopy(dict(metadata))
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta["presence_input"] = PRESENCE_INPUT
    meta["has_robustness"] = bool(getattr(net, "has_robustness", False))
    arch = architecture or meta.get("architecture")
    cfg = config if config is not None else getattr(net, "config", None)
    extra = dict(meta.get("extra", {}))
    extra["torch"] = {"architecture": arch, "config": cfg, "weights": "safetensors state dict",
                      "weight_storage": weight_storage}
    meta["extra"] = extra
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise ExportError(f"metadata must be JSON-serialisable: {exc}") from None
    try:
        parse_metadata(meta)  # the engine's reader is the judge: fail before writing anything
    except PackageError as exc:
        raise ExportError(str(exc)) from None
    check_consistency(net, meta)

    name = file_name or meta["name"]
    multiple = int(getattr(net, "size_multiple", 1))
    size = parity_size or max(multiple, (64 // multiple) * multiple or multiple)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a package folder is meant to be shared
    try:
        onnx_path = tmp / f"{name}.onnx"
        net = net.eval()
        if weight_storage == HALF:
            round_to_half(net)
        wrapper = _OnnxWrapper.build(net).eval()
        dummy = _random_inputs(net, size, 1, 1)[0]
        args = tuple(torch.from_numpy(dummy[m]) for m in net.modalities) + (
            torch.from_numpy(dummy[PRESENCE_INPUT]),)
        input_names = list(net.modalities) + [PRESENCE_INPUT]
        output_names = [LOGITS_OUTPUT] + ([ROBUSTNESS_OUTPUT] if meta["has_robustness"] else [])
        axes = {n: {0: "batch", 2: "height", 3: "width"} for n in list(net.modalities) + output_names}
        axes[PRESENCE_INPUT] = {0: "batch"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
            torch.onnx.export(wrapper, args, str(onnx_path), input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, opset_version=opset,
                              dynamo=False, do_constant_folding=True)
        model = onnx.load(str(onnx_path))
        if weight_storage == HALF:
            half_initializers(model)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        model.doc_string = f"ModalSeg model package '{meta['name']}' {meta['version']}"
        onnx.save(model, str(onnx_path))
        diff = onnx_parity(net, onnx_path, size + multiple)  # another size: dynamic axes really work
        if weight_storage == HALF:  # convolutions folded with their batch norms are rounded once more
            tolerance = max(tolerance, HALF_PARITY_TOLERANCE)
        if not diff <= tolerance:
            raise ExportError(f"ONNX graph differs from torch by {diff:.2e} (> {tolerance:.0e}); not exported")
        (tmp / f"{name}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        save_weights(_state_dict_tensors(net), tmp / f"{name}.safetensors", arch, meta["name"], weight_storage)
        # swap into place: old package aside, new one in, old one removed
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / f"{name}.onnx"


def load_weights(net: Any, path: "str | Path") -> List[str]:
    """Load a package's safetensors into a rebuilt network; returns the missing keys."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    result = net.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ExportError(f"weights hold keys the network lacks: {result.unexpected_keys[:5]}")
    return list(result.missing_keys)


def base_metadata(name: str, modalities: Sequence[Dict[str, Any]], *, version: str = "1.0.0",
                  architecture: str, description: str, training_data: str,
                  license: str = "Etalab-2.0 (weights derived from IGN LiDAR HD)",
                  attribution: str = LIDAR_ATTRIBUTION, tile_size: int = 256, size_multiple: int = 8,
                  overlap: int = 32, gsd: Optional[Dict[str, float]] = None,
                  classes: Optional[List[Dict[str, Any]]] = None,
                  metrics: Optional[Dict[str, Any]] = None, extra: Optional[Dict[str, Any]] = None
                  ) -> Dict[str, Any]:
    """The metadata skeleton every ModalSeg export shares."""
    return {
        "schema_version": SCHEMA_VERSION, "name": name, "version": version, "architecture": architecture,
        "description": description, "license": license, "attribution": attribution,
        "training_data": training_data, "classes": copy.deepcopy(classes or CLASSES),
        "modalities": list(modalities), "tile_size": tile_size, "size_multiple": size_multiple,
        "overlap": overlap, "gsd": gsd or {"native": 0.5, "min": 0.25, "max": 2.0},
        "metrics": metrics or {}, "extra": extra or {},
    }


OPTICAL_NORM = {"type": "meanstd", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
NDSM_NORM = {"type": "minmax", "min": [0.0], "max": [30.0], "clip": True}
