"""Decoders: pyramid of (fused) features → per-pixel class logits at the input resolution."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .common import ConvBNAct, upsample


class MLPHead(nn.Module):
    """SegFormer-style all-MLP head (ModalSeg's choice for SGMA's "SegHead", which the paper does
    not describe).

    Each level → 1×1 conv to ``dim``, upsampled to the finest level, concatenated, fused by a
    1×1 conv-BN-ReLU, classified, and upsampled to the input by the finest stride.
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = ConvBNAct(dim * len(in_channels), dim, 1)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(dim, num_classes, 1)

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        """The fused ``dim``-wide map at the finest level's stride, before classification."""
        base = self.strides[0]
        ups = [upsample(p(f), s // base) for p, f, s in zip(self.proj, feats, self.strides)]
        return self.fuse(torch.cat(ups, 1))

    def classify(self, x: Tensor) -> Tensor:
        return upsample(self.cls(self.drop(x)), self.strides[0])

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.classify(self.features(feats))


class FullResolutionRefiner(nn.Module):
    """Coarse head features (stride ``stride``) upsampled and refined with full-resolution detail.

    The coarse map carries context, the ``detail`` map (full resolution, ``detail_channels``) the
    edges that a stride-4 head blurs: 1-pixel roof edges, narrow hedges. Two 3×3 conv-BN-ReLU then
    the classifier, all at full resolution (ModalSeg's addition: SGMA's head stops at 1/4).
    """

    def __init__(self, coarse_channels: int, detail_channels: int, stride: int, num_classes: int,
                 dim: int = 32) -> None:
        super().__init__()
        self.stride = int(stride)
        self.reduce = ConvBNAct(coarse_channels, dim, 1)
        self.refine = nn.Sequential(ConvBNAct(dim + detail_channels, dim, 3), ConvBNAct(dim, dim, 3))
        self.cls = nn.Conv2d(dim, num_classes, 1)

    def forward(self, coarse: Tensor, detail: Tensor) -> Tensor:
        x = upsample(self.reduce(coarse), self.stride)
        return self.cls(self.refine(torch.cat([x, detail], 1)))


class PoolingPyramid(nn.Module):
    """PPM without adaptive pooling to fixed grids (the legacy ONNX exporter cannot do those for
    dynamic sizes): a global-average branch plus stride-1 local average windows (3, 5), where
    UPerNet pools to fixed 1/2/3/6 grids (ModalSeg's substitute)."""

    def __init__(self, cin: int, channels: int, windows: Sequence[int] = (3, 5)) -> None:
        super().__init__()
        self.glob = ConvBNAct(cin, channels, 1)
        self.windows = tuple(windows)
        self.local = nn.ModuleList(ConvBNAct(cin, channels, 1) for _ in windows)
        self.out = ConvBNAct(cin + channels * (1 + len(windows)), channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        g = self.glob(x.mean((2, 3), keepdim=True))
        branches = [x, g.expand(-1, -1, x.shape[2], x.shape[3])]
        for k, conv in zip(self.windows, self.local):
            branches.append(conv(nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)))
        return self.out(torch.cat(branches, 1))


class UPerHead(nn.Module):
    """UPerNet decoder (PPM on the coarsest level + FPN top-down + fuse all levels).

    Works for pyramids (strides 4…32) and for same-resolution ViT taps (all strides equal).
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 channels: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.ppm = PoolingPyramid(in_channels[-1], channels)
        self.lateral = nn.ModuleList(ConvBNAct(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(ConvBNAct(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvBNAct(channels * len(in_channels), channels, 3)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        st = self.strides
        lat = [conv(f) for conv, f in zip(self.lateral, feats[:-1])] + [self.ppm(feats[-1])]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + upsample(lat[i + 1], st[i + 1] // st[i])
        outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1])] + [lat[-1]]
        outs = [upsample(o, s // st[0]) for o, s in zip(outs, st)]
        x = self.fuse(torch.cat(outs, 1))
        return upsample(self.cls(self.drop(x)), st[0])
