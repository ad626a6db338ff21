"""EMSNet restore block: conv → PReLU → conv → ReLU → transposed conv ×2 → ReLU.

As in Zhou, Wang, Su, Wen, Zhang & Zhang, "EMSNet: Efficient Multimodal Symmetric Network for
Semantic Segmentation of Urban Scene from Remote Sensing Imagery" (IEEE JSTARS, 2025), which
upsamples with a transposed convolution instead of bilinear upsampling + conv to keep edges.
BatchNorm after both 3×3 convs is ModalSeg's addition, for stable small-batch CPU training.
"""
from __future__ import annotations

from torch import Tensor, nn


class RestoreBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), nn.PReLU(mid),
            nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, cout, 2, 2), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
