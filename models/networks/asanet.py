"""ASANet: asymmetric semantic aligning RGB + SAR network, at CPU size.

Paper: Zhang, Peng, Lu, Huang & Liu, "ASANet: Asymmetric Semantic Aligning Network for RGB and SAR
image land cover classification" (ISPRS J. Photogramm. Remote Sens. 218, 2024). Specified by the
paper and its authors' code: twin encoders with separate weights; per stage a Semantic Focusing
Module (each stream re-weighted from its difference to the other) and a Cascade Fusion Module
(channel then spatial selection); UPerNet decoder; an FCN auxiliary head on stage 3 with loss weight
0.4.

Composition: twin encoders with separate weights (``light_cnn`` 16/32/64/128 instead of
ConvNeXt-V2-T), per stage SFM (interaction fed forward) → channel LayerNorm per stream (the
normalised tensors are also carried forward, as in the code) → CFM (stage fusion) → UPerHead;
an FCN auxiliary head on stage 3 (``forward_train``'s ``aux_logits``, weighed 0.4 in ``training_loss``).

ModalSeg's choices: UPerHead PPM uses global + local-window pooling (ONNX-friendly, see decoders);
decoder width 64 instead of 256. Logits only (``has_robustness = False``): CFM's softmax runs
over channels, not over modalities, so it yields no per-modality share. Absent SAR → SFM leaves
the optical stream unchanged and CFM zeroes the SAR gate. ``size_multiple`` = 32.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ..nn.backbones import light_cnn
from ..nn.common import expand_presence
from ..nn.decoders import UPerHead
from ..nn.fusion import CFM
from ..nn.heads import FCNHead
from ..nn.interaction import SFM
from ..nn.losses import LossSettings
from ..nn.norms import LayerNorm2d
from ..nn.streams import SeparateStreams, ordered_inputs
from ._base import SegNetwork, TrainingBatch, segmentation_loss

DEFAULTS: dict[str, Any] = {
    "widths": [16, 32, 64, 128],
    "depths": [1, 1, 2, 1],
    "decoder_channels": 64,
    "aux_channels": 32,
    "dropout": 0.1,
}


class ASANet(SegNetwork):
    defaults = DEFAULTS
    modality_count = 2
    size_multiple = 32
    has_robustness = False
    loss_terms = {"aux_weight": 0.4}  # the FCN auxiliary head's CE weight in the authors' config
    encoder_modules = ("streams",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        c_a, c_b = (self.in_channels[m] for m in self.modalities)
        self.streams = SeparateStreams([light_cnn(c_a, cfg["widths"], cfg["depths"]),
                                        light_cnn(c_b, cfg["widths"], cfg["depths"])])
        w = self.streams.out_channels[0]
        strides = self.streams.out_strides
        self.sfm = nn.ModuleList(SFM(c) for c in w)
        self.norm = nn.ModuleList(nn.ModuleList([LayerNorm2d(c), LayerNorm2d(c)]) for c in w)
        self.cfm = nn.ModuleList(CFM(c) for c in w)
        self.decoder = UPerHead(w, strides, self.num_classes, int(cfg["decoder_channels"]), float(cfg["dropout"]))
        self.aux = FCNHead(w[2], self.num_classes, strides[2], int(cfg["aux_channels"]))

    def _features(self, inputs: Mapping[str, Tensor], present: Tensor) -> list[Tensor]:
        p_a, p_b = expand_presence(present, 0), expand_presence(present, 1)
        fused: list[Tensor] = []

        def hook(i: int, feats: list[Tensor], present: Tensor) -> list[Tensor]:
            a, b = self.sfm[i](feats[0], feats[1], p_a, p_b)
            a, b = self.norm[i][0](a) * p_a, self.norm[i][1](b) * p_b
            fused.append(self.cfm[i](a, b, p_a, p_b))
            return [a, b]

        self.streams(ordered_inputs(inputs, self.modalities), present, hook)
        return fused

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        return {"logits": self.decoder(self._features(inputs, present))}

    def forward_train(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        fused = self._features(inputs, present)
        return {"logits": self.decoder(fused), "aux_logits": self.aux(fused[2])}

    def training_loss(self, batch: TrainingBatch, settings: LossSettings = LossSettings()
                      ) -> tuple[Tensor, dict[str, float]]:
        """CE of the decoder plus the weighted CE of the stage-3 auxiliary head."""
        weight = float(self.terms(settings)["aux_weight"])
        out = self.forward_train(batch.inputs, batch.present)
        extra = {"aux_ce": weight * settings.ce(out["aux_logits"], batch.target)} if weight > 0 else {}
        return segmentation_loss(out["logits"], batch.target, settings, extra)
