"""Export: a real package the engine's reader accepts, ONNX == torch, atomic and validated."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from modalseg.engine.package import METADATA_KEY, load_package
from modalseg.models.export import (CLASSES, NDSM_NORM, OPTICAL_NORM, ExportError, base_metadata,
                                    export_package, load_weights)

torch.set_num_threads(1)


class TinyNet(nn.Module):
    """Stand-in for the network contract: dict of modalities + presence -> logits, robustness."""

    def __init__(self, robust=True, classes=6):
        super().__init__()
        self.modalities = ["optical", "ndsm"]
        self.in_channels = {"optical": 3, "ndsm": 1}
        self.num_classes = classes
        self.has_robustness = robust
        self.size_multiple = 4
        self.config = {"classes": classes}
        self.enc = nn.ModuleDict({m: nn.Conv2d(c, 8, 3, 2, 1) for m, c in self.in_channels.items()})
        self.gate = nn.ModuleDict({m: nn.Conv2d(8, 1, 1) for m in self.modalities})
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, inputs, present):
        feats = [torch.relu(self.enc[m](inputs[m])) for m in self.modalities]
        g = torch.cat([self.gate[m](f) for m, f in zip(self.modalities, feats)], 1)
        w = torch.softmax(g + (present[:, :, None, None] - 1) * 1e4, 1)
        fused = sum(w[:, i:i + 1] * f for i, f in enumerate(feats))
        size = inputs["optical"].shape[-2:]
        out = {"logits": nn.functional.interpolate(self.head(fused), size=size, mode="bilinear")}
        if self.has_robustness:
            out["robustness"] = nn.functional.interpolate(w, size=size, mode="bilinear")
        return out


def _meta(name="tiny"):
    mods = [{"name": "optical", "kind": "optical", "bands": 3, "normalization": OPTICAL_NORM},
            {"name": "ndsm", "kind": "ndsm", "bands": 1, "normalization": NDSM_NORM}]
    return base_metadata(name, mods, architecture="tiny", description="test", training_data="none",
                         tile_size=64, size_multiple=4, overlap=8, metrics={"miou": 0.5})


def test_export_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TinyNet().eval()
    onnx_path = export_package(net, _meta(), tmp_path / "pkg", config={"classes": 6})
    assert onnx_path == tmp_path / "pkg" / "tiny.onnx"
    pkg = load_package(tmp_path / "pkg")  # the engine's own validating reader
    meta = pkg.metadata
    assert meta.presence_input == "present" and meta.has_robustness
    assert meta.modality_names == ("optical", "ndsm")
    assert [c.value for c in meta.classes] == [c["value"] for c in CLASSES]
    assert meta.extra["torch"] == {"architecture": "tiny", "config": {"classes": 6},
                                   "weights": "safetensors state dict", "weight_storage": "float32"}
    assert meta.metrics == {"miou": 0.5}
    sidecar = json.loads((tmp_path / "pkg" / "tiny.json").read_text())
    import onnx
    embedded = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}[METADATA_KEY]
    assert json.loads(embedded) == sidecar

    # run the graph at a size never seen at export, one modality absent
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    feed = {"optical": np.zeros((2, 3, 40, 48), np.float32),
            "ndsm": rng.normal(size=(2, 1, 40, 48)).astype(np.float32),
            "present": np.array([[0, 1], [0, 1]], np.float32)}
    logits, rob = sess.run(["logits", "robustness"], feed)
    assert logits.shape == (2, 6, 40, 48)
    np.testing.assert_allclose(rob[:, 0], 0.0, atol=1e-6)  # absent optical weighs nothing
    np.testing.assert_allclose(rob.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = net({k: torch.from_numpy(feed[k]) for k in ("optical", "ndsm")},
                  torch.from_numpy(feed["present"]))["logits"].numpy()
    assert np.abs(ref - logits).max() <= 1e-4

    # torch weights: a fresh net loaded from safetensors reproduces the outputs exactly
    fresh = TinyNet().eval()
    assert load_weights(fresh, pkg.weights_path) == []
    with torch.no_grad():
        again = fresh({k: torch.from_numpy(feed[k]) for k in ("optical", "ndsm")},
                      torch.from_numpy(feed["present"]))["logits"].numpy()
    np.testing.assert_array_equal(again, ref)


def test_export_without_robustness_and_replace(tmp_path):
    out = tmp_path / "pkg"
    export_package(TinyNet(robust=True), _meta(), out)
    export_package(TinyNet(robust=False), _meta(), out)  # replaces the previous package whole
    pkg = load_package(out)
    assert not pkg.metadata.has_robustness
    assert sorted(p.name for p in out.iterdir()) == ["tiny.json", "tiny.onnx", "tiny.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temp folders left behind


def test_invalid_metadata_writes_nothing(tmp_path):
    meta = _meta()
    meta["gsd"] = {"native": 0.5, "min": 1.0, "max": 2.0}  # native below min
    with pytest.raises(ExportError, match="gsd"):
        export_package(TinyNet(), meta, tmp_path / "pkg")
    meta = _meta()
    meta["modalities"][1]["bands"] = 2
    meta["modalities"][1]["normalization"] = {"type": "minmax", "min": [0, 0], "max": [1, 1]}
    with pytest.raises(ExportError, match="bands"):
        export_package(TinyNet(), meta, tmp_path / "pkg")
    with pytest.raises(ExportError, match="classes"):
        export_package(TinyNet(classes=4), _meta(), tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


class DriftingNet(TinyNet):
    """Torch output changes after tracing (a Python-side counter): ONNX cannot match it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, inputs, present):
        self.calls += 1
        out = super().forward(inputs, present)
        out["logits"] = out["logits"] + float(self.calls)
        return out


def test_parity_failure_aborts_export(tmp_path):
    with pytest.raises(ExportError, match="differs from torch"):
        export_package(DriftingNet(), _meta(), tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []
