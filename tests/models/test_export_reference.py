"""The bundled reference package: valid, fast-graph contract, sensible on the real houses tile."""
import numpy as np
import pytest
import torch

from tests.fixtures.paths import REFERENCE_PACKAGE
from modalseg.engine.metrics import confusion_matrix, per_class
from modalseg.engine.normalize import normalize
from modalseg.engine.package import load_package
from modalseg.models.export import load_weights
from modalseg.models.reference import build_reference_net
from modalseg.models.data.rasters import find_lidar_stacks

torch.set_num_threads(1)
PKG = REFERENCE_PACKAGE.parent


@pytest.fixture(scope="module")
def houses(shared_data):
    stack = find_lidar_stacks(shared_data / "lidarhd_houses", ("rgb", "ndsm"))[0]
    return stack


def _feeds(pkg, stack):
    meta = pkg.metadata
    h, w = stack.height // 8 * 8, stack.width // 8 * 8
    feeds = {}
    for m, key in (("optical", "rgb"), ("ndsm", "ndsm")):
        d, ok = stack.read(key, 0, 0, w, h)
        feeds[m] = normalize(d, ok, meta.modality(m).normalization)[None]
    return feeds, stack.read_label(0, 0, w, h)


def test_reference_package_on_houses(houses):
    import onnxruntime as ort
    pkg = load_package(PKG)
    assert sum(p.stat().st_size for p in PKG.iterdir()) < 2e6
    assert pkg.metadata.tile_size == 256 and pkg.metadata.overlap == 32
    assert "IGN" in pkg.metadata.attribution
    sess = ort.InferenceSession(str(pkg.onnx_path), providers=["CPUExecutionProvider"])
    feeds, label = _feeds(pkg, houses)
    lab = np.where(label > 0, label.astype(int) - 1, 255)
    for present in ([1, 1], [0, 1]):
        f = {k: v * present[i] for i, (k, v) in enumerate(feeds.items())}
        f["present"] = np.array([present], np.float32)
        logits, rob = sess.run(["logits", "robustness"], f)
        np.testing.assert_allclose(rob.sum(1), 1.0, atol=1e-5)
        if present[0] == 0:
            assert np.abs(rob[0, 0]).max() < 1e-6
        iou = per_class(confusion_matrix(lab, logits[0].argmax(0), 6, ignore_index=255))["iou"]
        assert iou[0] > 0.85 and iou[1] > 0.6, (present, iou)  # ground, building of a real village

    # the torch weights rebuild the same network (what fine-tuning starts from)
    net = build_reference_net(pkg.metadata.extra["torch"]["config"]).eval()
    assert load_weights(net, pkg.weights_path) == []
    with torch.no_grad():
        out = net({k: torch.from_numpy(v) for k, v in feeds.items()}, torch.ones(1, 2))
    f = dict(feeds, present=np.ones((1, 2), np.float32))
    np.testing.assert_allclose(out["logits"].numpy(), sess.run(["logits"], f)[0], atol=1e-3)
