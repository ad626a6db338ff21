"""The bundled packages: valid, every modality subset runs, sensible on the real houses tile,
and the torch weights rebuild the same network (what the torch runtime and fine-tuning use)."""
import numpy as np
import pytest
import torch

from tests.fixtures.paths import REPO_ROOT
from modalseg.engine.metrics import confusion_matrix, per_class
from modalseg.engine.normalize import normalize, own_statistics
from modalseg.engine.package import load_package
from modalseg.models.data.rasters import find_lidar_stacks
from modalseg.models.export import load_weights
from modalseg.models.networks.registry import build_network
from modalseg.models.weight_storage import HALF_PARITY_TOLERANCE

torch.set_num_threads(1)
BUNDLED = ["modalseg-sgma-urban", "modalseg-dual-urban", "modalseg-optical-urban"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_package(name, shared_data):
    import onnxruntime as ort
    folder = REPO_ROOT / "resources" / "models" / name
    if not folder.exists():
        pytest.skip(f"{name} not trained yet")
    pkg = load_package(folder)
    meta = pkg.metadata
    assert sum(p.stat().st_size for p in folder.iterdir()) < 30e6
    assert meta.extra["torch"]["weight_storage"] == "float16"  # what lets them fit in the plugin zip
    assert "IGN" in meta.attribution and meta.metrics["validation"]["towns"]["subsets"]["ndsm"]["miou"] > 0.5
    assert (folder / "README.md").read_text().count("|") > 20  # model card with its accuracy table
    stack = find_lidar_stacks(shared_data / "lidarhd_houses", ("rgb", "ndsm"))[0]
    h, w = 96, 192  # multiple of 32
    feeds = {}
    for m, key in (("optical", "rgb"), ("ndsm", "ndsm")):
        d, ok = stack.read(key, 0, 0, w, h)
        spec = meta.modality(m).normalization  # the window is the whole layer here
        feeds[m] = normalize(d, ok, spec, own_statistics(d, ok, spec))[None]
    label = stack.read_label(0, 0, w, h)
    ref = np.where(label > 0, label.astype(int) - 1, 255)
    sess = ort.InferenceSession(str(pkg.onnx_path), providers=["CPUExecutionProvider"])
    for present in ([1, 1], [0, 1], [1, 0]):
        f = {m: v * present[i] for i, (m, v) in enumerate(feeds.items())}
        f["present"] = np.array([present], np.float32)
        logits, rob = sess.run(["logits", "robustness"], f)
        np.testing.assert_allclose(rob.sum(1), 1.0, atol=1e-4)
        for i, p in enumerate(present):
            if not p:
                assert np.abs(rob[0, i]).max() < 1e-5
        iou = per_class(confusion_matrix(ref, logits[0].argmax(0), 6, ignore_index=255))["iou"]
        if present[1]:  # with elevation, the village's houses are found
            assert iou[0] > 0.9 and iou[1] > 0.8, (present, iou)
        else:  # optical alone is weak (two RGB tiles to learn from) but far from chance
            assert iou[0] > 0.5, iou
    net = build_network(meta.extra["torch"]["architecture"], meta.extra["torch"]["config"]).eval()
    assert load_weights(net, pkg.weights_path) == []
    with torch.no_grad():
        out = net({m: torch.from_numpy(v) for m, v in feeds.items()}, torch.ones(1, 2))["logits"].numpy()
    graph_out = sess.run(["logits"], dict(feeds, present=np.ones((1, 2), np.float32)))[0]
    # the graph's convolutions hold batch norms folded in float32 and rounded to float16 once more
    np.testing.assert_allclose(out, graph_out, atol=HALF_PARITY_TOLERANCE)
    assert (out.argmax(1) == graph_out.argmax(1)).mean() > 0.995


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO_ROOT / "resources" / "models").iterdir()))
def test_bundled_graphs_take_softmax_over_the_last_axis_only(name):
    """A Softmax over a middle axis costs ONNX Runtime transposes (15x the written-out form,
    nn.common.softmax_over); the modality softmaxes are written out, what is left is over the last axis."""
    import onnx
    graph = onnx.load(str(REPO_ROOT / "resources" / "models" / name / f"{name}.onnx")).graph
    axes = [next((a.i for a in n.attribute if a.name == "axis"), -1) for n in graph.node if n.op_type == "Softmax"]
    assert all(axis == -1 for axis in axes), axes
    assert sum(n.op_type == "Exp" for n in graph.node) >= 1


def test_bundled_elevation_package(shared_data):
    """modalseg-elevation-urban: nDSM only, run at 0.5 m for layers of 0.25-2 m; finds the village's
    houses from the nDSM and its torch weights rebuild the graph's network."""
    import onnxruntime as ort
    folder = REPO_ROOT / "resources" / "models" / "modalseg-elevation-urban"
    pkg = load_package(folder)
    meta = pkg.metadata
    assert meta.modality_names == ("ndsm",) and meta.extra["torch"]["weight_storage"] == "float16"
    assert (meta.gsd.min, meta.gsd.max, meta.gsd.inputs) == (0.5, 0.5, (0.25, 2.0))
    assert meta.metrics["held_out"]["subsets"]["ndsm"]["miou"] > 60 and not meta.metrics["held_out"]["optimistic"]
    stack = find_lidar_stacks(shared_data / "lidarhd_houses", ("rgb", "ndsm"))[0]
    h, w = 96, 192
    d, ok = stack.read("ndsm", 0, 0, w, h)
    spec = meta.modality("ndsm").normalization
    feeds = {"ndsm": normalize(d, ok, spec, own_statistics(d, ok, spec))[None], "present": np.ones((1, 1), np.float32)}
    label = stack.read_label(0, 0, w, h)
    ref = np.where(label > 0, label.astype(int) - 1, 255)
    sess = ort.InferenceSession(str(pkg.onnx_path), providers=["CPUExecutionProvider"])
    logits, rob = sess.run(["logits", "robustness"], feeds)
    np.testing.assert_allclose(rob, 1.0, atol=1e-4)  # one input: all of the decision
    iou = per_class(confusion_matrix(ref, logits[0].argmax(0), 6, ignore_index=255))["iou"]
    assert iou[0] > 0.9 and iou[1] > 0.8, iou
    net = build_network(meta.extra["torch"]["architecture"], meta.extra["torch"]["config"]).eval()
    assert load_weights(net, pkg.weights_path) == []
    with torch.no_grad():
        out = net({"ndsm": torch.from_numpy(feeds["ndsm"])}, torch.ones(1, 1))["logits"].numpy()
    np.testing.assert_allclose(out, logits, atol=HALF_PARITY_TOLERANCE)
