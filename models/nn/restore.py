"""EMSNet restore block: conv → PReLU → conv → ReLU → transposed conv ×2 → ReLU (digest §4.2).

BatchNorm after both 3×3 convs is an addition [R] for stable small-batch CPU training.
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
