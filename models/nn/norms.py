"""Channel LayerNorm for B×C×H×W maps (ConvNeXt / ASANet style), exportable with opset 17."""
from __future__ import annotations

from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis at every pixel."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
