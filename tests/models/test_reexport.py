"""models.reexport: a bundled package written again from its own weights is the same network (same
weights, metadata and figures, the same graph since the bundled graph was written by the current code:
its nodes exactly, its constants to the last bit or two), its card rewritten and its precision variants gone (they name the graph they were made from)."""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from safetensors.numpy import load_file

from modalseg.engine.package import load_package
from modalseg.models.reexport import reexport_package
from modalseg.models.weight_storage import HALF_PARITY_TOLERANCE
from tests.fixtures.paths import REPO_ROOT

SOURCE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"
NAME = SOURCE.name


def _outputs(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits", "robustness"], feeds)


def test_reexported_package_is_the_same_network_and_graph(tmp_path):
    folder = tmp_path / NAME
    shutil.copytree(SOURCE, folder)
    (folder / "README.md").unlink()
    assert (folder / f"{NAME}.int8.onnx").exists()
    old_graph = tmp_path / "old.onnx"
    shutil.copy(folder / f"{NAME}.onnx", old_graph)
    onnx_path = reexport_package(folder)
    # the bundled graph was written by the current network code: the same nodes in the same order; its
    # constants within rounding (the exporter folds BatchNorm into the convolutions in float arithmetic
    # whose last bit follows the CPU's vector width: an AMD EPYC and an Intel Xeon differ by one ulp)
    assert onnx_path == folder / f"{NAME}.onnx"
    old_model, new_model = onnx.load(str(old_graph)), onnx.load(str(onnx_path))
    assert list(new_model.graph.node) == list(old_model.graph.node)
    assert (new_model.graph.input, new_model.graph.output) == (old_model.graph.input, old_model.graph.output)
    old_constants = {c.name: numpy_helper.to_array(c) for c in old_model.graph.initializer}
    new_constants = {c.name: numpy_helper.to_array(c) for c in new_model.graph.initializer}
    assert new_constants.keys() == old_constants.keys()
    for name, value in new_constants.items():
        assert value.dtype == old_constants[name].dtype and value.shape == old_constants[name].shape, name
        np.testing.assert_allclose(value, old_constants[name], rtol=2e-3 if value.dtype == np.float16 else 1e-6,
                                   atol=1e-7, err_msg=name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{NAME}.onnx", f"{NAME}.json", f"{NAME}.safetensors", "README.md"])
    assert json.loads((folder / f"{NAME}.json").read_text()) == json.loads((SOURCE / f"{NAME}.json").read_text())
    old, new = (load_file(str(p / f"{NAME}.safetensors")) for p in (SOURCE, folder))
    assert old.keys() == new.keys() and all(np.array_equal(old[k], new[k]) for k in old)
    assert load_package(folder).metadata.metrics == load_package(SOURCE).metadata.metrics
    assert "held-out" in (folder / "README.md").read_text().lower()
    rng = np.random.default_rng(0)
    for present in ([1, 1], [0, 1], [1, 0]):
        feeds = {"optical": rng.normal(size=(1, 3, 64, 96)).astype(np.float32) * present[0],
                 "ndsm": rng.gamma(1.0, 3.0, size=(1, 1, 64, 96)).astype(np.float32) * present[1],
                 "present": np.array([present], np.float32)}
        (logits_old, rob_old), (logits_new, rob_new) = _outputs(old_graph, feeds), _outputs(onnx_path, feeds)
        np.testing.assert_allclose(logits_new, logits_old, atol=HALF_PARITY_TOLERANCE)
        np.testing.assert_allclose(rob_new, rob_old, atol=1e-4)
        np.testing.assert_allclose(rob_new.sum(1), 1.0, atol=1e-5)
        assert (rob_new[0, [i for i, p in enumerate(present) if not p]] == 0).all()
