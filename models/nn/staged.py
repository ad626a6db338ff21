"""The shape every convolutional backbone shares: a ``stem``, then ``stages`` returning a pyramid.

A leaf module (torch only), so that each backbone family (``backbones``, ``efficientnet``) builds
on it without importing another.
"""
from __future__ import annotations

from torch import Tensor, nn


class StagedEncoder(nn.Module):
    """An encoder made of ``stem`` then ``stages``; returns every stage's output (the pyramid).
    Streams share the stages and swap stems per modality, hence the two-step forward."""

    stem: nn.Module
    stages: nn.ModuleList

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_stages(self.stem(x))
