"""Per-modality stream wrappers around a backbone.

* ``SharedStream``: one backbone body for all modalities (weights tied), a private stem per
  modality so bands counts may differ; modalities are packed along the batch (SGMA).
* ``SeparateStreams``: one backbone per modality (own weights, possibly different depths/widths:
  AMMNet's asymmetric encoders, ASANet's twins), stepped stage by stage so an interaction hook can
  rewrite the streams between stages.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .common import expand_presence

InteractionHook = Callable[[int, list[Tensor], Tensor], list[Tensor]]


class SharedStream(nn.Module):
    """Weight-shared encoder over K modalities; returns per level a list of K B×C×h×w maps.

    Absent modalities (zeros in) are multiplied by presence on the way out, so BN offsets never
    leak a "ghost" feature into fusion.
    """

    def __init__(self, backbone: nn.Module, in_channels: Sequence[int]) -> None:
        super().__init__()
        self.body = backbone
        self.stems = nn.ModuleList(backbone.make_stem(c) for c in in_channels)
        backbone.stem = nn.Identity()   # per-modality stems replace the shared one
        self.k = len(in_channels)
        self.out_channels = backbone.out_channels
        self.out_strides = backbone.out_strides

    def forward(self, xs: Sequence[Tensor], present: Tensor) -> list[list[Tensor]]:
        packed = torch.cat([stem(x) for stem, x in zip(self.stems, xs)], 0)   # (K·B)×C×h×w
        levels = []
        for f in self.body.forward_stages(packed):
            f = f.reshape(self.k, -1, f.shape[1], f.shape[2], f.shape[3])
            levels.append([f[i] * expand_presence(present, i) for i in range(self.k)])
        return levels


class SeparateStreams(nn.Module):
    """One backbone per modality, stepped in lockstep (all must have the same number of stages).

    ``hook(stage_index, feats, present)`` may rewrite the K features after each stage (ASANet SFM,
    EMSNet guidance...). Returns per level the list of K (post-hook) features.
    """

    def __init__(self, backbones: Sequence[nn.Module]) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        n = {len(b.stages) for b in backbones}
        if len(n) != 1:
            raise ValueError(f"streams have different numbers of stages: {sorted(n)}")
        self.num_stages = n.pop()
        self.out_channels = [b.out_channels for b in backbones]
        self.out_strides = backbones[0].out_strides

    def forward(self, xs: Sequence[Tensor], present: Tensor,
                hook: InteractionHook | None = None) -> list[list[Tensor]]:
        if hook is None and self.training:
            return self._forward_present_rows(xs, present)
        feats = [b.stem(x) for b, x in zip(self.backbones, xs)]
        levels = []
        for i in range(self.num_stages):
            feats = [b.stages[i](f) * expand_presence(present, k)
                     for k, (b, f) in enumerate(zip(self.backbones, feats))]
            if hook is not None:
                feats = hook(i, feats, present)
            levels.append(feats)
        return levels

    def _forward_present_rows(self, xs: Sequence[Tensor], present: Tensor) -> list[list[Tensor]]:
        """Training without a hook: each encoder runs only on the samples its modality is present
        in (absent ones would be zeroed anyway): a large pretrained encoder costs nothing on the
        batches it is absent from, and its BatchNorm statistics never see the zero fillers."""
        per_stream = []
        for k, (b, x) in enumerate(zip(self.backbones, xs)):
            rows = present[:, k] > 0
            n = int(rows.sum())
            if n == x.shape[0]:
                per_stream.append(b(x))
                continue
            if n == 0:
                per_stream.append([x.new_zeros((x.shape[0],) + shape) for shape in _level_shapes(b, x)])
                continue
            outs = []
            for f in b(x[rows]):
                full = f.new_zeros((x.shape[0],) + f.shape[1:])
                full[rows] = f
                outs.append(full)
            per_stream.append(outs)
        return [list(level) for level in zip(*per_stream)]


def _level_shapes(backbone: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
    """The C x h x w of each pyramid level for input ``x``: one sample in eval mode without
    gradient (BatchNorm statistics untouched), the modules' modes restored after."""
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        with torch.no_grad():
            return [tuple(f.shape[1:]) for f in backbone(x[:1])]
    finally:
        for m, mode in modes:
            m.training = mode


def ordered_inputs(inputs: Mapping[str, Tensor], modalities: Sequence[str]) -> list[Tensor]:
    """The input dict as a list in network order, with a clear error for a missing key."""
    missing = [m for m in modalities if m not in inputs]
    if missing:
        raise KeyError(f"inputs lack modalities {missing} (pass zeros and present=0 for absent ones)")
    return [inputs[m] for m in modalities]
