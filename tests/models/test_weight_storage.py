"""Half-precision weight storage: half the bytes, the same classes, float32 arithmetic, fine-tunable."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from modalseg.engine.package import load_package
from modalseg.models.export import ExportError, export_package, load_weights
from modalseg.models.weight_storage import float_initializers, half_initializers, main, store_package_half
from tests.models.test_export import TinyNet, _meta

torch.set_num_threads(1)


class WiderNet(TinyNet):
    """TinyNet with convolutions big enough for storage to matter."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.ModuleDict({m: torch.nn.Sequential(torch.nn.Conv2d(c, 32, 3, 2, 1), torch.nn.BatchNorm2d(32),
                                                               torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 3, 1, 1))
                                        for m, c in self.in_channels.items()})


def _feed(size=48):
    rng = np.random.default_rng(5)
    return {"optical": rng.normal(size=(1, 3, size, size)).astype(np.float32),
            "ndsm": rng.normal(size=(1, 1, size, size)).astype(np.float32),
            "present": np.ones((1, 2), np.float32)}


def _run(onnx_path, feed):
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feed)


def _torch(net, feed):
    with torch.no_grad():
        out = net({m: torch.from_numpy(feed[m]) for m in ("optical", "ndsm")}, torch.from_numpy(feed["present"]))
    return [out["logits"].numpy(), out["robustness"].numpy()]


def _size(folder):
    return sum(p.stat().st_size for p in folder.iterdir())


def _trained_net(seed=0):
    torch.manual_seed(seed)
    net = WiderNet()
    for bn in (net.enc[m][1] for m in net.modalities):  # batch-norm statistics worth folding
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return net.eval()


def test_half_export_halves_the_package_and_keeps_the_classes(tmp_path):
    full = export_package(_trained_net(), _meta(), tmp_path / "full")
    net = _trained_net()
    half = export_package(net, _meta(), tmp_path / "half", weight_storage="float16")
    feed = _feed()
    ref_full, ref_half = _run(full, feed), _run(half, feed)
    assert (ref_full[0].argmax(1) == ref_half[0].argmax(1)).mean() >= 0.99
    np.testing.assert_allclose(ref_half[1].sum(1), 1.0, atol=1e-5)  # robustness still sums to 1
    np.testing.assert_allclose(ref_half[0], _torch(net, feed)[0], atol=0.05)  # torch net = stored weights
    graph = onnx.load(str(half))
    halves = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) >= 4 and all(i.name.endswith("__float16") for i in halves)
    assert sum(n.op_type == "Cast" for n in graph.graph.node) >= len(halves)
    assert _size(tmp_path / "half") < 0.65 * _size(tmp_path / "full")
    package = load_package(tmp_path / "half")
    assert package.metadata.extra["torch"]["weight_storage"] == "float16"
    state = load_file(str(package.weights_path))
    assert {str(t.dtype) for t in state.values()} >= {"torch.float16"}
    assert all(t.dtype != torch.float32 for t in state.values())
    fresh = WiderNet().eval()
    assert load_weights(fresh, package.weights_path) == []  # float16 file into a float32 network
    assert all(p.dtype == torch.float32 for p in fresh.parameters())
    np.testing.assert_allclose(_torch(fresh, feed)[0], _torch(net, feed)[0], atol=1e-6)


def test_restoring_a_package_in_half_agrees_with_it_and_is_idempotent(tmp_path, capsys):
    onnx_path = export_package(_trained_net(), _meta(), tmp_path / "pkg")
    feed = _feed(40)
    before, size_before = _run(onnx_path, feed), _size(tmp_path / "pkg")
    main([str(tmp_path / "pkg")])
    assert "pkg: weights stored as float16" in capsys.readouterr().out
    after = _run(onnx_path, feed)
    assert (before[0].argmax(1) == after[0].argmax(1)).mean() >= 0.99
    assert np.abs(before[0] - after[0]).max() < 0.05
    assert _size(tmp_path / "pkg") < 0.65 * size_before
    package = load_package(tmp_path / "pkg")  # the validating reader: sidecar == embedded metadata
    sidecar = json.loads(onnx_path.with_suffix(".json").read_text())
    assert sidecar["extra"]["torch"]["weight_storage"] == "float16" == package.metadata.extra["torch"]["weight_storage"]
    stored = onnx_path.read_bytes()
    store_package_half(tmp_path / "pkg")
    assert onnx_path.read_bytes() == stored
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["tiny.json", "tiny.onnx", "tiny.safetensors"]


def test_values_beyond_half_range_stay_float32():
    from onnx import helper, numpy_helper
    big = numpy_helper.from_array(np.full((8, 8), 1e6, np.float32), "big")
    small = numpy_helper.from_array(np.full((8, 8), 0.5, np.float32), "small")
    graph = helper.make_graph([helper.make_node("Add", ["big", "small"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 8])], [big, small])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert half_initializers(model) == 1
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert kinds == {"big": onnx.TensorProto.FLOAT, "small__float16": onnx.TensorProto.FLOAT16}
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    np.testing.assert_allclose(out, 1e6 + 0.5)


def test_unknown_storage_is_refused(tmp_path):
    with pytest.raises(ExportError, match="weight storage 'bfloat16' is not one of float32, float16"):
        export_package(_trained_net(), _meta(), tmp_path / "pkg", weight_storage="bfloat16")
    assert not (tmp_path / "pkg").exists()


def test_float_initializers_undo_half_storage(tmp_path):
    onnx_path = export_package(_trained_net(), _meta(), tmp_path / "pkg", weight_storage="float16")
    model = onnx.load(str(onnx_path))
    halves = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert float_initializers(model) == halves > 0
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert not any(n.name.startswith("restore_float32_") for n in model.graph.node)
    feed = _feed()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feed)[0], _run(onnx_path, feed)[0], atol=1e-5)
