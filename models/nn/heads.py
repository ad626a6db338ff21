"""Simple heads: FCN auxiliary head and light classifier heads (training-time aux supervision)."""
from __future__ import annotations

from torch import Tensor, nn

from .common import ConvBNAct, upsample


class FCNHead(nn.Module):
    """Conv3×3-BN-ReLU → dropout → 1×1 classifier → bilinear ×stride (ASANet aux, MoBaNet aux)."""

    def __init__(self, in_channels: int, num_classes: int, stride: int, channels: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(in_channels, channels, 3), nn.Dropout2d(dropout),
                                  nn.Conv2d(channels, num_classes, 1))
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return upsample(self.body(x), self.stride)
